"""The store protocols. Two implementations, :mod:`.memory` (one process) and :mod:`.redis`
(any number of replicas), pass the same tests.

Stores deal in opaque bytes keyed by non-secret identifiers (key ids, digests); they never see a
credential in the clear. Every operation that must be atomic is one store call, implemented as one
Redis command or Lua script, never a read followed by a write from Python. A store that cannot
answer raises :class:`~gateway.errors.StoreUnavailable` so the gateway fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class MobileState(StrEnum):
    """What a mobile-token lookup found."""

    OK = "ok"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """What one store node does when it is full: ``maxmemory`` bytes (0: no limit) and its
    ``maxmemory-policy``. ``node`` names it (``host:port``; empty for the one node of a
    standalone or Sentinel store)."""

    node: str
    maxmemory: int
    policy: str

    @property
    def evicts(self) -> bool:
        """It may drop keys nobody deleted: a limit, and a policy other than ``noeviction``."""
        return self.maxmemory > 0 and self.policy != "noeviction"


class KeyStore(Protocol):
    async def put_key(
        self, key_id: str, digest: str, blob: bytes, account: str | None = None
    ) -> None:
        """Create or replace the record of ``key_id``, reachable by ``digest`` too, and listed
        under ``account``. Where replicas must acknowledge writes, raises
        :class:`~gateway.errors.StoreUnavailable` when too few did (the write may remain)."""

    async def replace_key(
        self, key_id: str, digest: str, expected: bytes, blob: bytes, account: str | None = None
    ) -> bool:
        """:meth:`put_key`, in one atomic step with the check that the stored record is still
        ``expected``: False, and nothing written, when it is not. Too few acknowledgements
        raise as :meth:`put_key` does, with ``details["written"]`` saying which it was."""

    async def key_by_digest(self, digest: str) -> bytes | None: ...

    async def key_by_id(self, key_id: str) -> bytes | None: ...

    async def list_keys(self, account: str | None = None) -> list[bytes]:
        """Every record, or those put under ``account`` (an index, never a scan)."""

    async def upgrade_schema(self) -> int:
        """Move records an earlier version wrote under other key names to today's (once; cheap
        when there is nothing to move); return how many moved."""

    async def master_fingerprint(self) -> str | None:
        """The fingerprint of the master key the keys here are sealed under, if recorded."""

    async def claim_master_fingerprint(self, fingerprint: str) -> str:
        """Record ``fingerprint`` unless one is recorded already, in one atomic step; return
        the one recorded (``fingerprint`` itself for the first caller)."""


class MobileTokenStore(Protocol):
    async def put_mobile(
        self, digest: str, blob: bytes, now: float, expires_at: float, retain_until: float
    ) -> None:
        """Store a fresh token's record; it is remembered (as used or expired) until
        ``retain_until`` so a late caller learns why it failed."""

    async def peek_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        """Look without consuming."""

    async def consume_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        """Atomically mark the token used and return its record. Exactly one caller ever gets
        ``OK`` for a token, across every process sharing the store and across a failover:
        where replicas must acknowledge the consumption and too few did, this raises
        :class:`~gateway.errors.StoreUnavailable` instead, and the token stays usable."""


class RelationshipStore(Protocol):
    async def set_relationship(
        self, account: str, subject: str, actor: str, active: bool
    ) -> None: ...

    async def relationship_active(self, account: str, subject: str, actor: str) -> bool: ...

    async def list_relationships(self, account: str) -> list[tuple[str, str]]:
        """The active relationships of ``account`` as ``(subject, actor)`` pairs, sorted. For
        the dashboard, never on a request's path."""


class RateLimitStore(Protocol):
    async def rate_limit(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, int, float]:
        """GCRA: one atomic step. Returns (allowed, remaining, seconds until a request is
        allowed again — or until the bucket is full, when allowed)."""

    async def rate_limit_peek(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, float]:
        """Whether :meth:`rate_limit` would allow one request now, without spending it (one
        read): (allowed, seconds until it would, 0 when allowed)."""


class Store(KeyStore, MobileTokenStore, RelationshipStore, RateLimitStore, Protocol):
    """Everything the gateway keeps outside its own process."""

    name: str
    # While True, the store's failures to answer are not reported (no log line, no metric):
    # it is a candidate being tried (a reload's new store, before it serves anything), and
    # its caller reports the failure. Reported, they would read as the running store's.
    quiet: bool

    async def ping(self) -> None:
        """Raise :class:`~gateway.errors.StoreUnavailable` unless the store answers."""

    async def memory_policies(self) -> list[MemoryPolicy] | None:
        """Each writable node's memory limit and policy (``[]``: a store that never evicts);
        None when the store will not say (``INFO`` refused by an ACL or renamed)."""

    async def close(self) -> None: ...
