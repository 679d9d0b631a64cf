"""The API-key lifecycle on both stores, with an injectable clock."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from gateway.config import ApiKeySettings
from gateway.errors import (
    Conflict,
    InvalidRequest,
    InvalidToken,
    ServiceUnavailable,
    StoreUnavailable,
    TokenExpired,
)
from gateway.keys import material
from gateway.keys.fingerprint import ensure_master_key
from gateway.keys.record import KeyRecord
from gateway.keys.sealing import Sealer
from gateway.keys.service import KeyService
from gateway.stores.base import Store
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from tests.support import FakeClock, RedisServer

DAY = 86400.0


def service(store: Store, clock: FakeClock, **settings: float) -> KeyService:
    return KeyService(store, Sealer(os.urandom(32)), clock, ApiKeySettings(**settings))


async def test_created_key_has_the_documented_shape(store: Store, clock: FakeClock) -> None:
    keys = service(store, clock)
    live, record = await keys.create("acc_1", "live", label="ci")
    sandbox, _ = await keys.create("acc_1", "sandbox")
    test, _ = await keys.create("acc_1", "sandbox", test=True)
    assert live.startswith("sk_live_") and len(live) == len("sk_live_") + 43
    assert sandbox.startswith("sk_sandbox_") and test.startswith("sk_test_")
    assert material.KEY_ID_SHAPE.match(record.key_id)
    assert record.expires_at - record.created_at == 90 * DAY
    assert (await keys.authenticate(live)).key_id == record.key_id
    assert (await keys.authenticate(test)).environment == "sandbox"


async def test_the_key_is_never_stored_in_the_clear(store: Store, clock: FakeClock) -> None:
    keys = service(store, clock)
    key, _ = await keys.create("acc_1", "live")
    blobs = b"".join(await store.list_keys())
    assert key.encode() not in blobs
    assert key.split("_")[-1].encode() not in blobs
    listed = await keys.list()
    assert key not in repr([r.public(clock.now()) for r in listed])


@pytest.mark.parametrize(
    "presented",
    [
        "sk_live_" + "a" * 43,  # far miss
        None,  # near miss: filled in below
    ],
)
async def test_unknown_keys_are_invalid(
    store: Store, clock: FakeClock, presented: str | None
) -> None:
    keys = service(store, clock)
    key, _ = await keys.create("acc_1", "live")
    presented = presented or key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(InvalidToken) as info:
        await keys.authenticate(presented)
    assert info.value.details == {"reason": "unknown"}


async def test_expiry_at_the_90_day_boundary(store: Store, clock: FakeClock) -> None:
    keys = service(store, clock)
    key, _ = await keys.create("acc_1", "live")
    clock.advance(90 * DAY - 1)
    await keys.authenticate(key)
    clock.advance(1)
    with pytest.raises(TokenExpired):
        await keys.authenticate(key)


async def test_lifetime_can_only_be_shortened(store: Store, clock: FakeClock) -> None:
    keys = service(store, clock, lifetime=30 * DAY)
    _, record = await keys.create("acc_1", "live")
    assert record.expires_at - record.created_at == 30 * DAY
    with pytest.raises(InvalidRequest):
        await keys.create("acc_1", "live", lifetime=31 * DAY)


async def test_revoked_key_stops_at_once(store: Store, clock: FakeClock) -> None:
    keys = service(store, clock)
    key, record = await keys.create("acc_1", "live")
    await keys.authenticate(key)
    await keys.revoke(record.key_id)
    with pytest.raises(InvalidToken) as info:
        await keys.authenticate(key)
    assert info.value.details["reason"] == "revoked"


async def test_revocation_by_another_replica_is_seen_within_the_cache_ttl(
    store: Store, clock: FakeClock
) -> None:
    sealer = Sealer(os.urandom(32))
    replica_a = KeyService(store, sealer, clock, ApiKeySettings())
    replica_b = KeyService(store, sealer, clock, ApiKeySettings())
    key, record = await replica_a.create("acc_1", "live")
    await replica_b.authenticate(key)  # cached on b
    await replica_a.revoke(record.key_id)
    await replica_b.authenticate(key)  # still inside b's 1 s cache
    clock.advance(1.0)
    with pytest.raises(InvalidToken):
        await replica_b.authenticate(key)


async def test_rotation_revokes_the_old_key_at_once(store: Store, clock: FakeClock) -> None:
    keys = service(store, clock)
    old_key, old = await keys.create("acc_1", "sandbox", label="prod")
    new_key, new, old_after = await keys.rotate(old.key_id)
    assert new.account == old.account and new.environment == "sandbox" and new.label == "prod"
    assert old_after.rotated_to == new.key_id
    with pytest.raises(InvalidToken) as info:
        await keys.authenticate(old_key)
    assert info.value.details["reason"] == "rotated"
    assert (await keys.authenticate(new_key)).key_id == new.key_id


@pytest.mark.parametrize("days", [10, 30])
async def test_a_successor_keeps_its_predecessors_lifetime(
    store: Store, clock: FakeClock, days: int
) -> None:
    keys = service(store, clock)
    _, old = await keys.create("acc_1", "live", lifetime=days * DAY)
    clock.advance(3 * DAY)
    _, new, _ = await keys.rotate(old.key_id)
    assert new.expires_at - new.created_at == days * DAY


async def test_rotation_with_an_explicit_grace_period(store: Store, clock: FakeClock) -> None:
    keys = service(store, clock)
    old_key, old = await keys.create("acc_1", "live")
    await keys.rotate(old.key_id, grace=60)
    clock.advance(59)
    await keys.authenticate(old_key)
    clock.advance(1)
    with pytest.raises(InvalidToken):
        await keys.authenticate(old_key)
    with pytest.raises(Conflict):
        await keys.rotate(old.key_id)  # rotated already: its successor is the one to rotate


@pytest.mark.parametrize("after", [0, 60, 90 * DAY])  # in the grace period, after it, expired
async def test_a_rotated_key_is_not_rotated_again(
    store: Store, clock: FakeClock, after: float
) -> None:
    """A second rotation would name a second successor and leave the first active and linked
    to nothing: a 409 naming the successor, and nothing written."""
    keys = service(store, clock)
    _, old = await keys.create("acc_1", "live")
    _, first, _ = await keys.rotate(old.key_id, grace=60)
    stored = sorted(await store.list_keys())
    clock.advance(after)
    for grace in (0.0, 60.0):
        with pytest.raises(Conflict) as info:
            await keys.rotate(old.key_id, grace=grace)
        assert (info.value.status, info.value.code) == (409, "conflict")
        assert info.value.details == {"reason": "already_rotated", "rotated_to": first.key_id}
        assert info.value.message == (
            f"Key {old.key_id} has already been rotated to {first.key_id}; "
            f"rotate {first.key_id} instead."
        )
        assert sorted(await store.list_keys()) == stored
    if after < 90 * DAY:
        _, second, previous = await keys.rotate(first.key_id)  # the successor rotates
        assert (previous.key_id, previous.rotated_to) == (first.key_id, second.key_id)


class Interleaving(MemoryStore):
    """A memory store that lets other tasks run before each read and write of a key record, as
    a network round trip to Redis does: two changes of one key started together interleave,
    the same way every run."""

    async def key_by_id(self, key_id: str) -> bytes | None:
        await asyncio.sleep(0)
        return await super().key_by_id(key_id)

    async def put_key(
        self, key_id: str, digest: str, blob: bytes, account: str | None = None
    ) -> None:
        await asyncio.sleep(0)
        await super().put_key(key_id, digest, blob, account)


async def test_concurrent_rotations_of_one_key_make_one_successor(clock: FakeClock) -> None:
    store = Interleaving()
    keys = service(store, clock)
    _, old = await keys.create("acc_1", "live")
    first, second = await asyncio.gather(
        keys.rotate(old.key_id, grace=60), keys.rotate(old.key_id, grace=60), return_exceptions=True
    )
    assert isinstance(first, tuple) and isinstance(second, Conflict), (first, second)
    successor = first[1].key_id
    records = [KeyRecord.from_blob(b) for b in await store.list_keys()]
    assert sorted(r.key_id for r in records) == sorted([old.key_id, successor])
    assert next(r for r in records if r.key_id == old.key_id).rotated_to == successor


async def test_a_rotation_does_not_undo_a_concurrent_revocation(clock: FakeClock) -> None:
    """A leaked key revoked while it is being rotated stays revoked: the rotation, which read
    the key before the revocation wrote it, must not write it back active for its grace
    period."""
    store = Interleaving()
    keys = service(store, clock)
    key, old = await keys.create("acc_1", "live")
    _, revoked = await asyncio.gather(keys.rotate(old.key_id, grace=600), keys.revoke(old.key_id))
    assert revoked.status(clock.now()) == "revoked"
    record = KeyRecord.from_blob(await store.key_by_id(old.key_id) or b"")
    assert (record.status(clock.now()), record.rotated_to) == ("revoked", None)
    with pytest.raises(InvalidToken):
        await keys.authenticate(key)


async def test_active_by_id_returns_the_secret_for_member_tokens(
    store: Store, clock: FakeClock
) -> None:
    keys = service(store, clock)
    key, record = await keys.create("acc_1", "live")
    active = await keys.active_by_id(record.key_id)
    assert active.secret == key.encode()
    await keys.revoke(record.key_id)
    with pytest.raises(InvalidToken):
        await keys.active_by_id(record.key_id)
    with pytest.raises(InvalidToken):
        await keys.active_by_id("key_../../etc/passwd")


async def test_a_wrong_master_key_cannot_open_keys(store: Store, clock: FakeClock) -> None:
    _key, record = await service(store, clock).create("acc_1", "live")
    with pytest.raises(ServiceUnavailable) as caught:  # a clean 503, never a 500
        await service(store, clock).active_by_id(record.key_id)
    assert caught.value.details == {"reason": "key_unavailable"}


async def test_redis_down_fails_closed_unless_a_stale_window_is_set(
    redis_server: RedisServer, redis_url: str, clock: FakeClock
) -> None:
    store = RedisStore(redis_url, prefix="stale:", timeout=0.2)
    strict = service(store, clock)
    lenient = KeyService(store, strict._sealer, clock, ApiKeySettings(stale_window=30))
    key, _ = await strict.create("acc_1", "live")
    await strict.authenticate(key)
    await lenient.authenticate(key)
    redis_server.stop()
    try:
        clock.advance(2)
        with pytest.raises(StoreUnavailable):
            await strict.authenticate(key)
        await lenient.authenticate(key)  # inside the stale window
        clock.advance(30)
        with pytest.raises(StoreUnavailable):
            await lenient.authenticate(key)  # past it
    finally:
        redis_server.start()
        await store.close()


async def test_a_key_revoked_in_its_rotation_reads_as_revoked_to_every_release(
    store: Store, clock: FakeClock
) -> None:
    """The record written is one the release before reads as revoked too (revoked, no
    successor named): replicas of both share the store during a rolling deploy."""
    keys = service(store, clock)
    _, old = await keys.create("acc_1", "live")
    await keys.rotate(old.key_id, grace=600)
    revoked = await keys.revoke(old.key_id)
    assert (revoked.rotated_to, revoked.status(clock.now())) == (None, "revoked")
    stored = orjson.loads(await store.key_by_id(old.key_id) or b"{}")
    assert stored["rotated_to"] is None and stored["revoked_at"] <= clock.now()
    assert set(stored) == set(KeyRecord.__dataclass_fields__)  # nothing an older one refuses


def test_a_record_from_a_later_release_is_read() -> None:
    """A field a later release adds is ignored, not a TypeError for every key it wrote."""
    fields = {
        "key_id": "key_" + "a" * 24,
        "account": "acc_1",
        "environment": "live",
        "prefix": "sk_live_",
        "label": "",
        "created_at": 1.0,
        "expires_at": 2.0,
        "digest": "d",
        "sealed": "s",
    }
    record = KeyRecord.from_blob(orjson.dumps({**fields, "added_later": True}))
    assert record.key_id == fields["key_id"] and record.revoked_at is None


async def test_a_create_no_replica_confirmed_leaves_no_active_key(
    redis_url: str, clock: FakeClock
) -> None:
    """``min_replicas_ack`` with no replica to confirm (both lost): the write is on the master
    and the caller gets 503 ``not_replicated``, never the key. The key used to stay active,
    its secret known to nobody and its id nowhere (the audit line had none). It is revoked at
    once now, and the error names it."""
    prefix = f"t{os.urandom(4).hex()}:"
    unconfirmed = RedisStore(redis_url, prefix=prefix, min_replicas_ack=1, replica_ack_timeout=0.05)
    sealer = Sealer(os.urandom(32))
    keys = KeyService(unconfirmed, sealer, clock, ApiKeySettings())
    confirmed = RedisStore(redis_url, prefix=prefix)
    try:
        await ensure_master_key(confirmed, sealer)  # the store was claimed while replicas were up
        with pytest.raises(StoreUnavailable) as caught:
            await keys.create("acc_nr", "live")
        key_id = caught.value.details["key_id"]
        assert caught.value.details["reason"] == "not_replicated"
        assert key_id in caught.value.message and "revoked" in caught.value.message
        [left] = await keys.list("acc_nr")
        assert (left.key_id, left.status(clock.now())) == (key_id, "revoked")
    finally:
        await unconfirmed.close()
        await confirmed.close()


async def test_a_rotation_no_replica_confirmed_leaves_the_old_key_as_it_was(
    redis_url: str, clock: FakeClock
) -> None:
    """The successor was active and the old key rotated (ending after its grace) while the
    caller got 503 and no secret; a rotation asked again was refused as done. Now the
    successor is revoked and the old key left active and unrotated: rotating again works."""
    prefix = f"t{os.urandom(4).hex()}:"
    sealer = Sealer(os.urandom(32))
    confirmed = RedisStore(redis_url, prefix=prefix)
    unconfirmed = RedisStore(redis_url, prefix=prefix, min_replicas_ack=1, replica_ack_timeout=0.05)
    try:
        secret, old = await KeyService(confirmed, sealer, clock, ApiKeySettings()).create(
            "acc_rot", "live"
        )
        keys = KeyService(unconfirmed, sealer, clock, ApiKeySettings())
        with pytest.raises(StoreUnavailable) as caught:
            await keys.rotate(old.key_id, grace=60)
        details = caught.value.details
        successor = details.pop("new_key_id")
        assert details == {"store": "redis", "reason": "not_replicated", "key_id": old.key_id}
        assert f"its successor {successor} was revoked" in caught.value.message
        records = {r.key_id: r for r in await keys.list("acc_rot")}
        assert records[old.key_id].status(clock.now()) == "active"
        assert records[old.key_id].rotated_to is None
        assert records[successor].status(clock.now()) == "revoked"
        assert (await keys.authenticate(secret)).key_id == old.key_id
        again = KeyService(confirmed, sealer, clock, ApiKeySettings())
        _, new, previous = await again.rotate(old.key_id)  # asked again, with replicas back
        assert previous.rotated_to == new.key_id
    finally:
        await confirmed.close()
        await unconfirmed.close()


@pytest.mark.parametrize("account", ["bad acc", "", "a" * 129, "acc/1"])
async def test_listing_an_account_no_key_could_have_is_refused(
    store: Store, clock: FakeClock, account: str
) -> None:
    """An empty list read as "this account has no keys"; create() refuses such an account."""
    with pytest.raises(InvalidRequest) as caught:
        await service(store, clock).list(account)
    assert caught.value.details == {"field": "account"}


async def test_an_undo_never_overwrites_a_change_made_meanwhile(
    store: Store, clock: FakeClock
) -> None:
    """The undo of an unconfirmed rotation puts the old key back only while the store holds
    what this process wrote: a revocation another replica made in between (a leaked key)
    stays, where a blind write brought the key back to life."""
    keys = service(store, clock)
    _, old = await keys.create("acc_1", "live")
    rotated = old.with_changes(revoked_at=clock.now() + 60, rotated_to="key_" + "0" * 24)
    await store.put_key(old.key_id, old.digest, rotated.to_blob(), old.account)
    revoked = await service(store, clock).revoke(old.key_id)  # another process, meanwhile
    assert await keys._undo((rotated, old)) is False
    [left] = await keys.list("acc_1")
    assert left.status(clock.now()) == "revoked" and left == revoked
    # Without a change in between, the undo lands.
    _, other = await keys.create("acc_2", "live")
    changed = other.with_changes(label="changed")
    await store.put_key(other.key_id, other.digest, changed.to_blob(), other.account)
    assert await keys._undo((changed, other)) is True
    assert (await keys.list("acc_2"))[0].label == other.label
