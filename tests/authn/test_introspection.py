"""Opaque OAuth2 access tokens checked by RFC 7662 introspection, against a real introspection
endpoint started by the test, through the real gateway to a recording upstream."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.authn.introspection import MAX_RESPONSE_BYTES
from gateway.config import Settings
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url

CLIENT_ID, CLIENT_SECRET = "gateway", "introspection-secret-0123456789"
PATTERN = r"at_[A-Za-z0-9]{16,64}"
ACTIVE = "at_" + "a" * 32
POLICY = {
    "routes": [
        {
            "id": "scores",
            "methods": ["GET"],
            "paths": ["/v1/users/{user_id}/scores"],
            "allow": ["oauth2_token", "api_key"],
            "bind": "user_id",
            "resource": "scores",
        },
        {
            "id": "sleep",
            "methods": ["GET", "POST"],
            "paths": ["/v1/users/{user_id}/sleep"],
            "allow": ["oauth2_token"],
            "bind": "user_id",
            "resource": "sleep",
        },
    ]
}


class IntrospectionServer:
    """An RFC 7662 endpoint: client credentials required, answers from ``self.tokens``."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, str]] = []
        self.mode = "ok"  # ok | error | html | array | at_limit | oversized
        self.gate: asyncio.Event | None = None  # when set, each answer waits for it to open

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/introspect", self.introspect)
        return app

    async def introspect(self, request: web.Request) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        self.calls.append({k: str(v) for k, v in form.items()})
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "error":
            return web.json_response({"error": "server_error"}, status=500)
        if self.mode == "html":
            return web.Response(text="<html>login</html>", content_type="text/html")
        if self.mode == "array":
            return web.json_response([{"active": True}])
        if self.mode in ("at_limit", "oversized"):  # an answer padded to the limit, or one over
            found = self.tokens.get(str(form.get("token")), {"active": False})
            body = orjson.dumps({**found, "padding": ""})
            size = MAX_RESPONSE_BYTES + (self.mode == "oversized")
            body = orjson.dumps({**found, "padding": "x" * (size - len(body))})
            assert len(body) == size
            return web.Response(body=body, content_type="application/json")
        return web.json_response(self.tokens.get(str(form.get("token")), {"active": False}))


@pytest.fixture
async def idp(aiohttp_server: Any) -> tuple[IntrospectionServer, TestServer]:
    server = IntrospectionServer()
    return server, await aiohttp_server(server.app())


@pytest.fixture
async def gw(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    idp: tuple[IntrospectionServer, TestServer],
) -> Gateway:
    return await make_gateway(settings=settings_for(upstream, idp))


def settings_for(
    upstream: tuple[Any, TestServer],
    idp: tuple[IntrospectionServer, TestServer],
    pattern: str = PATTERN,
) -> Settings:
    """The test policy, and introspection at ``idp`` for tokens of ``pattern``."""
    return make_settings(
        base_url(upstream[1]),
        policy=POLICY,
        introspection={
            "url": str(idp[1].make_url("/introspect")),
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_pattern": pattern,
            "audience": "health-api",
        },
    )


