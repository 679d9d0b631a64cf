"""Token issuance refuses everything but an API key, and asks a backend that may be failing.

Two guards stand before a token is minted: the issuance endpoints only ever serve an API key
(even under a policy edited to admit other credentials there), and the user must be confirmed as
a member of the key's account by the backend, where anything but a clear yes or no is an
upstream failure, never a yes. A third test drives an unexpected exception through a real
request: the client gets the gateway's JSON 500 and nothing of the exception.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_admin_app
from gateway.pipeline import ENDPOINTS
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.functional.test_team_sessions import AUDIENCE, ISSUER, IdentityProvider
from tests.support import base_url, free_port

ISSUANCE = ("/v1/auth/user-token", "/v1/auth/user-token/refresh", "/v1/auth/mobile-token")
EVERYONE = ["api_key", "user_token", "member_token", "sdk_session", "team_session"]
# The default policy with the issuance routes opened to every credential kind: the endpoints
# themselves must still refuse all but an API key.
OPEN_POLICY = {
    "routes": [
        {
            "id": "user-token",
            "methods": ["POST"],
            "paths": ["/v1/auth/user-token"],
            "allow": EVERYONE,
            "handler": "user_token",
        },
        {
            "id": "user-token-refresh",
            "methods": ["POST"],
            "paths": ["/v1/auth/user-token/refresh"],
            "allow": EVERYONE,
            "handler": "user_token_refresh",
        },
        {
            "id": "mobile-token",
            "methods": ["POST"],
            "paths": ["/v1/auth/mobile-token"],
            "allow": EVERYONE,
            "handler": "mobile_token",
        },
        {
            "id": "sdk-initialize",
            "methods": ["POST"],
            "paths": ["/v1/sdk/initialize"],
            "allow": ["mobile_token"],
            "handler": "sdk_initialize",
        },
    ]
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def idp(aiohttp_server: Any) -> tuple[IdentityProvider, TestServer]:
    provider = IdentityProvider()
    return provider, await aiohttp_server(provider.app())


@pytest.fixture
async def open_gw(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    idp: tuple[IdentityProvider, TestServer],
) -> Gateway:
    url = base_url(upstream[1])
    return await make_gateway(
        settings=make_settings(
            url,
            policy=OPEN_POLICY,
            identity_providers=[
                {
                    "name": "corp",
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_url": str(idp[1].make_url("/.well-known/jwks.json")),
                    "account_claim": "account",
                    "actor_claim": "sub",
                }
            ],
        )
    )


async def other_credentials(gw: Gateway, idp: IdentityProvider) -> dict[str, str]:
    """One credential of every kind but an API key, each for acc_1's usr_a (or its person)."""
    key, record = await gw.runtime.keys.create("acc_1", "live")
    user = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(key)
    )
    mobile = await gw.client.post(
        "/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=bearer(key)
    )
    mobile_token = (await mobile.json())["token"]
    session = await gw.client.post("/v1/sdk/initialize", headers=bearer(mobile_token))
    now = int(gw.clock.now())
    claims = {"sub": "usr_a", "iat": now, "exp": now + 300, "scopes": []}
    await gw.runtime.store.set_relationship("acc_1", "usr_a", "usr_c", True)
    return {
        "user_token": (await user.json())["token"],
        "sdk_session": (await session.json())["session_token"],
        "member_token": jwt.encode(claims, key.encode(), "HS256", headers={"kid": record.key_id}),
        "caregiver_token": jwt.encode(
            {**claims, "act": "usr_c"}, key.encode(), "HS256", headers={"kid": record.key_id}
        ),
        "team_session": idp.token(now=now),
    }


@pytest.mark.parametrize("path", ISSUANCE)
async def test_only_an_api_key_issues_tokens_whatever_the_policy_admits(
    open_gw: Gateway, idp: tuple[IdentityProvider, TestServer], path: str
) -> None:
    credentials = await other_credentials(open_gw, idp[0])
    for kind, credential in credentials.items():
        # Each one is valid: it reads its own user's data.
        probe = await open_gw.client.get("/v1/users/usr_a/scores", headers=bearer(credential))
        assert probe.status in (200, 404), (kind, await probe.text())  # 404: route not opened
        asked = len(open_gw.recorder.seen)
        # ...but cannot mint a token, for its own user or for another one.
        for user in ("usr_a", "usr_b"):
            response = await open_gw.client.post(
                path, json={"user_id": user}, headers=bearer(credential)
            )
            body = await response.json()
            assert (response.status, body["error"]) == (403, "insufficient_scope"), (kind, body)
            assert body["details"] == {"reason": "credential_kind"}, kind
            assert "token" not in body
        assert len(open_gw.recorder.seen) == asked, kind  # not even the membership question
    # An API key still does (the control: the open policy itself works).
    key = await open_gw.key()
    response = await open_gw.client.post(path, json={"user_id": "usr_b"}, headers=bearer(key))
    assert response.status == 200 and (await response.json())["token"]


