"""The API-key lifecycle and the one lookup every key-authenticated request goes through.

Revocation bound: a looked-up key is cached in-process for at most ``api_keys.cache_ttl`` seconds
(one second at most, enforced by the config), after which the store is asked again. Revoking or
rotating a key on any replica therefore takes effect on every replica sharing the store within
that bound, with no message that could be lost. When the store is unreachable a cached entry is
used for at most ``api_keys.stale_window`` more seconds (0 by default: fail closed).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.config import ApiKeySettings
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    InvalidToken,
    NotFound,
    ServiceUnavailable,
    StoreUnavailable,
    TokenExpired,
)
from gateway.identifiers import is_identifier
from gateway.keys import material
from gateway.keys.fingerprint import MasterKeyMismatch, ensure_master_key
from gateway.keys.record import KeyRecord
from gateway.keys.sealing import Sealer, SealingError
from gateway.observe import logs
from gateway.stores.base import KeyStore
from gateway.ttlcache import StatsFactory, TTLCache

_REASON_MESSAGES = {
    "unknown": "The API key is not recognized.",
    "revoked": "The API key has been revoked.",
    "rotated": "The API key has been rotated; use the new key.",
}


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """A key record together with its secret, for verifying member tokens signed with it."""

    record: KeyRecord
    secret: bytes


class KeyService:
    def __init__(
        self,
        store: KeyStore,
        sealer: Sealer,
        clock: Clock,
        settings: ApiKeySettings,
        *,
        cache_size: int = 100_000,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self._settings = settings
        self._by_digest: TTLCache[str, KeyRecord] = TTLCache(cache_size)
        self._by_id: TTLCache[str, KeyRecord] = TTLCache(cache_size)
        # Secrets never change for a key id; kept (bounded) so member tokens cost no decryption.
        self._secrets: dict[str, bytes] = {}
        self._secrets_max = cache_size
        self._master_key_confirmed = False
        # Counts the changes this process made to keys (revoked, rotated): see _forget.
        self.generation = 0
        # A revocation or rotation reads a record and writes it back: one at a time in this
        # process, so that neither writes over the other (a rotation that read the key before a
        # revocation would otherwise make it active again for its grace period, and two
        # rotations of one key would both pass the check for a successor).
        self._changing = asyncio.Lock()

    # -- authentication --------------------------------------------------------------------
    async def authenticate(self, presented: str) -> KeyRecord:
        """The active record of ``presented``, or :class:`InvalidToken` / :class:`TokenExpired`
        / :class:`StoreUnavailable`."""
        now = self._clock.now()
        digest = material.digest(presented)
        record = self._by_digest.get(digest, now)
        if record is None:
            try:
                blob = await self._store.key_by_digest(digest)
            except StoreUnavailable:
                record = self._by_digest.get(digest, now, stale=True)
                if record is None:
                    raise
            else:
                record = KeyRecord.from_blob(blob) if blob is not None else None
                # SECURITY: constant-time confirmation that the record found is this key's.
                if record is None or not hmac.compare_digest(record.digest, digest):
                    raise InvalidToken(_REASON_MESSAGES["unknown"], details={"reason": "unknown"})
                self._remember(record, now)
        return self._check(record, now)

    def fresh_until(self, *, presented: str | None = None, key_id: str | None = None) -> float:
        """Until when the cached record of a key (by the key itself, or by its id) is as good
        as one read from the store now (0.0: not cached). A decision made with it may be
        reused until then and no longer, so caching decisions adds nothing to the revocation
        bound (``api_keys.cache_ttl``)."""
        if presented is not None:
            cache, key = self._by_digest, material.digest(presented)
        elif key_id is not None:
            cache, key = self._by_id, key_id
        else:
            return 0.0
        record = cache.peek(key)
        if record is None:
            return 0.0
        # A key's status also changes on its own clock (it expires; a rotated key's grace ends).
        changes = (t for t in (record.expires_at, record.revoked_at) if t is not None)
        return min(cache.fresh_until(key), *changes)

    async def record_by_id(self, key_id: str) -> KeyRecord:
        """The record with this id, whatever its status (cached like :meth:`authenticate`)."""
        if not material.KEY_ID_SHAPE.match(key_id):
            raise InvalidToken("Unknown signing key.", details={"reason": "unknown_kid"})
        now = self._clock.now()
        record = self._by_id.get(key_id, now)
        if record is None:
            try:
                blob = await self._store.key_by_id(key_id)
            except StoreUnavailable:
                record = self._by_id.get(key_id, now, stale=True)
                if record is None:
                    raise
            else:
                if blob is None:
                    raise InvalidToken("Unknown signing key.", details={"reason": "unknown_kid"})
                record = KeyRecord.from_blob(blob)
                ttl = self._settings.cache_ttl
                self._by_id.put(key_id, record, now + ttl, now + ttl + self._settings.stale_window)
        return record

    async def active_by_id(self, key_id: str) -> ActiveKey:
        """The key with this id and its secret, if active; errors as :meth:`authenticate`.
        A secret this process cannot open (sealed under another master key, or a damaged
        record) is a 503 ``service_unavailable`` and an error log line naming the key id: the
        request is refused, never answered with a 500."""
        record = self._check(await self.record_by_id(key_id), self._clock.now())
        return ActiveKey(record, self._secret(record))

    async def signing_secret(self, key_id: str) -> bytes:
        """The secret of the key ``key_id`` whatever its status (revoked, rotated, expired):
        a member token naming an inactive key is told why only when its signature verifies
        with that key, so key ids and their status cannot be probed (InvalidToken for an
        unknown id)."""
        return self._secret(await self.record_by_id(key_id))

    def _secret(self, record: KeyRecord) -> bytes:
        key_id = record.key_id
        secret = self._secrets.get(key_id)
        if secret is None:
            try:
                secret = self._sealer.open(record.sealed, record.key_id).encode()
            except SealingError as exc:
                logs.event(
                    "cannot open the sealed secret of an API key (sealed under another master "
                    "key, or a damaged record); its member tokens are refused",
                    logging.ERROR,
                    key_id=key_id,
                    master_key_fingerprint=self._sealer.fingerprint,
                    error=str(exc),
                )
                raise ServiceUnavailable(
                    "The gateway cannot verify tokens signed with this key right now.",
                    details={"reason": "key_unavailable"},
                ) from None
            self._secrets[key_id] = secret
            if len(self._secrets) > self._secrets_max:
                self._secrets.pop(next(iter(self._secrets)))
        return secret

    async def ensure_not_revoked(self, key_id: str) -> None:
        """Tokens derived from a key die with it (within the revocation bound) when it is
        revoked, during or after a rotation too, and when it expires (keys are revoked
        automatically after their lifetime). Only a rotation lets them live out their own short
        lifetime, so that rotating a key does not log every browser out."""
        status = (await self.record_by_id(key_id)).status(self._clock.now())
        if status == "revoked":
            raise InvalidToken(
                "The API key this token was issued with has been revoked.",
                details={"reason": "key_revoked"},
            )
        if status == "expired":
            raise InvalidToken(
                "The API key this token was issued with has expired.",
                details={"reason": "key_expired"},
            )

    def attach_stats(self, stats: StatsFactory) -> None:
        self._by_digest.attach(stats("api_key"))
        self._by_id.attach(stats("api_key_by_id"))

    def _remember(self, record: KeyRecord, now: float) -> None:
        """Kept by digest (the key presented again) and by id (a token it issues, checked
        against its key within the same second: a mobile token initialized right after its
        issue asks no store)."""
        ttl = self._settings.cache_ttl
        until, stale = now + ttl, now + ttl + self._settings.stale_window
        self._by_digest.put(record.digest, record, until, stale)
        self._by_id.put(record.key_id, record, until, stale)

    @staticmethod
    def _check(record: KeyRecord, now: float) -> KeyRecord:
        status = record.status(now)
        if status == "expired":
            raise TokenExpired(
                "The API key has expired (keys are revoked automatically after "
                "their lifetime); create a new one.",
                details={"reason": "expired"},
            )
        if status != "active":
            raise InvalidToken(_REASON_MESSAGES[status], details={"reason": status})
        return record

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def sealer(self) -> Sealer:
        """What seals this service's keys (its fingerprint is public: see
        :mod:`gateway.keys.watch`)."""
        return self._sealer

    async def ensure_master_key(self) -> bool:
        """Confirm once that this process's master key is the store's (recording its
        fingerprint on first use: then True): :class:`~gateway.keys.fingerprint.MasterKeyMismatch`
        (a config error naming both fingerprints) or :class:`~gateway.errors.StoreUnavailable`
        otherwise. The CLI and ``serve`` call it before anything else; :meth:`create` before
        it seals a key."""
        if self._master_key_confirmed:
            return False
        claimed = await ensure_master_key(self._store, self._sealer)
        self._master_key_confirmed = True
        return claimed

    async def create(
        self,
        account: str,
        environment: str,
        *,
        label: str = "",
        test: bool = False,
        lifetime: float | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key. The key itself is returned here and never again."""
        if not is_identifier(account):
            raise InvalidRequest(
                "account must be 1-128 letters, digits, '_' or '-'.", details={"field": "account"}
            )
        if environment not in ("live", "sandbox"):
            raise InvalidRequest(
                "environment must be live or sandbox.", details={"field": "environment"}
            )
        if len(label) > 200 or not label.isprintable():
            raise InvalidRequest(
                "label must be at most 200 printable characters.", details={"field": "label"}
            )
        limit = self._settings.lifetime
        if lifetime is not None and not 0 < lifetime <= limit:
            raise InvalidRequest(
                f"lifetime must be between 1 and {int(limit)} seconds.",
                details={"field": "lifetime"},
            )
        if test and environment != "sandbox":
            raise InvalidRequest(
                "test keys (sk_test_) are sandbox keys: use environment sandbox, or no test.",
                details={"field": "test"},
            )
        try:
            # Every time, not once: the store may have lost its data and been claimed by
            # another master key since (gateway.keys.watch); creating keys is rare.
            await ensure_master_key(self._store, self._sealer)
        except MasterKeyMismatch as exc:
            logs.event("refused to create an API key", logging.ERROR, error=str(exc))
            # SECURITY: never seal a key that the other replicas could not open.
            raise ServiceUnavailable(
                "This gateway's master key differs from the one the store's API keys are "
                "sealed under; no key was created.",
                details={"reason": "master_key_mismatch"},
            ) from None
        now = self._clock.now()
        prefix = material.prefix_for(environment, test=test)
        key, key_id = material.new_key(prefix), material.new_key_id()
        record = KeyRecord(
            key_id=key_id,
            account=account,
            environment=environment,
            prefix=prefix,
            label=label,
            created_at=now,
            expires_at=now + (lifetime or limit),
            digest=material.digest(key),
            sealed=self._sealer.seal(key, key_id),
        )
        try:
            await self._store.put_key(key_id, record.digest, record.to_blob(), record.account)
        except StoreUnavailable as exc:
            if exc.details.get("reason") != "not_replicated":
                raise
            # SECURITY: the key is on the master but no replica confirmed it, and its secret is
            # never shown: revoked at once, not left active with nobody knowing it.
            revoked = await self._undo((record, record.with_changes(revoked_at=now)))
            said = (
                "it was revoked. Create the key again."
                if revoked
                else f"revoking it failed: revoke {key_id}, then create the key again."
            )
            raise StoreUnavailable(
                f"Key {key_id} was written but no replica confirmed it; {said}",
                details={
                    "store": "redis",
                    "reason": "not_replicated",
                    "key_id": key_id,
                    "revoked": revoked,
                },
            ) from exc
        return key, record

    async def _undo(self, *changes: tuple[KeyRecord, KeyRecord]) -> bool:
        """Put each ``(written, then)`` pair's record back to ``then``, each only while the
        store still holds what this process wrote (``written``): what a write no replica
        confirmed left behind (on the master, it may or may not outlive a failover). True when
        every one was put back. SECURITY: never over a change made meanwhile by another
        process (a revocation of the key would be undone)."""
        undone = True
        for written, then in changes:
            try:
                done = await self._store.replace_key(
                    then.key_id, then.digest, written.to_blob(), then.to_blob(), then.account
                )
            except StoreUnavailable as exc:
                done = bool(exc.details.get("written"))
            except GatewayError:
                done = False
            undone = undone and done
            self._forget(then)
        return undone

    async def list(self, account: str | None = None) -> list[KeyRecord]:
        if account is not None and not is_identifier(account):
            # What create() refuses: no key has such an account (an empty list said otherwise).
            raise InvalidRequest(
                "account must be 1-128 letters, digits, '_' or '-'.", details={"field": "account"}
            )
        records = [KeyRecord.from_blob(b) for b in await self._store.list_keys(account)]
        return sorted(
            (r for r in records if account is None or r.account == account),
            key=lambda r: r.created_at,
        )

    async def _get(self, key_id: str) -> KeyRecord:
        blob = await self._store.key_by_id(key_id) if material.KEY_ID_SHAPE.match(key_id) else None
        if blob is None:
            # Not echoed: the id is whatever the caller sent (a path, say).
            raise NotFound("No key has this id.", details={"field": "key_id"})
        return KeyRecord.from_blob(blob)

    async def revoke(self, key_id: str) -> KeyRecord:
        """The key stops working at once, and so does every token issued with it: also a key
        in its rotation's grace period, or one a rotation already replaced (a key that leaked
        is revoked whatever else was done with it; its record then no longer names its
        successor)."""
        async with self._changing:
            record = await self._get(key_id)
            now = self._clock.now()
            if record.status(now) != "revoked":
                ended = record.revoked_at if record.revoked_at is not None else now
                # SECURITY: a rotated key loses its rotation (a record revoked and not rotated
                # is what every release reads as revoked): its tokens end with it, where a
                # rotation alone lets them live out their lifetime so as not to log every
                # browser out.
                record = record.with_changes(revoked_at=min(ended, now), rotated_to=None)
                await self._store.put_key(
                    record.key_id, record.digest, record.to_blob(), record.account
                )
            self._forget(record)
            return record

    async def rotate(self, key_id: str, *, grace: float = 0.0) -> tuple[str, KeyRecord, KeyRecord]:
        """A new key for the same account and environment, with the old one's lifetime. The old
        key stops working at once, or after ``grace`` seconds when a zero-downtime rotation asks
        for it (at most 24 h). A key is rotated once: rotating it again, during its grace period
        or after it, is a :class:`Conflict` naming its successor (the key to rotate instead),
        and changes nothing."""
        if not 0 <= grace <= 86400:
            raise InvalidRequest(
                "grace must be between 0 and 86400 seconds.", details={"field": "grace"}
            )
        async with self._changing:
            old = await self._get(key_id)
            if old.rotated_to is not None:
                # One successor per key: a second would replace the first in this record and
                # leave the first active and linked to nothing.
                raise Conflict(
                    f"Key {key_id} has already been rotated to {old.rotated_to}; "
                    f"rotate {old.rotated_to} instead.",
                    details={"reason": "already_rotated", "rotated_to": old.rotated_to},
                )
            if old.status(self._clock.now()) != "active":
                raise InvalidRequest(f"Key {key_id} is not active.", details={"field": "key_id"})
            # The successor lives as long as its predecessor was made to (a 10-day key is not
            # replaced by a 90-day one), within api_keys.lifetime.
            span = min(old.expires_at - old.created_at, self._settings.lifetime)
            try:
                key, new = await self.create(
                    old.account,
                    old.environment,
                    label=old.label,
                    test=old.prefix == "sk_test_",
                    lifetime=span if span > 0 else None,
                )
            except StoreUnavailable as exc:  # create() has revoked the successor, or said not
                if exc.details.get("reason") != "not_replicated":
                    raise
                successor, revoked = exc.details["key_id"], bool(exc.details.get("revoked"))
                raise _rotation_unconfirmed(key_id, successor, revoked) from exc
            before = old
            old = old.with_changes(revoked_at=self._clock.now() + grace, rotated_to=new.key_id)
            try:
                await self._store.put_key(old.key_id, old.digest, old.to_blob(), old.account)
            except StoreUnavailable as exc:
                if exc.details.get("reason") != "not_replicated":
                    raise
                # SECURITY: nobody was told the successor's secret: revoked, and the old key
                # left as it was (else a repeated rotation is refused as done, and the old
                # key ends after its grace with no successor anyone holds).
                undone = await self._undo(
                    (new, new.with_changes(revoked_at=self._clock.now())), (old, before)
                )
                raise _rotation_unconfirmed(key_id, new.key_id, undone) from exc
            self._forget(old)
            return key, new, old

    def _forget(self, record: KeyRecord) -> None:
        # Anything decided with what this process knew of its keys is decided again.
        self.generation += 1
        self._by_digest.discard(record.digest)
        self._by_id.discard(record.key_id)
        self._secrets.pop(record.key_id, None)


def _rotation_unconfirmed(key_id: str, successor: str, undone: bool) -> StoreUnavailable:
    said = (
        f"its successor {successor} was revoked and {key_id} left as it was. Rotate it again."
        if undone
        else f"it could not be undone: see both keys in `gateway keys list`, and revoke "
        f"{successor} unless {key_id} is rotated to it."
    )
    return StoreUnavailable(
        f"The rotation of {key_id} was not confirmed by a replica; {said}",
        details={
            "store": "redis",
            "reason": "not_replicated",
            "key_id": key_id,
            "new_key_id": successor,
        },
    )