def answer(gw: Gateway, **changes: Any) -> dict[str, Any]:
    now = int(gw.clock.now())
    base: dict[str, Any] = {
        "active": True,
        "sub": "usr_a",
        "account": "acc_1",
        "scope": "scores:read sleep:read",
        "client_id": "mobile-app",
        "exp": now + 600,
        "aud": ["health-api"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


async def call(
    gw: Gateway, token: str, path: str = "/v1/users/usr_a/scores", method: str = "GET"
) -> Any:
    response = await gw.client.request(method, path, headers={"Authorization": f"Bearer {token}"})
    return response.status, await response.json()


@pytest.mark.parametrize(
    "kind",
    [
        {},
        {"token_type": "Bearer"},
        {"token_type": "access_token"},
        {"token_use": "access_token"},
        {"typ": "Bearer"},
        {"scope": " scores:read  sleep:read "},  # runs of spaces are tolerated
    ],
)
async def test_an_active_token_reaches_its_users_data_with_its_identity(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer], kind: dict[str, str]
) -> None:
    server, _ = idp
    server.tokens[ACTIVE] = answer(gw, **kind)
    status, _ = await call(gw, ACTIVE)
    assert status == 200
    headers = gw.recorder.last.headers
    assert headers["x-auth-credential"] == ["oauth2_token"]
    assert headers["x-auth-user"] == ["usr_a"] and headers["x-auth-account"] == ["acc_1"]
    assert headers["x-auth-scopes"] == ["scores:read sleep:read"]
    assert "authorization" not in headers
    # RFC 7662 §2.1: the token and its type hint, posted with the gateway's client credentials.
    assert server.calls == [{"token": ACTIVE, "token_type_hint": "access_token"}]


@pytest.mark.parametrize(
    ("changes", "path", "method", "status", "error"),
    [
        ({}, "/v1/users/usr_b/scores", "GET", 403, "wrong_user"),
        ({}, "/v1/users/usr_a/sleep", "POST", 403, "insufficient_scope"),  # sleep:read only
        ({"scope": "sleep:read"}, "/v1/users/usr_a/scores", "GET", 403, "insufficient_scope"),
        ({"scope": None}, "/v1/users/usr_a/scores", "GET", 403, "insufficient_scope"),
        ({"scope": ""}, "/v1/users/usr_a/scores", "GET", 403, "insufficient_scope"),
        ({"active": False}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"active": "true"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"active": 1}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"exp": 1}, "/v1/users/usr_a/scores", "GET", 401, "token_expired"),
        ({"exp": "soon"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"nbf": int(time.time()) + 3600}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"aud": "another-api"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"sub": None}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"sub": "usr_a\n"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"account": None}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"scope": ["scores:read"]}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        # Scopes are RFC 6749 scope tokens separated by single spaces (a hostile try-out: a NUL
        # was a 500 on the decision listener, other control bytes reached X-Auth-Scopes, and
        # any Unicode space split "custom\u00a0*:*" into a "*:*" that allowed everything).
        ({"scope": "scores:read x\u0000y"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"scope": "scores:read x\u0001\u007fy"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),  # noqa: E501
        ({"scope": "custom\u00a0*:*"}, "/v1/users/usr_a/sleep", "GET", 401, "invalid_token"),
        ({"scope": "custom\u001f*:*"}, "/v1/users/usr_a/sleep", "GET", 401, "invalid_token"),
        ({"scope": "custom\t*:*"}, "/v1/users/usr_a/sleep", "GET", 401, "invalid_token"),
        ({"scope": 'scores:read "x"'}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"scope": "scores:read " + "a" * 60_000}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),  # noqa: E501
        ({"scope": " ".join(["scores:read"] * 65)}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),  # noqa: E501
        ({"exp": 2**62}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),  # past year 9999
        ({"token_use": "refresh_token"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"token_type": "refresh_token"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"token_type": "Refresh"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"typ": "Refresh"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),  # Keycloak
        ({"typ": "Offline"}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
        ({"nbf": -1}, "/v1/users/usr_a/scores", "GET", 401, "invalid_token"),
    ],
)  # fmt: skip
async def test_what_the_answer_and_the_policy_refuse(
    gw: Gateway,
    idp: tuple[IntrospectionServer, TestServer],
    changes: dict[str, Any],
    path: str,
    method: str,
    status: int,
    error: str,
) -> None:
    idp[0].tokens[ACTIVE] = answer(gw, **changes)
    got_status, body = await call(gw, ACTIVE, path, method)
    assert (got_status, body["error"]) == (status, error)
    assert gw.recorder.seen == []


@pytest.mark.parametrize("mode", ["error", "html", "array", "oversized"])
async def test_a_failing_endpoint_fails_closed(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer], mode: str
) -> None:
    idp[0].tokens[ACTIVE] = answer(gw)
    idp[0].mode = mode
    status, body = await call(gw, ACTIVE)
    assert (status, body["error"], body["details"]) == (
        503,
        "service_unavailable",
        {"reason": "introspection"},
    )
    assert gw.recorder.seen == []


