"""Whole decisions reused (gateway/authz/decisions.py): faster, and never more permissive.

Every test runs the real gateway on the fake clock and asserts what a client or the upstream
sees: a reused decision must answer exactly as a fresh one would, at every instant.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from gateway.authz.decisions import MAX_TOKEN_CHARS, Decisions
from gateway.authz.policy import RouteMatch
from gateway.config import ApiKeySettings
from gateway.keys.service import KeyService
from gateway.principal import CredentialKind, Principal
from gateway.stores.memory import MemoryStore
from tests.conftest import Gateway, GatewayFactory

SCORES = "/v1/users/usr_a/scores"


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(store=MemoryStore())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def outcome(gw: Gateway, token: str, path: str = SCORES, method: str = "GET") -> Any:
    response = await gw.client.request(method, path, headers=bearer(token))
    if response.status == 200:
        return 200, "ok"
    body = await response.json()
    return response.status, body["details"].get("reason", body["error"])


def lookups(gw: Gateway, result: str) -> float:
    gw.runtime.metrics.flush()
    value = gw.runtime.metrics.registry.get_sample_value(
        "gateway_cache_lookups_total", {"cache": "decision", "result": result}
    )
    return value or 0.0


def other_replica(gw: Gateway) -> KeyService:
    """Another gateway process on the same store: its changes reach this one only through the
    store (no local cache is told)."""
    keys = gw.runtime.keys
    return KeyService(gw.runtime.store, keys._sealer, gw.clock, ApiKeySettings())


def member_token(key: str, kid: str, now: float, **claims: Any) -> str:
    payload = {"sub": "usr_a", "iat": int(now), "exp": int(now) + 300, "scopes": [], **claims}
    return jwt.encode(payload, key.encode(), algorithm="HS256", headers={"kid": kid, "typ": None})


async def test_a_repeated_request_reuses_the_decision_with_the_same_identity(
    gw: Gateway,
) -> None:
    key, record = await gw.runtime.keys.create("acc_1", "live")
    assert await outcome(gw, key) == (200, "ok")
    assert lookups(gw, "hit") == 0
    assert await outcome(gw, key) == (200, "ok")
    assert lookups(gw, "hit") == 1
    first, second = gw.recorder.seen[-2:]
    for seen in (first, second):
        assert seen.headers["x-auth-key-id"] == [record.key_id]
        assert seen.headers["x-auth-credential"] == ["api_key"]


async def test_revoked_through_this_process_is_refused_at_once(gw: Gateway) -> None:
    key, record = await gw.runtime.keys.create("acc_1", "live")
    other = "/v1/users/usr_b/scores"
    assert await outcome(gw, key) == (200, "ok")
    assert await outcome(gw, key, other) == (200, "ok")
    await gw.runtime.keys.revoke(record.key_id)
    assert await outcome(gw, key, other) == (401, "revoked")
    assert await outcome(gw, key) == (401, "revoked")  # every decision kept was dropped


async def test_revoked_by_another_replica_is_refused_when_the_key_record_expires(
    gw: Gateway,
) -> None:
    """The decision lives no longer than the cached key record it was made with, even when the
    decision itself is younger than a second."""
    key, record = await gw.runtime.keys.create("acc_1", "live")
    assert await outcome(gw, key) == (200, "ok")  # t=0: the key record cached until t=1
    gw.clock.advance(0.9)
    assert await outcome(gw, key, "/v1/users/usr_b/scores") == (200, "ok")  # a new decision
    await other_replica(gw).revoke(record.key_id)
    gw.clock.advance(0.1)  # t=1: the key record is read again
    assert await outcome(gw, key, "/v1/users/usr_b/scores") == (401, "revoked")
    assert await outcome(gw, key) == (401, "revoked")


async def test_a_key_whose_grace_ends_is_refused_on_time(gw: Gateway) -> None:
    """A key rotated elsewhere with a grace period stops at the end of the grace, to the
    instant, as it would with no decision kept."""
    key, record = await gw.runtime.keys.create("acc_1", "live")
    await other_replica(gw).rotate(record.key_id, grace=5)
    gw.clock.advance(4.5)
    assert await outcome(gw, key) == (200, "ok")  # record read at 4.5, fresh until 5.5
    gw.clock.advance(0.5)
    assert await outcome(gw, key) == (401, "rotated")


async def test_method_and_target_are_part_of_the_decision(gw: Gateway) -> None:
    key, record = await gw.runtime.keys.create("acc_1", "live")
    token = member_token(key, record.key_id, gw.clock.now())
    assert await outcome(gw, token, "/v1/users/usr_a") == (200, "ok")
    assert await outcome(gw, token, "/v1/users/usr_a", "PATCH") == (403, "credential_kind")
    assert await outcome(gw, token, SCORES) == (200, "ok")
    assert await outcome(gw, token, "/v1/users/usr_b/scores") == (403, "wrong_user")
    assert await outcome(gw, token, SCORES + "?days=7") == (200, "ok")


async def test_mobile_tokens_are_looked_at_afresh_every_time(gw: Gateway) -> None:
    """A mobile token is single use: no decision about it is kept, so once used it is refused
    as used everywhere, at once."""
    key = await gw.key()
    issued = await gw.client.post(
        "/v1/auth/mobile-token", headers=bearer(key), json={"user_id": "usr_a"}
    )
    mobile = (await issued.json())["token"]
    assert await outcome(gw, mobile) == (403, "credential_kind")
    assert await outcome(gw, mobile) == (403, "credential_kind")
    initialized = await gw.client.post("/v1/sdk/initialize", headers=bearer(mobile))
    assert initialized.status == 200
    assert await outcome(gw, mobile) == (401, "used")


# -- the cache itself ----------------------------------------------------------------------
KIND = CredentialKind("api_key", user_bound=False)


def decision(expires_at: float | None = 100.0) -> tuple[Principal, RouteMatch]:
    principal = Principal("acc_1", KIND, "live", "key_1", expires_at=expires_at)
    return principal, RouteMatch(None, "/", {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fresh_until", "expires_at", "kept_until"),
    [
        (10.5, 100.0, 10.5),  # the verification's own freshness
        (50.0, 10.2, 10.2),  # the credential's expiry
        (50.0, 100.0, 11.0),  # at most MAX_AGE
        (50.0, None, None),  # a credential with no expiry is not kept
        (9.0, 100.0, None),  # already stale: not kept
    ],
)
def test_an_entry_is_kept_until_the_earliest_bound(
    fresh_until: float, expires_at: float | None, kept_until: float | None
) -> None:
    cache = Decisions()
    assert cache.get("t", "GET", "/", 10.0, 0) is None
    cache.put("t", "GET", "/", decision(expires_at), 10.0, fresh_until, 0)
    if kept_until is None:
        assert cache.get("t", "GET", "/", 10.0, 0) is None
        return
    assert cache.get("t", "GET", "/", kept_until - 0.001, 0) is not None
    assert cache.get("t", "GET", "/", kept_until, 0) is None


def test_keys_changed_while_deciding_the_decision_is_not_kept() -> None:
    cache = Decisions()
    assert cache.get("t", "GET", "/", 10.0, 0) is None
    cache.put("t", "GET", "/", decision(), 10.0, 10.5, 1)  # a key changed since the get
    assert cache.get("t", "GET", "/", 10.1, 1) is None
    cache.put("t", "GET", "/", decision(), 10.1, 10.5, 1)
    assert cache.get("t", "GET", "/", 10.2, 1) is not None
    assert cache.get("t", "GET", "/", 10.2, 2) is None  # and a later change drops it


def test_long_tokens_are_not_kept() -> None:
    cache = Decisions()
    cache.get("x", "GET", "/", 10.0, 0)
    long = "t" * (MAX_TOKEN_CHARS + 1)
    cache.put(long, "GET", "/", decision(), 10.0, 10.5, 0)
    assert cache.get(long, "GET", "/", 10.0, 0) is None
    cache.put(long[:-1], "GET", "/", decision(), 10.0, 10.5, 0)
    assert cache.get(long[:-1], "GET", "/", 10.0, 0) is not None
