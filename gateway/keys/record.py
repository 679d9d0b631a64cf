"""The stored record of one API key. It holds the key's digest and sealed secret, never the key."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from gateway.clock import rfc3339


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    account: str
    environment: str
    prefix: str
    label: str
    created_at: float
    expires_at: float
    digest: str
    sealed: str
    revoked_at: float | None = None
    rotated_to: str | None = None

    def to_blob(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_blob(cls, blob: bytes) -> KeyRecord:
        """The record in ``blob``; a field a later release added is ignored, so that replicas
        of two releases can share a store during a rolling deploy (and a rollback)."""
        data = orjson.loads(blob)
        return cls(**{name: data[name] for name in _FIELDS if name in data})

    def with_changes(self, **changes: Any) -> KeyRecord:
        return replace(self, **changes)

    def status(self, now: float) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "rotated" if self.rotated_to else "revoked"
        if self.expires_at <= now:
            return "expired"
        return "active"

    def public(self, now: float) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the digest and the sealed secret."""
        return {
            "key_id": self.key_id,
            "account": self.account,
            "environment": self.environment,
            "prefix": self.prefix,
            "label": self.label,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "revoked_at": rfc3339(self.revoked_at) if self.revoked_at is not None else None,
            "rotated_to": self.rotated_to,
            "status": self.status(now),
        }


_FIELDS = frozenset(KeyRecord.__dataclass_fields__)