async def test_an_answer_of_exactly_the_size_limit_is_read(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer]
) -> None:
    idp[0].tokens[ACTIVE] = answer(gw)
    idp[0].mode = "at_limit"
    assert (await call(gw, ACTIVE))[0] == 200
    assert gw.recorder.last.headers["x-auth-user"] == ["usr_a"]


async def test_an_endpoint_that_is_down_fails_closed(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    from tests.support import free_port

    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            policy=POLICY,
            introspection={
                "url": f"http://127.0.0.1:{free_port()}/introspect",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "token_pattern": PATTERN,
            },
        )
    )
    status, body = await call(gw, ACTIVE)
    assert (status, body["error"]) == (503, "service_unavailable")
    assert gw.recorder.seen == []


async def test_wrong_client_credentials_fail_closed(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    idp: tuple[IntrospectionServer, TestServer],
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            policy=POLICY,
            introspection={
                "url": str(idp[1].make_url("/introspect")),
                "client_id": CLIENT_ID,
                "client_secret": "not-the-secret-0123456789",
                "token_pattern": PATTERN,
            },
        )
    )
    idp[0].tokens[ACTIVE] = answer(gw)
    assert (await call(gw, ACTIVE))[0] == 503


async def test_answers_are_cached_at_most_cache_ttl_and_never_past_exp(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer]
) -> None:
    server, _ = idp
    server.tokens[ACTIVE] = answer(gw, exp=int(gw.clock.now()) + 5)
    for _ in range(3):
        assert (await call(gw, ACTIVE))[0] == 200
    assert len(server.calls) == 1  # cached
    gw.clock.advance(1.0)  # the default cache_ttl: asked again (revocation bound)
    server.tokens[ACTIVE] = answer(gw, active=False)
    assert (await call(gw, ACTIVE))[0] == 401
    assert len(server.calls) == 2
    server.tokens[ACTIVE] = answer(gw, exp=int(gw.clock.now()) + 5)
    gw.clock.advance(1.0)
    assert (await call(gw, ACTIVE))[0] == 200
    gw.clock.advance(5.0)  # past exp, whatever was cached
    assert (await call(gw, ACTIVE))[0] == 401


async def test_only_tokens_of_the_configured_shape_are_introspected(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer]
) -> None:
    status, body = await call(gw, "other_" + "a" * 32)
    assert (status, body["details"]["reason"]) == (401, "malformed")
    # An API key is still an API key: its shape is claimed before any configured pattern.
    key = await gw.key()
    assert (await call(gw, key))[0] == 200
    assert idp[0].calls == []


LONG_JWS_ONLY = "eyJ[A-Za-z0-9_.-]{5000,6000}"


async def test_a_jws_is_never_posted_for_introspection_whatever_the_pattern(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    idp: tuple[IntrospectionServer, TestServer],
) -> None:
    """check-config refuses a pattern that takes the JWS shapes it knows; one that takes only
    longer ones still never sends a JWS to the introspection endpoint at run time."""
    gw = await make_gateway(settings=settings_for(upstream, idp, LONG_JWS_ONLY))
    header = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImlkcC0xIn0"  # {"alg":"RS256","kid":"idp-1"}
    token = f"{header}.{'a' * 4000}.{'b' * 1000}"
    assert re.fullmatch(LONG_JWS_ONLY, token)
    idp[0].tokens[token] = answer(gw)
    status, _ = await call(gw, token)
    assert status == 401
    assert idp[0].calls == []


async def test_the_kind_is_off_without_its_section(gateway: Gateway) -> None:
    status, body = await call(gateway, ACTIVE)
    assert (status, body["details"]["reason"]) == (401, "malformed")


