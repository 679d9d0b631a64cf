"""User tokens, mobile tokens and SDK sessions end to end, with the token doc's requests.

The upstream is the bundled sandbox backend, which knows which users belong to which account.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestServer

from gateway.demo.backend import create_backend
from gateway.keys.signing import SigningKey
from gateway.stores.base import Store
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url, signing_config

USERS = {"usr_abc123": "acc_1", "usr_other": "acc_1", "usr_foreign": "acc_2"}
DATA = ("scores", "daily", "sleep", "workouts", "timeseries", "devices")


@pytest.fixture
async def backend(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(create_backend(USERS))
    return server


@pytest.fixture
async def doc(make_gateway: GatewayFactory, backend: TestServer, store: Store) -> Gateway:
    url = base_url(backend)
    return await make_gateway(settings=make_settings(url, url), store=store)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def user_token(gw: Gateway, key: str, user: str = "usr_abc123") -> str:
    response = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": user}, headers=bearer(key)
    )
    assert response.status == 200, await response.text()
    token: str = (await response.json())["token"]
    return token


async def error_of(response: Any) -> tuple[int, str, dict[str, Any]]:
    body = await response.json()
    return response.status, body["error"], body


# --- the token doc's examples ------------------------------------------------------------


async def test_doc_user_token_flow(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    # Backend — authenticated with API key
    response = await doc.client.get("/v1/users/usr_abc123/scores", headers=bearer(key))
    assert response.status == 200
    response = await doc.client.post(
        "/v1/auth/user-token", headers=bearer(key), json={"user_id": "usr_abc123"}
    )
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"token", "user_id", "expires_at"}
    assert body["user_id"] == "usr_abc123"
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires.timestamp() - (doc.clock.now() + 3600)) <= 1
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "RS256" and header["kid"] == "rs1"
    # Frontend — the token is used exactly like an API key
    for resource in DATA:
        response = await doc.client.get(
            f"/v1/users/usr_abc123/{resource}", headers=bearer(body["token"])
        )
        assert response.status == 200, resource
        # The bundled backend answers with a user's data only when the gateway's X-Auth-Account
        # names that user's account (else 404): the token reached it as acc_1's usr_abc123.
        assert (await response.json())["user_id"] == "usr_abc123", resource
    # Refresh before expiry
    response = await doc.client.post(
        "/v1/auth/user-token/refresh", headers=bearer(key), json={"user_id": "usr_abc123"}
    )
    assert response.status == 200
    assert (await response.json())["token"] != body["token"]


async def test_doc_user_token_limits(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    token = await user_token(doc, key)
    status, code, body = await error_of(
        await doc.client.get("/v1/users/usr_other/scores", headers=bearer(token))
    )
    assert (status, code) == (403, "wrong_user")
    assert body["message"] == "This token can only access data for user usr_abc123."
    assert body["details"] == {}
    for method, path in (
        ("POST", "/v1/users"),
        ("DELETE", "/v1/users/usr_abc123"),
        ("GET", "/v1/users/usr_abc123"),
        ("POST", "/v1/webhooks"),
        ("POST", "/v1/auth/user-token"),
        ("POST", "/v1/auth/mobile-token"),
    ):
        response = await doc.client.request(
            method, path, headers=bearer(token), json={"user_id": "usr_abc123"}
        )
        assert (await error_of(response))[:2] == (403, "insufficient_scope"), (method, path)
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_doc_mobile_token_flow(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    response = await doc.client.post(
        "/v1/auth/mobile-token",
        headers=bearer(key),
        json={"user_id": "usr_abc123", "scopes": ["activity", "sleep", "vitals"]},
    )
    assert response.status == 200
    body = await response.json()
    assert body["token"].startswith("mt_") and body["user_id"] == "usr_abc123"
    assert body["scopes"] == ["activity", "sleep", "vitals"]
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires.timestamp() - (doc.clock.now() + 300)) <= 1
    mt = body["token"]
    response = await doc.client.post("/v1/sdk/initialize", headers=bearer(mt))
    assert response.status == 200
    session = await response.json()
    assert set(session) == {"session_token", "user_id", "scopes", "expires_at"}
    assert session["user_id"] == "usr_abc123"
    # The token is consumed and cannot be reused.
    status, code, again = await error_of(
        await doc.client.post("/v1/sdk/initialize", headers=bearer(mt))
    )
    assert (status, code) == (401, "invalid_token")
    assert again["details"]["reason"] == "used"
    assert "Generate a fresh one" in again["message"]


async def test_mobile_token_default_scopes_and_validation(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    response = await doc.client.post(
        "/v1/auth/mobile-token", headers=bearer(key), json={"user_id": "usr_abc123"}
    )
    assert (await response.json())["scopes"] == ["activity", "sleep", "vitals"]
    for scopes in (["steps"], [], "sleep", [1], ["sleep", "admin"]):
        response = await doc.client.post(
            "/v1/auth/mobile-token",
            headers=bearer(key),
            json={"user_id": "usr_abc123", "scopes": scopes},
        )
        status, code, body = await error_of(response)
        assert (status, code) == (400, "invalid_request"), scopes
        assert body["details"]["field"] == "scopes"


async def test_expired_and_unknown_mobile_tokens(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    response = await doc.client.post(
        "/v1/auth/mobile-token", headers=bearer(key), json={"user_id": "usr_abc123"}
    )
    mt = (await response.json())["token"]
    doc.clock.advance(300)
    status, code, body = await error_of(
        await doc.client.post("/v1/sdk/initialize", headers=bearer(mt))
    )
    assert (status, code, body["details"]["reason"]) == (401, "invalid_token", "expired")
    assert "Generate a fresh one" in body["message"]
    status, code, body = await error_of(
        await doc.client.post("/v1/sdk/initialize", headers=bearer("mt_" + "x" * 43))
    )
    assert (status, code, body["details"]["reason"]) == (401, "invalid_token", "unknown")


async def test_mobile_token_elsewhere_is_403_and_not_consumed(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    response = await doc.client.post(
        "/v1/auth/mobile-token",
        headers=bearer(key),
        json={"user_id": "usr_abc123", "scopes": ["sleep"]},
    )
    mt = (await response.json())["token"]
    for method, path in (
        ("GET", "/v1/users/usr_abc123/scores"),
        ("GET", "/v1/sdk/config"),
        ("POST", "/v1/sdk/sync/sleep"),
        ("POST", "/v1/auth/user-token"),
    ):
        response = await doc.client.request(method, path, headers=bearer(mt))
        status, code, body = await error_of(response)
        assert (status, code) == (403, "insufficient_scope"), path
        assert "initialize the SDK" in body["message"]
    response = await doc.client.post("/v1/sdk/initialize", headers=bearer(mt))
    assert response.status == 200
    session = (await response.json())["session_token"]
    # The SDK session reaches its sync routes for its scopes only.
    response = await doc.client.get("/v1/sdk/config", headers=bearer(session))
    assert response.status == 200
    assert (await response.json()) == {
        "user_id": "usr_abc123",
        "scopes": ["sleep"],
        "sync_interval_minutes": 15,
    }
    response = await doc.client.post("/v1/sdk/sync/sleep", headers=bearer(session), data=b"{}")
    assert response.status == 202
    response = await doc.client.post("/v1/sdk/sync/vitals", headers=bearer(session))
    assert (await error_of(response))[:2] == (403, "insufficient_scope")
    response = await doc.client.get("/v1/users/usr_abc123/scores", headers=bearer(session))
    assert (await error_of(response))[:2] == (403, "insufficient_scope")


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": ""},
        {"user_id": "/"},
        {"user_id": ".."},
        {"user_id": "usr/../x"},
        {"user_id": "usr\x00"},
        {"user_id": "usr\r\nx"},
        {"user_id": "u" * 129},
        {"user_id": 123},
        {"user_id": None},
        {},
        [],
        "usr_abc123",
    ],
)
async def test_bad_user_ids_are_400(doc: Gateway, body: Any) -> None:
    key = await doc.key("acc_1", "live")
    for path in ("/v1/auth/user-token", "/v1/auth/mobile-token"):
        response = await doc.client.post(path, headers=bearer(key), json=body)
        assert (await error_of(response))[:2] == (400, "invalid_request")


async def test_body_that_is_not_json_is_400(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    response = await doc.client.post(
        "/v1/auth/user-token", headers=bearer(key), data=b"user_id=usr_abc123"
    )
    assert (await error_of(response))[:2] == (400, "invalid_request")


@pytest.mark.parametrize("user", ["usr_foreign", "usr_nobody"])
async def test_users_outside_the_account_are_404(doc: Gateway, user: str) -> None:
    key = await doc.key("acc_1", "live")
    for path in ("/v1/auth/user-token", "/v1/auth/mobile-token"):
        response = await doc.client.post(path, headers=bearer(key), json={"user_id": user})
        assert (await error_of(response))[:2] == (404, "user_not_found")


async def test_only_api_keys_issue_tokens(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    token = await user_token(doc, key)
    response = await doc.client.post(
        "/v1/auth/user-token/refresh", headers=bearer(token), json={"user_id": "usr_abc123"}
    )
    assert (await error_of(response))[:2] == (403, "insufficient_scope")


async def test_expired_user_token(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    token = await user_token(doc, key)
    doc.clock.advance(3600 + 29)  # inside the 30 s leeway
    assert (
        await doc.client.get("/v1/users/usr_abc123/scores", headers=bearer(token))
    ).status == 200
    doc.clock.advance(1)
    response = await doc.client.get("/v1/users/usr_abc123/scores", headers=bearer(token))
    assert (await error_of(response))[:2] == (401, "token_expired")


async def test_revoking_the_key_ends_its_tokens_rotating_does_not(doc: Gateway) -> None:
    key, record = await doc.runtime.keys.create("acc_1", "live")
    other, other_record = await doc.runtime.keys.create("acc_1", "live")
    revoked_token, rotated_token = await user_token(doc, key), await user_token(doc, other)
    await doc.runtime.keys.revoke(record.key_id)
    await doc.runtime.keys.rotate(other_record.key_id)
    doc.clock.advance(1)
    response = await doc.client.get("/v1/users/usr_abc123/scores", headers=bearer(revoked_token))
    status, code, body = await error_of(response)
    assert (status, code, body["details"]["reason"]) == (401, "invalid_token", "key_revoked")
    response = await doc.client.get("/v1/users/usr_abc123/scores", headers=bearer(rotated_token))
    assert response.status == 200


async def derived_tokens(gw: Gateway, key: str) -> dict[str, tuple[str, str]]:
    """Every token a key issues, each with the request that uses it: a user token, an SDK
    session (through a mobile token) and a mobile token not yet used."""
    user = await user_token(gw, key)
    minted = await gw.client.post(
        "/v1/auth/mobile-token", headers=bearer(key), json={"user_id": "usr_abc123"}
    )
    mt = (await minted.json())["token"]
    initialized = await gw.client.post("/v1/sdk/initialize", headers=bearer(mt))
    session = (await initialized.json())["session_token"]
    minted = await gw.client.post(
        "/v1/auth/mobile-token", headers=bearer(key), json={"user_id": "usr_abc123"}
    )
    unused = (await minted.json())["token"]
    return {
        "user token": (user, "/v1/users/usr_abc123/scores"),
        "SDK session": (session, "/v1/sdk/config"),
        "mobile token": (unused, "/v1/sdk/initialize"),
    }


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ("revoked", "key_revoked"),
        ("revoked during its rotation's grace period", "key_revoked"),
        ("revoked after a rotation replaced it", "key_revoked"),
        ("past its lifetime", "key_expired"),
    ],
)
async def test_every_token_of_a_key_ends_with_it(doc: Gateway, ending: str, reason: str) -> None:
    """A key that leaked is revoked whatever else was done with it, and a key's lifetime ends
    in its automatic revocation: the user tokens, SDK sessions and mobile tokens it issued stop
    within the revocation bound (a rotation alone lets them live out their short lifetime)."""
    # A lifetime shorter than a mobile token's five minutes, so all three outlive the key.
    key, record = await doc.runtime.keys.create("acc_1", "live", lifetime=120)
    tokens = await derived_tokens(doc, key)
    if ending == "revoked":
        await doc.runtime.keys.revoke(record.key_id)
    elif ending == "revoked during its rotation's grace period":
        await doc.runtime.keys.rotate(record.key_id, grace=60)
        await doc.runtime.keys.revoke(record.key_id)
    elif ending == "revoked after a rotation replaced it":
        await doc.runtime.keys.rotate(record.key_id)
        doc.clock.advance(1)
        await doc.runtime.keys.revoke(record.key_id)
    else:
        doc.clock.advance(120)
    doc.clock.advance(1)  # the revocation bound
    for kind, (token, path) in tokens.items():
        method = "POST" if path == "/v1/sdk/initialize" else "GET"
        response = await doc.client.request(method, path, headers=bearer(token))
        status, code, body = await error_of(response)
        assert (status, code, body["details"]["reason"]) == (401, "invalid_token", reason), kind
    key_itself = await doc.client.get("/v1/users/usr_abc123/scores", headers=bearer(key))
    assert key_itself.status == 401
    reason_of_key = (await key_itself.json())["details"]["reason"]
    assert reason_of_key == ("expired" if ending == "past its lifetime" else "revoked")


async def test_user_token_identity_headers(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    key, record = await gw.runtime.keys.create("acc_1", "sandbox")
    token = await user_token(gw, key)
    response = await gw.client.get("/v1/users/usr_abc123/sleep", headers=bearer(token))
    assert response.status == 200
    h = gw.recorder.last.headers
    assert h["x-auth-user"] == ["usr_abc123"] and h["x-auth-actor"] == ["usr_abc123"]
    assert h["x-auth-credential"] == ["user_token"] and h["x-auth-environment"] == ["sandbox"]
    assert h["x-auth-key-id"] == [record.key_id] and h["x-auth-account"] == ["acc_1"]


async def test_repeated_tokens_hit_the_verification_cache(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    token = await user_token(gw, await gw.key())
    cache = gw.runtime.authenticators.authenticator("user_token").cache  # type: ignore[union-attr]
    before = cache.hits
    for days in range(5):  # five request lines: five decisions, one signature check
        response = await gw.client.get(
            f"/v1/users/usr_abc123/scores?days={days}", headers=bearer(token)
        )
        assert response.status == 200
    assert cache.hits - before == 4


# --- forged, confused and tampered tokens ----------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(gw: Gateway, **extra: Any) -> dict[str, Any]:
    now = int(gw.clock.now())
    base = {
        "iss": "health-gateway",
        "aud": "health-api",
        "sub": "usr_abc123",
        "acc": "acc_1",
        "env": "live",
        "kid": "key_" + "0" * 24,
        "tkn": "user",
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
    }
    base.update(extra)
    return base


def signer(gw: Gateway) -> SigningKey:
    return gw.runtime.tokens.keys.active


async def scores_status(gw: Gateway, token: str) -> tuple[int, str]:
    response = await gw.client.get("/v1/users/usr_abc123/scores", headers=bearer(token))
    body = await response.json() if response.status != 200 else {"error": "ok"}
    return response.status, body["error"]


@pytest.mark.parametrize(
    ("typ", "tkn", "accepted"),
    [
        ("gw-user+jwt", "user", True),
        ("gw-user+jwt", "sdk", False),
        ("gw-sdk+jwt", "user", False),
        ("gw-user+jwt", None, False),
        ("gw-assertion+jwt", "user", False),
        ("JWT", "user", False),
        (None, "user", False),
    ],
)
async def test_type_confusion_between_gateway_tokens(
    make_gateway: GatewayFactory, typ: str | None, tkn: str | None, accepted: bool
) -> None:
    gw = await make_gateway()
    _, record = await gw.runtime.keys.create("acc_1", "live")
    key = signer(gw)
    payload = claims(gw, kid=record.key_id, tkn=tkn)
    headers: dict[str, Any] = {"kid": key.kid}
    if typ is not None:
        headers["typ"] = typ
    token = jwt.encode(
        {k: v for k, v in payload.items() if v is not None},
        key.private,
        algorithm="RS256",
        headers=headers,
    )
    status, _ = await scores_status(gw, token)
    assert (status == 200) is accepted
    if not accepted:
        assert status in (401, 403)
    assert len(gw.recorder.seen) == (1 if accepted else 0)


async def test_sdk_session_is_not_a_user_token(doc: Gateway) -> None:
    key = await doc.key("acc_1", "live")
    response = await doc.client.post(
        "/v1/auth/mobile-token", headers=bearer(key), json={"user_id": "usr_abc123"}
    )
    mt = (await response.json())["token"]
    session = await (await doc.client.post("/v1/sdk/initialize", headers=bearer(mt))).json()
    assert (await scores_status(doc, session["session_token"]))[0] == 403
    user = await user_token(doc, key)
    response = await doc.client.get("/v1/sdk/config", headers=bearer(user))
    assert response.status == 403


async def test_alg_confusion_and_none(make_gateway: GatewayFactory) -> None:
    from cryptography.hazmat.primitives import serialization

    gw = await make_gateway()
    _, record = await gw.runtime.keys.create("acc_1", "live")
    key = signer(gw)
    payload = json.dumps(claims(gw, kid=record.key_id)).encode()
    pem = key.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for alg, secret in (("HS256", pem), ("HS256", pem.strip()), ("HS512", pem)):
        header = json.dumps({"alg": alg, "typ": "gw-user+jwt", "kid": key.kid}).encode()
        signing_input = f"{b64(header)}.{b64(payload)}"
        digest = hashlib.sha512 if alg == "HS512" else hashlib.sha256
        sig = hmac.new(secret, signing_input.encode(), digest).digest()
        assert await scores_status(gw, f"{signing_input}.{b64(sig)}") == (401, "invalid_token")
    for none in ("none", "None", "NONE", "nOnE"):
        header = json.dumps({"alg": none, "typ": "gw-user+jwt", "kid": key.kid}).encode()
        for tail in ("", "AA", b64(b"\x00" * 32)):
            token = f"{b64(header)}.{b64(payload)}.{tail}"
            assert await scores_status(gw, token) == (401, "invalid_token")
    assert gw.recorder.seen == []


async def test_tampered_tokens(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    token = await user_token(gw, await gw.key())
    head, body, sig = token.split(".")
    other_claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    other_claims["sub"] = "usr_other"
    forged = f"{head}.{b64(json.dumps(other_claims).encode())}.{sig}"
    assert await scores_status(gw, forged) == (401, "invalid_token")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert await scores_status(gw, f"{head}.{body}.{flipped}") == (401, "invalid_token")
    assert await scores_status(gw, token + "=") == (401, "invalid_token")
    assert (await scores_status(gw, token))[0] == 200


@pytest.mark.parametrize(("new_kid", "new_alg"), [("es1", "ES256"), ("ed1", "EdDSA")])
async def test_key_rotation_keeps_old_tokens_valid(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], new_kid: str, new_alg: str
) -> None:
    url = base_url(upstream[1])
    before = await make_gateway(
        settings=make_settings(url, tokens=signing_config("rs1", ("rs1", new_kid)))
    )
    key = await before.key()
    old = await user_token(before, key)
    after = await make_gateway(
        settings=make_settings(url, tokens=signing_config(new_kid, ("rs1", new_kid))),
        store=before.runtime.store,
    )
    new = await user_token(after, key)
    assert jwt.get_unverified_header(new)["alg"] == new_alg
    assert (await scores_status(after, old))[0] == 200
    assert (await scores_status(after, new))[0] == 200
    jwks = await (await after.client.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {"rs1", new_kid}
    assert all("d" not in k for k in jwks["keys"])  # public parts only
    # An upstream can verify a gateway token with the published JWKS alone.
    for token in (old, new):
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
        verified = jwt.decode(
            token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]], audience="health-api"
        )
        assert verified["sub"] == "usr_abc123"
    # Retiring rs1 ends the tokens it signed.
    retired = await make_gateway(
        settings=make_settings(url, tokens=signing_config(new_kid, (new_kid,))),
        store=before.runtime.store,
    )
    assert await scores_status(retired, old) == (401, "invalid_token")