# --- the membership question, against a backend that fails ------------------------------------


class Backend:
    """Answers ``GET /v1/users/{id}`` the way the test says: a status, a stall, a reset."""

    def __init__(self) -> None:
        self.mode: Any = 200
        self.asked = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/users/{user_id}", self.user)
        return app

    async def user(self, request: web.Request) -> web.StreamResponse:
        self.asked += 1
        if self.mode == "stall":
            await asyncio.sleep(5)
        if self.mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.1)
        if self.mode == "redirect":
            raise web.HTTPFound("/v1/users/usr_elsewhere")
        status = self.mode if isinstance(self.mode, int) else 200
        return web.json_response({"id": request.match_info["user_id"]}, status=status)


@pytest.fixture
async def backend(aiohttp_server: Any) -> tuple[Backend, TestServer]:
    backend = Backend()
    return backend, await aiohttp_server(backend.app())


@pytest.fixture
async def gw(make_gateway: GatewayFactory, backend: tuple[Backend, TestServer]) -> Gateway:
    url = base_url(backend[1])
    return await make_gateway(
        settings=make_settings(url, upstreams={"live": {"url": url, "read_timeout": "1s"}})
    )


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        (500, 502, "upstream_unavailable"),
        (503, 502, "upstream_unavailable"),
        (401, 502, "upstream_unavailable"),
        ("redirect", 502, "upstream_unavailable"),
        ("reset", 502, "upstream_unavailable"),
        ("stall", 504, "upstream_timeout"),
        (404, 404, "user_not_found"),
        (403, 404, "user_not_found"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/auth/user-token", "/v1/auth/mobile-token"])
async def test_membership_is_never_assumed(
    gw: Gateway, backend: tuple[Backend, TestServer], mode: Any, status: int, code: str, path: str
) -> None:
    key = await gw.key()
    backend[0].mode = mode
    response = await gw.client.post(path, json={"user_id": "usr_a"}, headers=bearer(key))
    body = await response.json()
    assert (response.status, body["error"]) == (status, code), body
    assert "token" not in body and backend[0].asked >= 1  # a reset may be retried once
    # Once the backend answers yes, the token is issued: a failure was never cached as a no.
    backend[0].mode = 200
    gw.clock.advance(3600)  # past any cached "no"
    response = await gw.client.post(path, json={"user_id": "usr_a"}, headers=bearer(key))
    assert response.status == 200, await response.text()
    assert (await response.json())["token"]


async def test_membership_with_the_backend_down_is_502(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = await make_gateway(settings=make_settings(dead))
    key = await gw.key()
    response = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(key)
    )
    assert response.status == 502
    body = await response.json()
    assert body["error"] == "upstream_unavailable"
    # The operator's line says which upstream and why; the client's answer does not say why.
    (failed,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    fields = failed.fields  # type: ignore[attr-defined]
    assert fields["upstream"] == "live"
    assert fields["cause"] == "the membership check failed: ClientConnectorError"
    assert "membership" not in str(body)


async def test_membership_failures_are_upstream_errors_in_the_metrics(
    gw: Gateway, backend: tuple[Backend, TestServer], aiohttp_client: Any
) -> None:
    """A backend failing the membership check is an upstream failure an operator sees where a
    proxied request's is: ``gateway_upstream_errors_total``, by upstream and error (a 502 is
    ``unavailable``, a 504 ``timeout``), scraped from the admin listener's ``/metrics``."""
    admin = await aiohttp_client(create_admin_app(gw.current))
    key = await gw.key()
    for mode, status in ((500, 502), ("reset", 502), ("stall", 504)):
        backend[0].mode = mode
        response = await gw.client.post(
            "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(key)
        )
        assert response.status == status, mode
    scrape = await admin.get("/metrics")
    lines = (await scrape.text()).splitlines()
    assert 'gateway_upstream_errors_total{error="unavailable",upstream="live"} 2.0' in lines
    assert 'gateway_upstream_errors_total{error="timeout",upstream="live"} 1.0' in lines
    # A clear no is an answer, not a failure: not counted.
    backend[0].mode = 404
    response = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_b"}, headers=bearer(key)
    )
    assert response.status == 404
    scrape = await admin.get("/metrics")
    assert [
        line for line in (await scrape.text()).splitlines() if "upstream_errors_total{" in line
    ] == [
        'gateway_upstream_errors_total{error="unavailable",upstream="live"} 2.0',
        'gateway_upstream_errors_total{error="timeout",upstream="live"} 1.0',
    ]


async def test_a_yes_and_a_no_are_cached_per_account_and_user(
    gw: Gateway, backend: tuple[Backend, TestServer]
) -> None:
    key = await gw.key()
    for _ in range(3):
        response = await gw.client.post(
            "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(key)
        )
        assert response.status == 200
    assert backend[0].asked == 1
    cache = gw.runtime.membership.cache
    assert (cache.misses, cache.hits) == (1, 2)  # each lookup counted once (the metric's source)
    # Another account's key asks again for the same user id: the answer is per account.
    other = await gw.key("acc_2")
    backend[0].mode = 404
    response = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(other)
    )
    assert response.status == 404 and backend[0].asked == 2
    # A no is cached as well: asked again, the answer comes from the cache.
    backend[0].mode = 200
    response = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(other)
    )
    assert response.status == 404 and backend[0].asked == 2
    assert (await response.json())["error"] == "user_not_found"
    # A token refused to a user who is not the account's is a denial in the metrics (asking
    # for users one by one must not look like success), the tokens issued before allowed.
    gw.runtime.metrics.flush()
    registry = gw.runtime.metrics.registry

    def decided(outcome: str, reason: str) -> float | None:
        labels = {"credential": "api_key", "outcome": outcome, "reason": reason}
        return registry.get_sample_value("gateway_auth_decisions_total", labels)

    assert (decided("deny", "user_not_found"), decided("allow", "ok")) == (2.0, 3.0)


