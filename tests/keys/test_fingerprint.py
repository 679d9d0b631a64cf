"""One master key per store: its fingerprint is recorded on first use and a different key is
refused before it seals anything; a secret that cannot be opened is a clean 503, never a 500."""

from __future__ import annotations

import base64
import os

import pytest

from gateway.config import ApiKeySettings
from gateway.errors import ServiceUnavailable
from gateway.issue.member_cli import member_token
from gateway.keys import material
from gateway.keys.fingerprint import MasterKeyMismatch, ensure_master_key
from gateway.keys.record import KeyRecord
from gateway.keys.sealing import Sealer, SealingError
from gateway.keys.service import KeyService
from gateway.stores.base import Store
from tests.conftest import Gateway
from tests.support import FakeClock

A, B = os.urandom(32), os.urandom(32)


def sealed_record(sealer: Sealer, account: str = "acc_1") -> tuple[str, KeyRecord]:
    """A key record written the way a process holding ``sealer`` writes one, without any check
    (what a CLI run with another master key wrote before fingerprints existed)."""
    key, key_id = material.new_key("sk_live_"), material.new_key_id()
    return key, KeyRecord(
        key_id=key_id,
        account=account,
        environment="live",
        prefix="sk_live_",
        label="",
        created_at=0.0,
        expires_at=4_000_000_000.0,
        digest=material.digest(key),
        sealed=sealer.seal(key, key_id),
    )


async def test_the_first_master_key_is_recorded_and_another_is_refused(store: Store) -> None:
    first, other = Sealer(A), Sealer(B)
    assert first.fingerprint != other.fingerprint
    assert await store.master_fingerprint() is None
    await ensure_master_key(store, first)
    assert await store.master_fingerprint() == first.fingerprint
    await ensure_master_key(store, first)  # the same key again: fine
    with pytest.raises(MasterKeyMismatch) as caught:
        await ensure_master_key(store, other)
    message = str(caught.value)
    assert message.startswith("master_key: ")
    assert first.fingerprint in message and other.fingerprint in message
    assert "same master key" in message
    for secret in (A, B):  # the message names fingerprints, never a key
        assert base64.b64encode(secret).decode() not in message
        assert secret.hex() not in message
    # The refusal changed nothing: the first key's fingerprint is still the recorded one.
    assert await store.master_fingerprint() == first.fingerprint


async def test_a_recorded_fingerprint_must_be_this_keys_exactly(store: Store) -> None:
    """A recorded value that merely contains this key's fingerprint (another format's, with a
    prefix) is a mismatch."""
    sealer = Sealer(A)
    recorded = f"v0:{sealer.fingerprint}"
    assert await store.claim_master_fingerprint(recorded) == recorded
    with pytest.raises(MasterKeyMismatch):
        await ensure_master_key(store, sealer)
    assert await store.master_fingerprint() == recorded


async def test_concurrent_first_claims_agree_on_one_key(store: Store) -> None:
    assert await store.claim_master_fingerprint("mk1:one") == "mk1:one"
    assert await store.claim_master_fingerprint("mk1:two") == "mk1:one"


async def test_keys_from_before_fingerprints_decide_who_may_claim(store: Store) -> None:
    _, record = sealed_record(Sealer(A))
    await store.put_key(record.key_id, record.digest, record.to_blob())
    with pytest.raises(MasterKeyMismatch, match="opens none of the 1 API keys"):
        await ensure_master_key(store, Sealer(B))
    assert await store.master_fingerprint() is None
    await ensure_master_key(store, Sealer(A))
    assert await store.master_fingerprint() == Sealer(A).fingerprint


async def test_create_refuses_to_seal_under_another_master_key(
    store: Store, clock: FakeClock
) -> None:
    server = KeyService(store, Sealer(A), clock, ApiKeySettings())
    cli = KeyService(store, Sealer(B), clock, ApiKeySettings())
    await server.create("acc_1", "live")
    with pytest.raises(ServiceUnavailable) as caught:
        await cli.create("acc_1", "live")
    assert caught.value.details == {"reason": "master_key_mismatch"}
    assert len(await store.list_keys()) == 1  # nothing written


@pytest.mark.parametrize(
    "sealed",
    [
        "other-master-key",
        "not base64 at all!",
        base64.b64encode(b"short").decode(),
        "",
    ],
)
async def test_a_secret_that_cannot_be_opened_is_service_unavailable(
    store: Store, clock: FakeClock, sealed: str
) -> None:
    keys = KeyService(store, Sealer(A), clock, ApiKeySettings())
    _, record = sealed_record(Sealer(B))
    if sealed != "other-master-key":
        record = record.with_changes(sealed=sealed)
    await store.put_key(record.key_id, record.digest, record.to_blob())
    with pytest.raises(ServiceUnavailable) as caught:
        await keys.active_by_id(record.key_id)
    assert caught.value.details == {"reason": "key_unavailable"}


@pytest.mark.parametrize("sealed", ["", "!!!", "AAAA", base64.b64encode(os.urandom(40)).decode()])
def test_open_raises_only_sealing_error(sealed: str) -> None:
    with pytest.raises(SealingError):
        Sealer(A).open(sealed, "key_x")


async def test_member_token_under_an_unopenable_key_is_503_not_500(gateway: Gateway) -> None:
    """The request path of issue 12: a member token signed with a key the server cannot
    unseal got 500 internal_error."""
    key, record = sealed_record(Sealer(B))
    await gateway.runtime.store.put_key(record.key_id, record.digest, record.to_blob())
    token = member_token(key, record.key_id, "usr_1", now=gateway.clock.now())
    response = await gateway.client.get(
        "/v1/users/usr_1/scores", headers={"Authorization": f"Bearer {token}"}
    )
    body = await response.json()
    assert response.status == 503, body
    assert body["error"] == "service_unavailable"
    assert body["details"] == {"reason": "key_unavailable"}
    assert not gateway.recorder.seen  # nothing forwarded
