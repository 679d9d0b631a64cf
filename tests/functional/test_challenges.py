"""What a 401 or 403 tells a client, and what it must not tell a stranger.

- every 401 and 403 names its RFC 6750 code in ``WWW-Authenticate``;
- a request without a credential gets 401 ``invalid_token`` (reason ``missing``) on every path
  and method, so the policy cannot be mapped without a credential;
- an unknown ``kid`` and a bad signature on a member token are answered alike.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
import pytest

from tests.conftest import Gateway, GatewayFactory

ANONYMOUS = [
    ("GET", "/v1/users/usr_a/scores"),  # allowed for credentials
    ("DELETE", "/v1/users/usr_a/scores"),  # no rule allows DELETE here
    ("PATCH", "/v1/users/usr_a/sleep"),
    ("GET", "/v1/nothing/here"),  # no rule serves this path at all
    ("GET", "/"),
    ("POST", "/v1/auth/user-token"),  # gateway-owned endpoints
    ("GET", "/v1/auth/user-token"),
    ("POST", "/v1/auth/mobile-token"),
    ("POST", "/v1/sdk/initialize"),
    ("PUT", "/v1/sdk/initialize"),
    ("OPTIONS", "/v1/users/usr_a/scores"),  # not a CORS preflight: no Origin
    ("GET", "/decisions/v1/users/usr_a/scores"),  # decision mode, direct form
    ("POST", "/decisions/v1/nothing"),
]


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(decision={"enabled": True, "proxy": "envoy"})


def assert_challenge(response: Any, rfc_code: str) -> None:
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith('Bearer realm="gateway"'), challenge
    assert f'error="{rfc_code}"' in challenge, challenge


@pytest.mark.parametrize(("method", "path"), ANONYMOUS)
async def test_no_credential_is_401_missing_on_every_path_and_method(
    gw: Gateway, method: str, path: str
) -> None:
    response = await gw.client.request(method, path)
    body = await response.json()
    assert response.status == 401, (method, path, body)
    assert body["error"] == "invalid_token"
    assert body["details"] == {"reason": "missing"}
    assert_challenge(response, "invalid_token")
    assert gw.recorder.seen == []


async def test_a_credential_does_learn_the_policy(gw: Gateway) -> None:
    """The verdicts hidden from strangers are still given to an authenticated principal."""
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    refused = await gw.client.delete("/v1/users/usr_a/scores", headers=auth)
    assert refused.status == 403
    assert (await refused.json())["error"] == "insufficient_scope"
    assert_challenge(refused, "insufficient_scope")
    missing = await gw.client.get("/v1/nothing/here", headers=auth)
    assert missing.status == 404
    assert (await missing.json())["error"] == "not_found"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer sk_live_!!", "malformed"),
        ("Bearer sk_live_short", "malformed"),
        ("Bearer mt_x", "malformed"),
        ("Bearer a.b", "malformed"),
        ("Basic !!!", "scheme"),
        ("Basic " + "dXNlcjpwYXNz", "malformed"),  # user:pass, not an API key
        ("Token abc", "scheme"),
        ("Bearer " + "x" * 9000, "too_long"),
    ],
)
async def test_every_401_names_its_code(gw: Gateway, authorization: str, reason: str) -> None:
    response = await gw.client.get(
        "/v1/users/usr_a/scores", headers={"Authorization": authorization}
    )
    body = await response.json()
    assert response.status == 401, body
    assert body["details"]["reason"] == reason
    assert_challenge(response, "invalid_token")


async def test_an_expired_key_names_invalid_token_in_the_challenge(gw: Gateway) -> None:
    key = await gw.key(lifetime=60)
    gw.clock.advance(120)
    response = await gw.client.get(
        "/v1/users/usr_a/scores", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status == 401
    assert (await response.json())["error"] == "token_expired"
    assert_challenge(response, "invalid_token")


def _member_token(secret: str, kid: str, **header: Any) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": "mem_1", "iat": now, "exp": now + 300},
        secret.encode(),
        algorithm="HS256",
        headers={"kid": kid, **header},
    )


async def _answer(gw: Gateway, token: str) -> tuple[int, Any, str | None]:
    response = await gw.client.get(
        "/v1/users/mem_1/scores", headers={"Authorization": f"Bearer {token}"}
    )
    return response.status, await response.json(), response.headers.get("WWW-Authenticate")


async def test_an_unknown_kid_answers_like_a_bad_signature(gw: Gateway) -> None:
    key, record = await gw.runtime.keys.create("acc_1", "live")
    unknown_kid = "key_" + secrets.token_hex(12)
    wrong_secret = "sk_live_" + "x" * 43
    bad_signature = await _answer(gw, _member_token(wrong_secret, record.key_id))
    unknown = await _answer(gw, _member_token(wrong_secret, unknown_kid))
    assert bad_signature[0] == 401
    assert unknown == bad_signature
    # the header checks come first either way: a forbidden header is refused alike too
    forged_known = await _answer(gw, _member_token(key, record.key_id, jku="http://x"))
    forged_unknown = await _answer(gw, _member_token(key, unknown_kid, jku="http://x"))
    assert forged_known[0] == 401
    assert forged_unknown == forged_known
    # and the real key still works
    assert (await _answer(gw, _member_token(key, record.key_id)))[0] == 200


@pytest.mark.parametrize("status", ["revoked", "expired", "rotated"])
async def test_an_inactive_kid_is_told_only_to_its_own_signature(gw: Gateway, status: str) -> None:
    """A revoked, expired or rotated key's status is the answer for tokens signed with that
    key; anyone else (signing with another secret) gets the bad-signature answer, exactly as
    for an unknown kid: a key id's existence and status cannot be probed."""
    key, record = await gw.runtime.keys.create("acc_1", "live", lifetime=60)
    if status == "revoked":
        await gw.runtime.keys.revoke(record.key_id)
    elif status == "rotated":
        await gw.runtime.keys.rotate(record.key_id)
    else:
        gw.clock.advance(120)
    gw.clock.advance(2)  # past the 1 s caches
    wrong_secret = "sk_live_" + "x" * 43
    unknown = await _answer(gw, _member_token(wrong_secret, "key_" + secrets.token_hex(12)))
    stranger = await _answer(gw, _member_token(wrong_secret, record.key_id))
    assert stranger == unknown
    assert stranger[1]["details"] == {"reason": "signature"}
    own = await _answer(gw, _member_token(key, record.key_id))
    assert own[0] == 401 and own[1]["details"]["reason"] != "signature"