# --- an exception nobody expected -------------------------------------------------------------


async def test_an_unexpected_exception_is_a_json_500_that_reveals_nothing(
    gateway: Gateway, log_lines: io.StringIO
) -> None:
    secret = "sk_live_" + "S" * 43

    async def broken(request: web.Request, runtime: Any, principal: Any) -> web.StreamResponse:
        raise RuntimeError(f"database exploded while reading {secret}")

    # The real pipeline and middlewares, with a gateway-owned endpoint that fails.
    gateway.client.app[ENDPOINTS]["user_token"] = broken
    key = await gateway.key()
    response = await gateway.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(key)
    )
    assert response.status == 500
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error", "message", "details"} and body["error"] == "internal_error"
    raw = await response.read()
    assert b"exploded" not in raw and b"RuntimeError" not in raw and secret.encode() not in raw
    request_id = response.headers["X-Request-Id"]
    assert "WWW-Authenticate" not in response.headers
    # The next request on the same gateway is served as usual.
    ok = await gateway.client.get("/v1/users/usr_a/scores", headers=bearer(key))
    assert ok.status == 200
    # Operators get an error line naming the request, and no credential in any line.
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines() if line.strip()]
    assert any(
        str(line.get("level")).lower() == "error" and request_id in orjson.dumps(line).decode()
        for line in lines
    ), lines
    assert key not in log_lines.getvalue() and secret not in log_lines.getvalue()


async def test_issuing_answers_never_share_headers(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    # Every answer of the issuing endpoints starts from one set of headers kept by the module:
    # what the edge adds to one answer (CORS, Vary, rate limits) must never reach another.
    gw = await make_gateway(
        settings=make_settings(
            base_url(upstream[1]),
            cors=[{"origins": ["https://app.example.com"]}],
            rate_limits={
                "rules": [{"group": "auth", "per": "credential", "limit": 5, "period": "60s"}]
            },
        )
    )
    first, second = await gw.key(), await gw.key()
    seen = []
    for key, origin in ((first, True), (first, False), (second, False), (first, True)):
        headers = bearer(key) | ({"Origin": "https://app.example.com"} if origin else {})
        response = await gw.client.post(
            "/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=headers
        )
        assert response.status == 200
        assert response.headers.getall("Content-Type") == ["application/json"]
        assert response.headers.getall("Cache-Control") == ["no-store"]
        assert response.headers.getall("Vary") == ["Origin"]
        allowed = response.headers.getall("Access-Control-Allow-Origin", [])
        assert allowed == (["https://app.example.com"] if origin else [])
        seen.append(response.headers.getall("RateLimit-Remaining"))
    assert seen == [["4"], ["3"], ["4"], ["2"]]
