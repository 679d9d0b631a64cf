"""Mobile tokens: shape, randomness, single use on both stores (``gateway.issue.mobile``)."""

from __future__ import annotations

import collections
import os

import pytest

from gateway.authn.mobile_token import SHAPE as MOBILE_SHAPE
from gateway.authn.mobile_token import MobileTokenAuthenticator, digest
from gateway.base62 import ALPHABET
from gateway.config import ApiKeySettings
from gateway.errors import InvalidToken
from gateway.issue.mobile import MobileTokens, new_token
from gateway.keys.sealing import Sealer
from gateway.keys.service import KeyService
from gateway.stores.base import MobileState, Store
from tests.kinds import K, classify
from tests.support import FakeClock


async def issuing_key(
    store: Store, clock: FakeClock, lifetime: float | None = None
) -> tuple[KeyService, str]:
    """A key service on ``store`` and the id of a live key it created, which the tests' mobile
    tokens name as the key they were issued with."""
    keys = KeyService(store, Sealer(os.urandom(32)), clock, ApiKeySettings())
    _, record = await keys.create("acc_1", "live", lifetime=lifetime)
    return keys, record.key_id


def test_tokens_have_the_mobile_shape_and_are_told_apart_by_it() -> None:
    for _ in range(200):
        token = new_token()
        assert len(token) == 46 and MOBILE_SHAPE.match(token)
        assert classify(token).kind is K.MOBILE_TOKEN


def test_tokens_do_not_repeat_and_use_the_whole_alphabet() -> None:
    tokens = {new_token() for _ in range(5000)}
    assert len(tokens) == 5000
    # Every character is uniform over the 62 symbols: a loose check that no position is stuck
    # (a broken generator fails it by a wide margin; tests/test_base62.py checks the bias).
    counts = collections.Counter(token[3] for token in tokens)
    assert set(counts) == set(ALPHABET)
    assert max(counts.values()) < 3 * 5000 / 62


async def test_issued_tokens_are_stored_by_digest_and_consumed_once(store: Store) -> None:
    clock = FakeClock(1_700_000_000.0)
    keys, key_id = await issuing_key(store, clock)
    tokens = MobileTokens(store, clock, ttl=300)
    token, record = await tokens.issue(
        account="acc_1", environment="live", user="usr_a", scopes=("sleep",), key_id=key_id
    )
    assert record.expires_at == clock.now() + 300
    # Authenticating looks at it without consuming it.
    seen = await MobileTokenAuthenticator(store, keys, clock).authenticate(classify(token))
    assert seen.user == "usr_a" and seen.token_id == digest(token) and not seen.consumed
    # Consuming it is its authentication: once, with the record it was issued with.
    used = await MobileTokenAuthenticator(store, keys, clock).consume(classify(token))
    assert (used.account, used.environment, used.user, used.scopes, used.key_id) == (
        record.account,
        record.environment,
        record.user,
        record.scopes,
        record.key_id,
    )
    assert used.expires_at == record.expires_at and used.consumed
    with pytest.raises(InvalidToken) as again:
        await MobileTokenAuthenticator(store, keys, clock).consume(classify(token))
    assert again.value.details["reason"] == MobileState.USED.value


@pytest.mark.parametrize("elapsed", [300, 301])
async def test_tokens_expire_after_their_ttl(store: Store, elapsed: float) -> None:
    clock = FakeClock(1_700_000_000.0)
    keys, key_id = await issuing_key(store, clock)
    tokens = MobileTokens(store, clock, ttl=300)
    token, _ = await tokens.issue(
        account="acc_1", environment="live", user="usr_a", scopes=(), key_id=key_id
    )
    clock.advance(elapsed)
    with pytest.raises(InvalidToken) as refused:
        await MobileTokenAuthenticator(store, keys, clock).consume(classify(token))
    assert refused.value.details["reason"] == MobileState.EXPIRED.value


@pytest.mark.parametrize(("end", "reason"), [("revoke", "key_revoked"), ("expire", "key_expired")])
async def test_a_token_of_a_key_that_ended_initializes_nothing(
    store: Store, end: str, reason: str
) -> None:
    """Revoking a key (or its lifetime ending) ends the mobile tokens it issued: looked at or
    consumed, they are refused, and a consumed one stays used up."""
    clock = FakeClock(1_700_000_000.0)
    keys, key_id = await issuing_key(store, clock, lifetime=120)
    token, _ = await MobileTokens(store, clock, ttl=300).issue(
        account="acc_1", environment="live", user="usr_a", scopes=(), key_id=key_id
    )
    if end == "revoke":
        await keys.revoke(key_id)
    else:
        clock.advance(200)  # past the key's 120 s, within the token's 300 s
    authenticator = MobileTokenAuthenticator(store, keys, clock)
    for attempt in (authenticator.authenticate, authenticator.consume):
        with pytest.raises(InvalidToken) as refused:
            await attempt(classify(token))
        assert refused.value.details["reason"] == reason
    with pytest.raises(InvalidToken) as again:
        await authenticator.consume(classify(token))
    assert again.value.details["reason"] == MobileState.USED.value
