"""Team session tokens from an identity provider, with a real local JWKS server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.keys.signing import PrivateKey, generate_private_key
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url

ISSUER = "https://login.example.test/"
AUDIENCE = "health-gateway"


class IdentityProvider:
    """A real JWKS endpoint whose keys the test rotates, and which it can take down."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, PrivateKey]] = {}
        self.down = False
        self.fetches = 0
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # when set, each fetch waits for it to open
        self.add("idp-1", "RS256")

    def add(self, kid: str, alg: str) -> None:
        self.keys[kid] = (alg, generate_private_key(alg))

    def rotate(self, old: str, new: str) -> None:
        """Publish a new key and stop publishing the old one, as providers rotate."""
        self.add(new, "RS256")
        del self.keys[old]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self.jwks)
        return app

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            return web.Response(status=503)
        keys = []
        for kid, (alg, private) in self.keys.items():
            algorithm = RSAAlgorithm if alg == "RS256" else ECAlgorithm
            public: Any = private.public_key()
            jwk = json.loads(algorithm.to_jwk(public))
            jwk.update({"kid": kid, "alg": alg, "use": "sig"})
            keys.append(jwk)
        return web.json_response({"keys": keys})

    def token(self, kid: str = "idp-1", now: float = 0, **claims: Any) -> str:
        alg, private = self.keys[kid]
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "person@example.test",
            "account": "acc_1",
            "iat": int(now),
            "exp": int(now) + 600,
        }
        body.update(claims)
        return jwt.encode(
            {k: v for k, v in body.items() if v is not None},
            private,
            algorithm=alg,
            headers={"kid": kid},
        )


@pytest.fixture
async def idp(aiohttp_server: Any) -> tuple[IdentityProvider, TestServer]:
    provider = IdentityProvider()
    return provider, await aiohttp_server(provider.app())


@pytest.fixture
async def gw(
    make_gateway: GatewayFactory,
    idp: tuple[IdentityProvider, TestServer],
    upstream: tuple[Any, TestServer],
) -> Gateway:
    url = base_url(upstream[1])
    jwks = str(idp[1].make_url("/.well-known/jwks.json"))
    return await make_gateway(
        settings=make_settings(
            url,
            identity_providers=[
                {
                    "name": "corp",
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_url": jwks,
                    "algorithms": ["RS256", "ES256"],
                    "account_claim": "account",
                    "actor_claim": "sub",
                    "refresh_interval": "30s",
                }
            ],
        )
    )


async def call(
    gw: Gateway, token: str, method: str = "GET", path: str = "/v1/users"
) -> tuple[int, str, dict[str, Any]]:
    response = await gw.client.request(method, path, headers={"Authorization": f"Bearer {token}"})
    if response.status == 200:
        return 200, "ok", {}
    body = await response.json()
    return response.status, body["error"], body["details"]


async def test_team_session_is_account_wide_and_attributed(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer]
) -> None:
    provider, _ = idp
    token = provider.token(now=gw.clock.now())
    for method, path in (
        ("GET", "/v1/users"),
        ("POST", "/v1/users"),
        ("GET", "/v1/users/usr_9/sleep"),
        ("DELETE", "/v1/webhooks/wh_1"),
    ):
        assert (await call(gw, token, method, path))[0] == 200, path
    h = gw.recorder.last.headers
    assert h["x-auth-credential"] == ["team_session"] and h["x-auth-account"] == ["acc_1"]
    assert h["x-auth-actor"] == ["person@example.test"] and "x-auth-user" not in h
    # Token issuance stays with API keys.
    assert (await call(gw, token, "POST", "/v1/auth/user-token"))[:2] == (403, "insufficient_scope")


BAD = [
    ("wrong audience", {"aud": "someone-else"}, "signature"),
    ("wrong issuer", {"iss": "https://evil.example/"}, "issuer"),
    ("no account", {"account": None}, "claims"),
    ("account with a slash", {"account": "acc/../x"}, "claims"),
    ("exp a string", {"exp": "9999999999"}, "claims"),
    ("no exp", {"exp": None}, "signature"),
    ("iat in the future", {"iat": "future"}, "iat"),
]


