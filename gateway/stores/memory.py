"""The in-process store: the embedded default for one process (the demo, a single sidecar).

Each operation runs to completion without awaiting, so it is atomic within the event loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gateway.stores.base import MemoryPolicy, MobileState
from gateway.stores.gcra import gcra_peek, gcra_step


@dataclass(slots=True)
class _Mobile:
    blob: bytes
    expires_at: float
    retain_until: float
    used: bool = False


class MemoryStore:
    name = "memory"
    quiet = False  # (the Store protocol's; this store never fails to answer)

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._accounts: dict[str, set[str]] = {}
        self._digests: dict[str, str] = {}
        self._mobile: dict[str, _Mobile] = {}
        self._relationships: set[tuple[str, str, str]] = set()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._fingerprint: str | None = None
        # The master key of a gateway configured without one (see gateway.runtime.sealer_for).
        self.ephemeral_master_key = os.urandom(32)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def upgrade_schema(self) -> int:
        return 0  # nothing outlives the process

    # -- API keys --------------------------------------------------------------------------
    async def put_key(
        self, key_id: str, digest: str, blob: bytes, account: str | None = None
    ) -> None:
        self._keys[key_id] = blob
        self._digests[digest] = key_id
        if account is not None:
            self._accounts.setdefault(account, set()).add(key_id)

    async def replace_key(
        self, key_id: str, digest: str, expected: bytes, blob: bytes, account: str | None = None
    ) -> bool:
        if self._keys.get(key_id) != expected:
            return False
        await self.put_key(key_id, digest, blob, account)
        return True

    async def key_by_digest(self, digest: str) -> bytes | None:
        key_id = self._digests.get(digest)
        return self._keys.get(key_id) if key_id is not None else None

    async def key_by_id(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    async def list_keys(self, account: str | None = None) -> list[bytes]:
        ids = sorted(self._keys if account is None else self._accounts.get(account, ()))
        return [self._keys[key_id] for key_id in ids]

    async def master_fingerprint(self) -> str | None:
        return self._fingerprint

    async def memory_policies(self) -> list[MemoryPolicy] | None:
        return []  # bounded by the process, and never drops a key to make room

    async def claim_master_fingerprint(self, fingerprint: str) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint
        return self._fingerprint

    # -- mobile tokens ---------------------------------------------------------------------
    async def put_mobile(
        self, digest: str, blob: bytes, now: float, expires_at: float, retain_until: float
    ) -> None:
        self._mobile[digest] = _Mobile(blob, expires_at, retain_until)

    def _find(self, digest: str, now: float) -> _Mobile | None:
        entry = self._mobile.get(digest)
        if entry is not None and entry.retain_until <= now:
            del self._mobile[digest]
            return None
        return entry

    async def peek_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        return self._mobile_state(digest, now)

    def _mobile_state(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        entry = self._find(digest, now)
        if entry is None:
            return MobileState.UNKNOWN, None
        if entry.used:
            return MobileState.USED, None
        if entry.expires_at <= now:
            return MobileState.EXPIRED, None
        return MobileState.OK, entry.blob

    async def consume_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        state, blob = self._mobile_state(digest, now)
        if state is MobileState.OK:
            self._mobile[digest].used = True
        return state, blob

    # -- relationships ---------------------------------------------------------------------
    async def set_relationship(self, account: str, subject: str, actor: str, active: bool) -> None:
        if active:
            self._relationships.add((account, subject, actor))
        else:
            self._relationships.discard((account, subject, actor))

    async def relationship_active(self, account: str, subject: str, actor: str) -> bool:
        return (account, subject, actor) in self._relationships

    async def list_relationships(self, account: str) -> list[tuple[str, str]]:
        return sorted((s, a) for acc, s, a in self._relationships if acc == account)

    # -- rate limits -----------------------------------------------------------------------
    async def rate_limit(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, int, float]:
        current = self._buckets.get(bucket)
        tat = current[0] if current is not None and current[1] > now else None
        allowed, new_tat, remaining, reset = gcra_step(tat, limit, period, now)
        self._buckets[bucket] = (new_tat, new_tat)
        if len(self._buckets) > 100_000:
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > now}
        return allowed, remaining, reset

    async def rate_limit_peek(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, float]:
        current = self._buckets.get(bucket)
        tat = current[0] if current is not None and current[1] > now else None
        return gcra_peek(tat, limit, period, now)