@pytest.mark.parametrize(
    "pattern",
    [
        "sk_[a-z]+_[A-Za-z0-9]+",
        "sk_sandbox_[A-Za-z0-9]+",
        "mt_[A-Za-z0-9]+",
        "eyJhbGciOiJFUzI1NiIs[A-Za-z0-9_.-]+",  # ES256 team sessions (the review's example)
        # Each of these takes one JWS shape only, so each sample the check holds is needed:
        "eyJhbGciOiJSUzI1NiIsInR5cCI6[A-Za-z0-9_.-]+",  # RS256 gateway tokens (typ first)
        "eyJhbGciOiJIUzI1NiIs[A-Za-z0-9_.-]+",  # HS256 member tokens
        "ICB7[A-Za-z0-9_.-]+",  # a JOSE header with leading whitespace ('  {"alg"...')
        r"[a-z]+\.[a-z]+\.[a-z]+",  # the shortest JWS shape, two characters a segment
        "[A-Za-z0-9_.-]+",
        "[^ ]+",
        "[A-Za-z0-9_.-]{200,4096}",  # long JWTs only (a hostile try-out: it passed the check)
        "[A-Za-z0-9_.-]{600,1000}",  # a team session's length only
        "[A-Za-z0-9_.-]{3000,5000}",  # an identity provider's several-kilobyte tokens only
    ],
)
def test_a_pattern_that_takes_another_kinds_tokens_is_a_config_error(pattern: str) -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"^introspection\.token_pattern: also matches"):
        make_settings(
            "http://127.0.0.1:9",
            introspection={
                "url": "https://auth.example.com/introspect",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "token_pattern": pattern,
            },
        )


async def test_an_opaque_token_sent_as_the_request_id_is_never_echoed_or_logged(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer], log_lines: Any
) -> None:
    idp[0].tokens[ACTIVE] = answer(gw)
    response = await gw.client.get(
        "/v1/users/usr_a/scores",
        headers={"Authorization": f"Bearer {ACTIVE}", "X-Request-Id": ACTIVE},
    )
    assert response.status == 200
    assert response.headers["X-Request-Id"] != ACTIVE
    assert gw.recorder.last.headers["x-request-id"] != [ACTIVE]
    assert ACTIVE not in log_lines.getvalue()


async def test_someone_elses_opaque_token_sent_as_the_request_id_is_replaced(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer], log_lines: Any
) -> None:
    """The request authenticates with an API key; the request id is an OAuth2 token of the
    configured shape (a hostile try-out: it was echoed and logged, only the request's own
    credential was recognized)."""
    other = "at_" + "z" * 40
    key = await gw.key()
    response = await gw.client.get(
        "/v1/users/usr_a/scores", headers={"Authorization": f"Bearer {key}", "X-Request-Id": other}
    )
    assert response.status == 200
    assert response.headers["X-Request-Id"] != other
    assert gw.recorder.last.headers["x-request-id"] != [other]
    assert other not in log_lines.getvalue()
    kept = await gw.client.get(
        "/v1/users/usr_a/scores", headers={"Authorization": f"Bearer {key}", "X-Request-Id": "r-1"}
    )
    assert kept.headers["X-Request-Id"] == "r-1"


@pytest.mark.parametrize(("mode", "status"), [("active", 200), ("ok", 401), ("error", 503)])
async def test_concurrent_requests_with_one_token_make_one_call(
    gw: Gateway, idp: tuple[IntrospectionServer, TestServer], mode: str, status: int
) -> None:
    """A hostile try-out: 50 concurrent requests with one unknown token made 50 calls. They
    now share one, and its verdict (a refusal, or the endpoint's failure)."""
    server = idp[0]
    server.mode, server.gate = ("ok" if mode == "active" else mode), asyncio.Event()
    unknown = "at_" + "u" * 40
    if mode == "active":
        server.tokens[unknown] = answer(gw)  # a verdict that admits is shared as well
    requests = [asyncio.ensure_future(call(gw, unknown)) for _ in range(30)]
    for _ in range(200):
        if server.calls:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # every request has reached the gateway and waits
    server.gate.set()
    statuses = [got for got, _ in await asyncio.gather(*requests)]
    assert statuses == [status] * 30
    assert len(server.calls) == 1
