"""Member and caregiver tokens end to end, on both stores, with both relationship providers."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import warnings
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.issue.member_cli import member_token
from gateway.stores.base import Store
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url, gateway_command

SCORES = "/v1/users/mem_1/scores"


@pytest.fixture
async def gw(make_gateway: GatewayFactory, store: Store) -> Gateway:
    return await make_gateway(store=store)


async def signing_key(gw: Gateway, account: str = "acc_1", env: str = "live") -> tuple[str, str]:
    key, record = await gw.runtime.keys.create(account, env)
    return key, record.key_id


def sign(
    key: str,
    kid: str,
    payload: dict[str, Any],
    alg: str = "HS256",
    header: dict[str, Any] | None = None,
) -> str:
    return jwt.encode(
        payload, key.encode(), algorithm=alg, headers={"kid": kid, "typ": None, **(header or {})}
    )


def payload(gw: Gateway, **changes: Any) -> dict[str, Any]:
    now = int(gw.clock.now())
    base: dict[str, Any] = {"sub": "mem_1", "iat": now, "exp": now + 300, "scopes": []}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


async def get(gw: Gateway, token: str, path: str = SCORES) -> tuple[int, str, dict[str, Any]]:
    response = await gw.client.get(path, headers={"Authorization": f"Bearer {token}"})
    if response.status == 200:
        return 200, "ok", {}
    body = await response.json()
    return response.status, body["error"], body["details"]


async def test_the_documents_payload_examples(gw: Gateway) -> None:
    key, kid = await signing_key(gw)
    now = int(gw.clock.now())
    member = sign(key, kid, {"sub": "mem_1", "iat": now, "exp": now + 300, "scopes": []})
    assert await get(gw, member) == (200, "ok", {})
    h = gw.recorder.last.headers
    assert h["x-auth-user"] == ["mem_1"] and h["x-auth-actor"] == ["mem_1"]
    assert h["x-auth-credential"] == ["member_token"] and h["x-auth-key-id"] == [kid]
    caregiver = sign(
        key, kid, {"sub": "mem_1", "act": "mem_2", "iat": now, "exp": now + 300, "scopes": []}
    )
    status, code, details = await get(gw, caregiver)
    assert (status, code, details["reason"]) == (403, "insufficient_scope", "relationship_inactive")
    await gw.runtime.store.set_relationship("acc_1", "mem_1", "mem_2", True)
    gw.clock.advance(1.0)  # past the negative cache
    assert await get(gw, caregiver) == (200, "ok", {})
    h = gw.recorder.last.headers
    assert h["x-auth-user"] == ["mem_1"] and h["x-auth-actor"] == ["mem_2"]
    assert await get(gw, caregiver, "/v1/users/mem_2/scores") == (403, "wrong_user", {})


async def test_cli_signs_like_the_customer_library(gw: Gateway) -> None:
    key, kid = await signing_key(gw)
    out = subprocess.run(
        gateway_command(
            "tokens",
            "member",
            "--key",
            key,
            "--key-id",
            kid,
            "--sub",
            "mem_1",
            "--ttl",
            "5m",
            "--scopes",
            "scores:read",
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    token = out.stdout.strip()
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "kid": kid}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300 and claims["scopes"] == ["scores:read"]
    gw.clock.t = claims["iat"]
    assert await get(gw, token) == (200, "ok", {})


CLAIM_CASES = [
    ("exp as a string", {"exp": "9999999999"}, "claims"),
    ("exp as a float", {"exp": 1.5e9}, "claims"),
    ("exp huge", {"exp": 10**20}, "claims"),  # past year 9999: no NumericDate here
    ("exp true", {"exp": True}, "claims"),
    ("iat as a string", {"iat": "0"}, "claims"),
    ("no sub", {"sub": None}, "claims"),
    ("no iat", {"iat": None}, "claims"),
    ("no exp", {"exp": None}, "claims"),
    ("sub a number", {"sub": 42}, "claims"),
    ("sub with a slash", {"sub": "mem_1/../x"}, "claims"),
    ("act empty", {"act": ""}, "claims"),
    ("act a number", {"act": 7}, "claims"),
    ("act a list", {"act": ["mem_2"]}, "claims"),
    ("act null", {"act": "__null__"}, "claims"),
    ("scopes a string", {"scopes": "sleep:read"}, "claims"),
    ("scopes with a number", {"scopes": ["sleep:read", 3]}, "claims"),
    # RFC 6749 scope tokens only: they become X-Auth-Scopes, split on spaces by the backend.
    ("a scope with a space", {"scopes": ["sleep:read *:*"]}, "claims"),
    ("a scope with a control byte", {"scopes": ["sleep:read\u0000"]}, "claims"),
    ("a scope with a quote", {"scopes": ['sleep:"read"']}, "claims"),
    ("a scope not ASCII", {"scopes": ["sleep:l\u00e9ger"]}, "claims"),
    ("a scope too long", {"scopes": ["s" * 129]}, "claims"),
    ("an empty scope", {"scopes": [""]}, "claims"),
    ("65 scopes", {"scopes": ["sleep:read"] * 65}, "claims"),
    ("longer than 24 h", {"exp": "__iat+86401"}, "lifetime"),
    ("iat in the future", {"iat": "__now+120", "exp": "__now+300"}, "iat"),
    ("nbf in the future", {"nbf": "__now+120"}, "nbf"),
    ("exp before iat", {"exp": "__iat-1"}, "exp"),
]


@pytest.mark.parametrize(
    ("name", "changes", "reason"), CLAIM_CASES, ids=[c[0] for c in CLAIM_CASES]
)
async def test_claim_rules_are_401_never_500(
    gw: Gateway, name: str, changes: dict[str, Any], reason: str
) -> None:
    key, kid = await signing_key(gw)
    now = int(gw.clock.now())
    body = payload(gw)
    for claim, value in changes.items():
        if value is None:
            body.pop(claim, None)
        elif value == "__null__":
            body[claim] = None
        elif isinstance(value, str) and value.startswith("__"):
            base, _, delta = (
                value[2:].partition("+")
                if "+" in value
                else (value[2:].partition("-")[0], "", "-" + value.partition("-")[2])
            )
            origin = body["iat"] if base == "iat" else now
            body[claim] = origin + int(delta)
        else:
            body[claim] = value
    status, code, details = await get(gw, sign(key, kid, body))
    assert (status, code) == (401, "invalid_token"), name
    assert details["reason"] == reason, details
    assert gw.recorder.seen == []


async def test_expired_member_token(gw: Gateway) -> None:
    key, kid = await signing_key(gw)
    token = sign(key, kid, payload(gw))
    assert (await get(gw, token))[0] == 200
    gw.clock.advance(300 + 30)
    assert (await get(gw, token))[:2] == (401, "token_expired")


async def test_act_equal_to_sub_is_a_plain_member_token(gw: Gateway) -> None:
    key, kid = await signing_key(gw)
    assert (await get(gw, sign(key, kid, payload(gw, act="mem_1"))))[0] == 200
    assert gw.recorder.last.headers["x-auth-actor"] == ["mem_1"]


async def test_signing_key_must_be_active_and_the_accounts_own(gw: Gateway) -> None:
    key, kid = await signing_key(gw)
    other_key, other_kid = await signing_key(gw, "acc_2")
    # Signed with another account's key, naming this key's kid: bad signature.
    assert (await get(gw, sign(other_key, kid, payload(gw))))[:2] == (401, "invalid_token")
    # Another account's own token reaches that account's data, with that account's identity.
    assert (await get(gw, sign(other_key, other_kid, payload(gw))))[0] == 200
    assert gw.recorder.last.headers["x-auth-account"] == ["acc_2"]
    unknown = "key_" + "f" * 24
    status, code, details = await get(gw, sign(key, unknown, payload(gw)))
    # Answered like a bad signature: key ids cannot be probed (tests/functional/test_challenges.py).
    assert (status, code, details["reason"]) == (401, "invalid_token", "signature")
    token = sign(key, kid, payload(gw))
    assert (await get(gw, token))[0] == 200
    await gw.runtime.keys.revoke(kid)
    gw.clock.advance(1.0)
    status, code, details = await get(gw, token)
    assert (status, code, details["reason"]) == (401, "invalid_token", "revoked")


async def test_rotated_and_expired_keys_end_their_member_tokens(gw: Gateway) -> None:
    key, kid = await signing_key(gw)
    token = sign(key, kid, payload(gw))
    await gw.runtime.keys.rotate(kid)
    assert (await get(gw, token))[2].get("reason") == "rotated"
    key2, kid2 = await signing_key(gw)
    gw.clock.advance(90 * 86400)
    status, code, details = await get(gw, sign(key2, kid2, payload(gw)))
    assert (status, code, details["reason"]) == (401, "invalid_token", "key_expired")


@pytest.mark.parametrize("alg", ["HS384", "HS512", "none", "RS256"])
async def test_algorithms_other_than_hs256(gw: Gateway, alg: str) -> None:
    key, kid = await signing_key(gw)
    if alg in ("HS384", "HS512"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyJWT warns that a 51-byte key is short for HS512
            token = sign(key, kid, payload(gw), alg=alg)
    else:
        header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "kid": kid}).encode())
        body = base64.urlsafe_b64encode(json.dumps(payload(gw)).encode())
        token = f"{header.decode().rstrip('=')}.{body.decode().rstrip('=')}.c2ln"
    status, code, details = await get(gw, token)
    assert (status, code, details["reason"]) == (401, "invalid_token", "alg")


async def test_gateway_rs256_kid_on_a_member_token(gw: Gateway) -> None:
    key, _ = await signing_key(gw)
    token = sign(key, "rs1", payload(gw))
    status, code, _ = await get(gw, token)
    assert (status, code) == (401, "invalid_token")  # a team session from no known issuer


@pytest.mark.parametrize(
    ("scopes", "path", "allowed"),
    [
        ([], "/v1/users/mem_1/sleep", True),
        (["sleep:read"], "/v1/users/mem_1/sleep", True),
        (["sleep:read"], "/v1/users/mem_1/scores", False),
        (["*:read"], "/v1/users/mem_1/workouts", True),
        (["sleep:write"], "/v1/users/mem_1/sleep", False),
        (["profile:read"], "/v1/users/mem_1", True),
        (["sleep:*"], "/v1/users/mem_1/sleep", True),
    ],
)
async def test_scope_grammar(gw: Gateway, scopes: list[str], path: str, allowed: bool) -> None:
    key, kid = await signing_key(gw)
    status, code, _ = await get(gw, sign(key, kid, payload(gw, scopes=scopes)), path)
    assert (status == 200) is allowed
    if not allowed:
        assert (status, code) == (403, "insufficient_scope")


async def test_relationship_cache_and_revocation(gw: Gateway) -> None:
    key, kid = await signing_key(gw)
    token = sign(key, kid, payload(gw, act="mem_2"))
    await gw.runtime.store.set_relationship("acc_1", "mem_1", "mem_2", True)
    assert (await get(gw, token))[0] == 200
    await gw.runtime.store.set_relationship("acc_1", "mem_1", "mem_2", False)
    assert (await get(gw, token))[0] == 200  # cached, inside one second
    gw.clock.advance(1.0)
    assert (await get(gw, token))[:2] == (403, "insufficient_scope")


async def test_audit_names_subject_and_caregiver(gw: Gateway, log_lines: io.StringIO) -> None:
    key, kid = await signing_key(gw)
    await gw.runtime.store.set_relationship("acc_1", "mem_1", "mem_2", True)
    token = sign(key, kid, payload(gw, act="mem_2"))
    assert (await get(gw, token))[0] == 200
    audit = [
        orjson.loads(text)
        for text in log_lines.getvalue().splitlines()
        if orjson.loads(text)["logger"] == "gateway.audit"
    ]
    line = audit[-1]
    assert line["subject"] == "mem_1" and line["actor"] == "mem_2"
    assert line["credential"] == "member_token" and line["account"] == "acc_1"
    assert token not in log_lines.getvalue() and key not in log_lines.getvalue()


# --- the http relationship provider ---------------------------------------------------


class RelationshipService:
    def __init__(self) -> None:
        self.active: set[tuple[str, str, str]] = set()
        self.calls = 0
        self.broken = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/relationships/{subject}/{actor}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.broken:
            return web.Response(status=500)
        pair = (
            request.headers.get("X-Auth-Account", ""),
            request.match_info["subject"],
            request.match_info["actor"],
        )
        if pair in self.active:
            return web.json_response({"active": True})
        return web.json_response({"error": "not_found"}, status=404)


async def test_http_relationship_provider(
    make_gateway: GatewayFactory, aiohttp_server: Any, upstream: tuple[Any, TestServer]
) -> None:
    service = RelationshipService()
    server = await aiohttp_server(service.app())
    url = base_url(upstream[1])
    template = base_url(server) + "/relationships/{subject}/{actor}"
    gw = await make_gateway(
        settings=make_settings(
            url,
            relationships={
                "provider": "http",
                "url_template": template,
                "positive_ttl": "10s",
                "negative_ttl": "2s",
            },
        )
    )
    key, kid = await signing_key(gw)
    token = sign(key, kid, payload(gw, act="mem_2", exp=int(gw.clock.now()) + 3600))
    assert (await get(gw, token))[:2] == (403, "insufficient_scope")
    service.active.add(("acc_1", "mem_1", "mem_2"))
    assert (await get(gw, token))[:2] == (403, "insufficient_scope")  # negative cache
    gw.clock.advance(2)
    assert (await get(gw, token))[0] == 200
    calls = service.calls
    for _ in range(3):
        assert (await get(gw, token))[0] == 200  # positive cache
    assert service.calls == calls
    service.active.clear()
    gw.clock.advance(10)
    assert (await get(gw, token))[:2] == (403, "insufficient_scope")  # revoked upstream
    service.broken = True
    gw.clock.advance(10)
    assert (await get(gw, token))[:2] == (503, "service_unavailable")  # fail closed
    assert len(gw.recorder.seen) == 4


def test_member_token_helper_matches_the_cli_shape() -> None:
    token = member_token(
        "sk_live_" + "a" * 43, "key_" + "0" * 24, "mem_1", act="mem_2", ttl=60, now=1_655_132_531
    )
    assert jwt.decode(token, options={"verify_signature": False}) == {
        "sub": "mem_1",
        "act": "mem_2",
        "iat": 1655132531,
        "exp": 1655132591,
        "scopes": [],
    }