@pytest.mark.parametrize(("name", "claims", "reason"), BAD, ids=[b[0] for b in BAD])
async def test_bad_team_tokens(
    gw: Gateway,
    idp: tuple[IdentityProvider, TestServer],
    name: str,
    claims: dict[str, Any],
    reason: str,
) -> None:
    provider, _ = idp
    if claims.get("iat") == "future":
        claims = {"iat": int(gw.clock.now()) + 300, "exp": int(gw.clock.now()) + 900}
    status, code, details = await call(gw, provider.token(now=gw.clock.now(), **claims))
    assert (status, code) == (401, "invalid_token"), name
    assert details["reason"] == reason
    assert gw.recorder.seen == []


async def test_expired_team_token(gw: Gateway, idp: tuple[IdentityProvider, TestServer]) -> None:
    token = idp[0].token(now=gw.clock.now())
    gw.clock.advance(600 + 30)
    assert (await call(gw, token))[:2] == (401, "token_expired")


async def test_algorithm_is_pinned(gw: Gateway, idp: tuple[IdentityProvider, TestServer]) -> None:
    assert idp[0].keys  # the provider is up; the token below is not from it
    now = int(gw.clock.now())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "p",
        "account": "acc_1",
        "iat": now,
        "exp": now + 60,
    }
    hs = jwt.encode(body, "x" * 64, algorithm="HS256", headers={"kid": "idp-1"})
    assert (await call(gw, hs))[2]["reason"] == "alg"


async def test_jwks_rotation_and_refresh_throttle(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer]
) -> None:
    provider, _ = idp
    assert (await call(gw, provider.token(now=gw.clock.now())))[0] == 200
    assert provider.fetches == 1
    provider.add("idp-2", "ES256")  # the provider rotates in a new key
    new = provider.token("idp-2", now=gw.clock.now())
    # Within the unknown-kid interval (10 s) an unknown kid does not refetch.
    status, code, details = await call(gw, new)
    assert (status, code, details["reason"]) == (401, "invalid_token", "unknown_kid")
    for _ in range(5):
        await call(gw, provider.token("idp-2", now=gw.clock.now(), jti=str(_)))
    assert provider.fetches == 1
    gw.clock.advance(30)
    assert (await call(gw, provider.token("idp-2", now=gw.clock.now())))[0] == 200
    assert provider.fetches == 2


async def test_provider_outage_keeps_cached_keys(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer]
) -> None:
    provider, _ = idp
    assert (await call(gw, provider.token(now=gw.clock.now())))[0] == 200
    provider.down = True
    gw.clock.advance(60)
    assert (await call(gw, provider.token(now=gw.clock.now(), jti="a")))[0] == 200
    provider.add("idp-3", "RS256")
    assert (await call(gw, provider.token("idp-3", now=gw.clock.now())))[:2] == (
        401,
        "invalid_token",
    )


async def test_provider_down_from_the_start_is_503(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    from tests.support import free_port

    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            identity_providers=[
                {
                    "name": "corp",
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_url": f"http://127.0.0.1:{free_port()}/jwks.json",
                }
            ],
        )
    )
    token = IdentityProvider().token(now=gw.clock.now())
    assert (await call(gw, token))[:2] == (503, "service_unavailable")
    assert gw.recorder.seen == []


def signed_with_another_key_type(provider: IdentityProvider, kid: str, alg: str, now: float) -> str:
    """A token naming ``kid`` (a key of the provider) but signed, and labelled, with ``alg``, whose
    key type is not that key's (issue 17)."""
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "p",
        "account": "acc_1",
        "iat": int(now),
        "exp": int(now) + 600,
    }
    return jwt.encode(body, generate_private_key(alg), algorithm=alg, headers={"kid": kid})


@pytest.mark.parametrize(
    ("kid", "alg"),
    [("idp-ec", "RS256"), ("idp-1", "ES256")],
    ids=["RS256 header on an EC key", "ES256 header on an RSA key"],
)
async def test_algorithm_not_of_the_keys_type_is_401_never_500(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer], kid: str, alg: str
) -> None:
    # The provider allows both RS256 and ES256 and publishes a key of each type: PyJWT used to
    # raise TypeError on the mismatch (500 internal_error with a traceback).
    provider, _ = idp
    provider.add("idp-ec", "ES256")
    token = signed_with_another_key_type(provider, kid, alg, gw.clock.now())
    status, code, details = await call(gw, token)
    assert (status, code, details["reason"]) == (401, "invalid_token", "alg")
    assert gw.recorder.seen == []
    # The provider's own tokens for both keys still verify.
    for good in ("idp-1", "idp-ec"):
        assert (await call(gw, provider.token(good, now=gw.clock.now())))[0] == 200


async def test_unknown_kid_refetches_at_once_one_fetch_for_concurrent_requests(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer]
) -> None:
    provider, _ = idp
    assert (await call(gw, provider.token(now=gw.clock.now())))[0] == 200
    assert provider.fetches == 1
    provider.rotate("idp-1", "idp-2")
    provider.delay = 0.05  # a provider that takes a moment: the requests below overlap it
    gw.clock.advance(10)  # the unknown-kid interval, well inside refresh_interval (30 s)
    tokens = [provider.token("idp-2", now=gw.clock.now(), jti=str(i)) for i in range(20)]
    results = await asyncio.gather(*(call(gw, t) for t in tokens))
    assert [r[0] for r in results] == [200] * 20
    assert provider.fetches == 2  # one refetch, shared by all twenty
    # Another new kid right after: not before the interval has passed again.
    provider.add("idp-3", "RS256")
    status, code, details = await call(gw, provider.token("idp-3", now=gw.clock.now()))
    assert (status, code, details["reason"]) == (401, "invalid_token", "unknown_kid")
    assert provider.fetches == 2
    gw.clock.advance(10)
    assert (await call(gw, provider.token("idp-3", now=gw.clock.now())))[0] == 200
    assert provider.fetches == 3


async def test_a_request_that_waited_for_a_refetch_uses_its_keys_without_fetching_again(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer]
) -> None:
    """A provider slower than the unknown-kid interval: the request that waited for the
    refetch finds the new key in it, and does not start a second fetch of its own."""
    provider, _ = idp
    assert (await call(gw, provider.token(now=gw.clock.now())))[0] == 200
    provider.rotate("idp-1", "idp-2")
    provider.gate = asyncio.Event()
    gw.clock.advance(10)
    tokens = [provider.token("idp-2", now=gw.clock.now(), jti=str(i)) for i in range(2)]
    calls = [asyncio.ensure_future(call(gw, t)) for t in tokens]
    for _ in range(500):  # the first request's refetch has reached the provider
        if provider.fetches == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the second request is waiting for that refetch by now
    gw.clock.advance(10)  # the fetch outlasts the unknown-kid interval
    provider.gate.set()
    assert [r[0] for r in await asyncio.gather(*calls)] == [200, 200]
    assert provider.fetches == 2


async def test_failed_refetch_keeps_the_old_keys(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer]
) -> None:
    provider, _ = idp
    assert (await call(gw, provider.token(now=gw.clock.now())))[0] == 200
    provider.add("idp-2", "RS256")
    provider.down = True
    gw.clock.advance(10)
    new = provider.token("idp-2", now=gw.clock.now())
    assert (await call(gw, new))[2]["reason"] == "unknown_kid"
    assert provider.fetches == 2  # the refetch was tried, and failed
    # The keys fetched before still verify; the failed fetch counts against the interval.
    for i in range(3):
        assert (await call(gw, provider.token(now=gw.clock.now(), jti=str(i))))[0] == 200
        assert (await call(gw, provider.token("idp-2", now=gw.clock.now(), jti=str(i))))[0] == 401
    assert provider.fetches == 2
    provider.down = False
    gw.clock.advance(10)
    assert (await call(gw, new))[0] == 200
    assert provider.fetches == 3


async def test_a_key_the_provider_dropped_stops_working_after_the_refresh_interval(
    gw: Gateway, idp: tuple[IdentityProvider, TestServer]
) -> None:
    provider, _ = idp
    old = provider.token(now=gw.clock.now())
    assert (await call(gw, old))[0] == 200
    provider.rotate("idp-1", "idp-2")
    gw.clock.advance(29)  # within refresh_interval (30 s): the keys in hand are used
    assert (await call(gw, old))[0] == 200
    assert provider.fetches == 1
    gw.clock.advance(1)  # the refresh interval has passed: the next use refetches
    assert (await call(gw, old))[:3] == (401, "invalid_token", {"reason": "unknown_kid"})
    assert (await call(gw, provider.token("idp-2", now=gw.clock.now())))[0] == 200
    assert provider.fetches == 2
