"""Decision mode (forward auth) as nginx, ingress-nginx, Traefik and Envoy ask it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestServer

from gateway.config import ConfigError, Settings
from gateway.runtime import build_runtime
from tests.conftest import Decider, Gateway, GatewayFactory, decision_listener, make_settings
from tests.support import base_url, raw_http, status_of


@pytest.fixture
def style() -> str:
    """The front proxy (``decision.proxy``) unless a test is parametrized over ``STYLES``."""
    return "nginx"


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], style: str) -> Gateway:
    url = base_url(upstream[1])
    settings = make_settings(url, url, decision={"enabled": True, "proxy": style})
    return await make_gateway(settings=settings)


@pytest.fixture(params=["public", "decision listener"])
async def ask(request: pytest.FixtureRequest, gw: Gateway) -> AsyncIterator[Decider]:
    """Where decisions are asked: the public listener, or the decision listener
    (``decision.listen``, :mod:`gateway.decision_server`) serving the same runtime."""
    if request.param == "public":
        yield Decider(gw.client.session, str(gw.client.make_url("")), gw.port)
        return
    async with decision_listener(gw) as decider:
        yield decider


Style = Callable[[str, str], tuple[str, str, dict[str, str]]]
STYLES: dict[str, Style] = {
    "nginx": lambda m, u: ("GET", "/decisions", {"X-Original-Method": m, "X-Original-URI": u}),
    "ingress-nginx": lambda m, u: (
        "GET",
        "/decisions",
        {"X-Original-Method": m, "X-Original-URL": f"https://api.example.com{u}"},
    ),
    "traefik": lambda m, u: (
        "GET",
        "/decisions",
        {
            "X-Forwarded-Method": m,
            "X-Forwarded-Uri": u,
            "X-Forwarded-Host": "api.example.com",
            "X-Forwarded-Proto": "https",
        },
    ),
    "envoy": lambda m, u: (m, "/decisions" + u, {}),
}


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_allowed_answers_200_with_identity(gw: Gateway, ask: Decider, style: str) -> None:
    key, record = await gw.runtime.keys.create("acc_1", "live")
    method, path, headers = STYLES[style]("GET", "/v1/users/usr_a/scores?days=7")
    response = await ask.request(
        method, path, headers={**headers, "Authorization": f"Bearer {key}"}
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Auth-Account"] == "acc_1"
    assert response.headers["X-Auth-Credential"] == "api_key"
    assert response.headers["X-Auth-Key-Id"] == record.key_id
    assert response.headers["X-Request-Id"]
    assert gw.recorder.seen == []  # nothing is ever forwarded in decision mode


async def user_token_of_usr_a(gw: Gateway) -> str:
    """A user token for usr_a, issued with a new key (its membership check reaches the
    upstream once)."""
    key = await gw.key()
    issued = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers={"Authorization": f"Bearer {key}"}
    )
    token: str = (await issued.json())["token"]
    return token


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_refusals_carry_the_error(gw: Gateway, ask: Decider, style: str) -> None:
    key, token = await gw.key(), await user_token_of_usr_a(gw)
    before = len(gw.recorder.seen)  # the membership check of the token issuance
    cases = [
        ("GET", "/v1/users/usr_a/scores", None, 401, "invalid_token"),
        ("GET", "/v1/users/usr_b/scores", token, 403, "wrong_user"),
        ("POST", "/v1/users", token, 403, "insufficient_scope"),
        ("GET", "/v1/users/usr_a/../usr_b/scores", key, 400, "invalid_request"),
        ("GET", "/v1/nothing", key, 404, "not_found"),
    ]
    for method, uri, credential, status, code in cases:
        m, path, headers = STYLES[style](method, uri)
        if credential:
            headers = {**headers, "Authorization": f"Bearer {credential}"}
        if ".." in path:
            # The aiohttp test client would normalize the path itself: sent as raw bytes.
            answer = await raw_http(ask.port, raw_request(m, path, headers))
            raw_body = answer.partition(b"\r\n\r\n")[2]
            assert status_of(answer) == status, (uri, answer[:200])
            assert json.loads(raw_body)["error"] == code, (uri, raw_body)
            continue
        response = await ask.request(m, path, headers=headers)
        body = await response.json()
        assert (response.status, body["error"]) == (status, code), (uri, body)
        if status in (401, 403):
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(gw.recorder.seen) == before


def raw_request(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    pairs = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway.test", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in pairs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_gateway_owned_endpoints_are_not_decided(gw: Gateway, ask: Decider) -> None:
    key = await gw.key()
    response = await ask.get(
        "/decisions",
        headers={
            "X-Original-Method": "POST",
            "X-Original-URI": "/v1/auth/user-token",
            "Authorization": f"Bearer {key}",
        },
    )
    assert response.status == 404
    assert (await response.json())["details"]["reason"] == "gateway_endpoint"


async def test_a_mobile_token_asked_about_is_not_used_up(gw: Gateway, ask: Decider) -> None:
    """SDK initialize is not decided here, and asking about it must not consume the token
    (consuming is its authentication only where the gateway serves the endpoint)."""
    key = await gw.key()
    issued = await gw.client.post(
        "/v1/auth/mobile-token",
        json={"user_id": "usr_a"},
        headers={"Authorization": f"Bearer {key}"},
    )
    mobile = (await issued.json())["token"]
    asked = await ask.get(
        "/decisions",
        headers={
            "X-Original-Method": "POST",
            "X-Original-URI": "/v1/sdk/initialize",
            "Authorization": f"Bearer {mobile}",
        },
    )
    assert (asked.status, (await asked.json())["details"]["reason"]) == (404, "gateway_endpoint")
    served = await gw.client.post(
        "/v1/sdk/initialize", headers={"Authorization": f"Bearer {mobile}"}
    )
    assert served.status == 200  # still unused


async def test_token_in_original_query_is_refused(gw: Gateway, ask: Decider) -> None:
    key = await gw.key()
    response = await ask.get(
        "/decisions",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": f"/v1/users/usr_a/scores?access_token={key}",
        },
    )
    assert response.status == 400


async def test_decision_endpoint_is_off_unless_enabled(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    key = await gw.key()
    response = await gw.client.get(
        "/decisions", headers={"X-Original-URI": "/v1/users", "Authorization": f"Bearer {key}"}
    )
    assert response.status == 404
    assert gw.recorder.seen == []  # served by nobody: not forwarded as a path either


async def test_signed_assertion_verifies_with_the_jwks(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    from tests.support import signing_config

    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            url,
            decision={"enabled": True, "proxy": "nginx"},
            tokens={**signing_config(), "assertion": True, "assertion_ttl": "60s"},
        )
    )
    key, record = await gw.runtime.keys.create("acc_1", "live")
    response = await gw.client.get(
        "/v1/users/usr_a/scores",
        headers={"Authorization": f"Bearer {key}", "X-Auth-Assertion": "forged"},
    )
    assert response.status == 200
    assertion = gw.recorder.last.headers["x-auth-assertion"]
    assert len(assertion) == 1 and assertion[0] != "forged"
    # What an upstream does: fetch the JWKS, verify, check the type marker.
    jwks = await (await gw.client.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(assertion[0])["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        assertion[0],
        jwt.PyJWK(jwk).key,
        algorithms=[jwk["alg"]],
        audience="health-api",
        issuer="health-gateway",
    )
    assert claims["tkn"] == "assertion" and claims["acc"] == "acc_1"
    assert claims["act"] == record.key_id and claims["cred"] == "api_key"
    assert claims["exp"] - claims["iat"] == 60
    # Decision mode answers it too.
    response = await gw.client.get(
        "/decisions",
        headers={
            "X-Original-Method": "GET",
            "X-Original-URI": "/v1/users/usr_a/scores",
            "Authorization": f"Bearer {key}",
        },
    )
    assert response.headers["X-Auth-Assertion"]
    # An assertion is never a credential.
    response = await gw.client.get(
        "/v1/users/usr_a/scores", headers={"Authorization": f"Bearer {assertion[0]}"}
    )
    assert response.status == 401


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_sandbox_credential_without_a_sandbox_upstream_is_503(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], style: str
) -> None:
    url = base_url(upstream[1])
    live_only = make_settings(url, decision={"enabled": True, "proxy": style})
    gw = await make_gateway(settings=live_only)
    sandbox, _ = await gw.runtime.keys.create("acc_1", "sandbox")
    live = await gw.key("acc_1", "live")
    method, path, headers = STYLES[style]("GET", "/v1/users/usr_a/scores")
    response = await gw.client.request(
        method, path, headers={**headers, "Authorization": f"Bearer {sandbox}"}
    )
    body = await response.json()
    assert (response.status, body["error"]) == (503, "service_unavailable")
    assert body["details"]["reason"] == "no_upstream"
    assert body["message"] == "No upstream is configured for the sandbox environment."
    # No identity for the proxy in front to copy onto a request to the live backend.
    assert "X-Auth-Account" not in response.headers
    # The same request with a live key is allowed: only the missing environment is refused.
    response = await gw.client.request(
        method, path, headers={**headers, "Authorization": f"Bearer {live}"}
    )
    assert response.status == 200 and response.headers["X-Auth-Environment"] == "live"


async def sandbox_credentials(gw: Gateway) -> dict[str, str]:
    """A sandbox key, a sandbox test key, and what a sandbox key derives: a user token, and a
    member token signed with it."""
    key, record = await gw.runtime.keys.create("acc_1", "sandbox")
    test_key, _ = await gw.runtime.keys.create("acc_1", "sandbox", test=True)
    issued = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert issued.status == 200
    now = int(gw.clock.now())
    member = jwt.encode(
        {"sub": "usr_a", "iat": now, "exp": now + 300, "scopes": []},
        key.encode(),
        "HS256",
        headers={"kid": record.key_id},
    )
    return {
        "api_key": key,
        "test_key": test_key,
        "user_token": (await issued.json())["token"],
        "member_token": member,
    }


async def decide(gw: Gateway, where: str, style: str, token: str) -> tuple[int, Any, Any]:
    """Ask ``where`` (the public listener or the decision listener) about usr_a's scores."""
    method, path, headers = STYLES[style]("GET", "/v1/users/usr_a/scores")
    headers = {**headers, "Authorization": f"Bearer {token}"}
    if where == "public":
        response = await gw.client.request(method, path, headers=headers)
        return response.status, response.headers, await response.json(content_type=None)
    async with (
        decision_listener(gw) as decider,
        decider.request(method, path, headers=headers) as response,
    ):
        return response.status, response.headers, await response.json(content_type=None)


async def swap(gw: Gateway, settings: Settings) -> None:
    """A reload to ``settings`` (same store): the replaced runtime's pools are closed."""
    old = gw.runtime
    gw.current.runtime = build_runtime(settings, clock=gw.clock, store=old.store)
    await old.helper.close()
    await old.forwarder.pools.close()


@pytest.mark.parametrize("where", ["public", "decision listener"])
@pytest.mark.parametrize("style", sorted(STYLES))
async def test_sandbox_credentials_are_refused_unless_the_front_proxy_routes_them(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], style: str, where: str
) -> None:
    """The front proxy sends what it is told to allow to its one backend, whatever
    X-Auth-Environment says: with a sandbox upstream configured (as the shipped ingress overlay
    has), a sandbox credential used to get 200, and the documented nginx setup forwarded it to
    the live backend. Decisions admit live credentials only unless decision.environments says
    the front proxy routes sandbox ones."""
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(url, url, decision={"enabled": True, "proxy": style})
    )
    for kind, token in (await sandbox_credentials(gw)).items():
        for _ in range(2):  # the second time, where a reused decision would be answered
            status, headers, body = await decide(gw, where, style, token)
            assert (status, body["error"], body["details"]["reason"]) == (
                503,
                "service_unavailable",
                "no_upstream",
            ), kind
            assert body["message"] == (
                "Decisions here admit live credentials only, not sandbox ones."
            ), kind
            assert "X-Auth-Account" not in headers and "X-Auth-Environment" not in headers, kind
    status, headers, _ = await decide(gw, where, style, await gw.key("acc_1", "live"))
    assert status == 200 and headers["X-Auth-Environment"] == "live"

    both = make_settings(
        url, url, decision={"enabled": True, "proxy": style, "environments": ["live", "sandbox"]}
    )
    await swap(gw, both)
    for kind, token in (await sandbox_credentials(gw)).items():
        for _ in range(2):
            status, headers, _ = await decide(gw, where, style, token)
            assert status == 200 and headers["X-Auth-Environment"] == "sandbox", kind
    # Decisions reused from before a reload are judged by the config of now.
    live_only = make_settings(url, url, decision={"enabled": True, "proxy": style})
    await swap(gw, live_only)
    status, _, body = await decide(gw, where, style, (await sandbox_credentials(gw))["api_key"])
    assert (status, body["details"]["reason"]) == (503, "no_upstream")

    sandbox_only = make_settings(
        url, url, decision={"enabled": True, "proxy": style, "environments": ["sandbox"]}
    )
    await swap(gw, sandbox_only)
    status, headers, body = await decide(gw, where, style, await gw.key("acc_1", "live"))
    assert (status, body["details"]["reason"]) == (503, "no_upstream")
    assert "X-Auth-Account" not in headers


def test_an_admitted_environment_needs_an_upstream(upstream: tuple[Any, TestServer]) -> None:
    url = base_url(upstream[1])
    with pytest.raises(ConfigError) as caught:
        make_settings(
            url, decision={"enabled": True, "proxy": "nginx", "environments": ["live", "sandbox"]}
        )
    assert str(caught.value).startswith("decision.environments[1]: 'sandbox' has no upstream")


# --- which request is decided: only the configured proxy's headers name it ---------------------


def others(style: str, method: str, uri: str) -> dict[str, str]:
    """What a client adds to name ``method uri`` in every other proxy's headers (a front proxy
    passes the headers it does not set itself on to the gateway untouched)."""
    own = STYLES[style]("GET", "/")[2]
    added: dict[str, str] = {}
    for name, other in STYLES.items():
        if name != style:
            added.update(other(method, uri)[2])
    return {name: value for name, value in added.items() if name not in own}


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_a_client_cannot_name_the_request_in_another_proxys_headers(
    gw: Gateway, ask: Decider, style: str
) -> None:
    """Behind ingress-nginx a client's own ``X-Original-URI`` (behind Traefik its own
    ``X-Original-Method: GET``, and so on) once replaced the request the proxy reported: a user
    token read another user's data, a read-only token had its write allowed."""
    token = await user_token_of_usr_a(gw)
    bearer = {"Authorization": f"Bearer {token}"}
    for method, uri, code in [
        ("GET", "/v1/users/usr_b/scores", "wrong_user"),
        ("POST", "/v1/users", "insufficient_scope"),
    ]:
        m, path, headers = STYLES[style](method, uri)
        claimed = others(style, "GET", "/v1/users/usr_a/scores")  # what usr_a's token may do
        # A client's X-Original-URL is refused whatever it says (the next test).
        claimed.pop("X-Original-URL", None)
        response = await ask.request(m, path, headers={**headers, **claimed, **bearer})
        body = await response.json()
        assert (response.status, body["error"]) == (403, code), (style, method, uri, body)
    m, path, headers = STYLES[style]("GET", "/v1/users/usr_a/scores")
    allowed = await ask.request(m, path, headers={**headers, **bearer})
    assert allowed.status == 200


OVERRIDES = {
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "PUT",
    "X-Rewrite-URL": "/v1/users/usr_b/scores",
    "X-Original-URL": "https://api.example.com/v1/users/usr_b/scores",
    # A CGI-style backend reads '_' as '-' (and Traefik and Envoy pass such names on).
    "X_HTTP_Method_Override": "DELETE",
    "x_rewrite_url": "/v1/users/usr_b/scores",
}


@pytest.mark.parametrize(
    ("style", "name"),
    [
        (style, name)
        for style in sorted(STYLES)
        for name in sorted(OVERRIDES)
        # ingress-nginx's own header: the request it names is the one judged.
        if (style, name) != ("ingress-nginx", "X-Original-URL")
    ],
)
async def test_a_header_a_backend_takes_as_the_method_or_target_is_refused(
    gw: Gateway, ask: Decider, style: str, name: str
) -> None:
    """The front proxy passes the client's headers on to the backend; a backend whose framework
    honours ``X-HTTP-Method-Override`` (or IIS's ``X-Rewrite-URL``) would act on another
    method or target than the one allowed here. ``X-Original-URL`` is ingress-nginx's own."""
    token = await user_token_of_usr_a(gw)
    m, path, headers = STYLES[style]("GET", "/v1/users/usr_a/scores")
    extra = {name: OVERRIDES[name], "Authorization": f"Bearer {token}"}
    response = await ask.request(m, path, headers={**headers, **extra})
    body = await response.json()
    assert (response.status, body["error"]) == (403, "forbidden_header"), body
    assert body["details"] == {
        "reason": "override_header",
        "header": name.lower().replace("_", "-"),
    }
    allowed = await ask.request(
        m, path, headers={**headers, "Authorization": extra["Authorization"]}
    )
    assert allowed.status == 200


@pytest.mark.parametrize("spelling", ["X_Original_URL", "x_ORIGINAL-url", "X-Original_URL"])
async def test_behind_ingress_nginx_an_x_original_url_spelled_with_underscore_is_refused(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], spelling: str
) -> None:
    """ingress-nginx writes its own with '-'; one with '_' is a client's, which the proxy passes
    on to the backend (with underscores allowed) and a CGI-style backend reads as its own."""
    url = base_url(upstream[1])
    settings = make_settings(url, url, decision={"enabled": True, "proxy": "ingress-nginx"})
    gw = await make_gateway(settings=settings)
    token = await user_token_of_usr_a(gw)
    m, path, headers = STYLES["ingress-nginx"]("GET", "/v1/users/usr_a/scores")
    bearer = {"Authorization": f"Bearer {token}"}
    refused = await gw.client.request(
        m, path, headers={**headers, **bearer, spelling: "/v1/users/usr_b/scores"}
    )
    body = await refused.json()
    assert (refused.status, body["error"]) == (403, "forbidden_header"), body
    allowed = await gw.client.request(m, path, headers={**headers, **bearer})
    assert allowed.status == 200


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize(
    "uri",
    [
        "/v1/users/usr_a/scores#/../../usr_b/scores",
        "/v1/users/usr_a/scores?days=7#/../../usr_b/scores",
        "/v1/users/usr_a/scores?days=7#",
    ],
    ids=["fragment after the path", "fragment after the query", "empty fragment"],
)
async def test_a_fragment_in_the_original_target_is_400(
    gw: Gateway, ask: Decider, style: str, uri: str
) -> None:
    """A '#' is never in a request target. Behind ingress-nginx the gateway's URL parser once
    dropped it and what followed, and judged usr_a's path while nginx forwarded the whole
    ``$request_uri``, which the backend normalized to usr_b's: usr_a's token read usr_b's
    data. Refused in every style."""
    token = await user_token_of_usr_a(gw)
    m, path, headers = STYLES[style]("GET", uri)
    answer = await raw_http(
        ask.port, raw_request(m, path, [*headers.items(), *bearer(token).items()])
    )
    assert status_of(answer) == 400, (style, answer[:300])
    if style != "envoy":  # (envoy's is the request line: the HTTP parser may refuse it first)
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["details"]["reason"] == "path", body


@pytest.mark.parametrize("style", ["ingress-nginx"])  # (the gw fixture's decision.proxy)
@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.example.com/v1/users/usr_a/scores", True),
        ("HTTPS://api.example.com:8443/v1/users/usr_a/scores?days=7", True),
        ("http://[2001:db8::1]:8080/v1/users/usr_a/scores?", True),
        ("https:///v1/users/usr_a/scores", True),  # (no Host header: an empty authority)
        ("https://api.example.com/v1/users/usr_b/scores?u=/v1/users/usr_a/scores", False),
        ("https://api.example.com/v1/users/usr_a/scores/../../usr_b/scores", False),
    ],
)
async def test_an_original_url_is_judged_by_the_text_after_its_authority(
    gw: Gateway, ask: Decider, style: str, url: str, allowed: bool
) -> None:
    """Whatever the scheme's case, the port or the host's form (ingress-nginx writes
    ``$scheme://$http_host$request_uri``), the path judged is the text after the authority:
    usr_a's token is allowed on usr_a's path and on nothing else."""
    token = await user_token_of_usr_a(gw)
    headers = {"X-Original-Method": "GET", "X-Original-URL": url}
    answer = await raw_http(ask.port, raw_request("GET", "/decisions", headers | bearer(token)))
    assert (status_of(answer) == 200) is allowed, (url, answer[:300])


@pytest.mark.parametrize("style", ["ingress-nginx"])
@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1/users/usr_a/sc\tores",  # a parser drops the tab
        "https://api.example.com?/v1/users/usr_b/scores",  # a Host header ending in '?'
        "https://api.example.com/v1/users/usr_a/scores /../usr_b",
        "api.example.com/v1/users/usr_a/scores",  # no scheme
        "https://api.example.com",  # no path
    ],
)
async def test_an_original_url_is_judged_as_nginx_forwards_it_or_refused(
    gw: Gateway, ask: Decider, style: str, url: str
) -> None:
    """The path judged is exactly the text after the URL's authority (nginx's
    ``$request_uri``, forwarded byte for byte), or the decision is 400."""
    key = await gw.key()
    headers = {"X-Original-Method": "GET", "X-Original-URL": url}
    answer = await raw_http(ask.port, raw_request("GET", "/decisions", headers | bearer(key)))
    assert status_of(answer) == 400, (url, answer[:300])
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["details"]["reason"] == "path"


@pytest.mark.parametrize("style", ["nginx", "ingress-nginx", "traefik"])
async def test_the_proxys_headers_must_each_come_once(
    gw: Gateway, ask: Decider, style: str
) -> None:
    """Missing (a proxy not configured as documented) or twice (a client's copy beside the
    proxy's): 400, never a guess at which one the proxy wrote."""
    key = await gw.key()
    m, path, headers = STYLES[style]("GET", "/v1/users/usr_a/scores")
    for name, value in headers.items():
        if name.startswith("X-Forwarded-") and name not in (
            "X-Forwarded-Method",
            "X-Forwarded-Uri",
        ):
            continue
        missing = {k: v for k, v in headers.items() if k != name}
        twice = [*headers.items(), (name, value), ("Authorization", f"Bearer {key}")]
        for sent in ([*missing.items(), ("Authorization", f"Bearer {key}")], twice):
            answer = await raw_http(ask.port, raw_request(m, path, sent))
            body = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert status_of(answer) == 400, (name, answer[:200])
            assert body["details"]["reason"] == "original_request", body
            assert name in body["message"]


@pytest.mark.parametrize("style", ["ingress-nginx"])
async def test_an_original_url_that_does_not_parse_is_400(
    gw: Gateway, ask: Decider, style: str
) -> None:
    """ingress-nginx builds X-Original-URL from the client's Host header."""
    key = await gw.key()
    headers = {"X-Original-Method": "GET", "X-Original-URL": "http://[zz]/x"}
    answer = await raw_http(ask.port, raw_request("GET", "/decisions", headers | bearer(key)))
    assert status_of(answer) == 400, answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["details"]["reason"] == "path"


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.mark.parametrize(
    ("style", "method", "path", "headers"),
    [
        (
            "nginx",
            "GET",
            "/decisions",
            {"X-Original-Method": "GET", "X-Original-URI": "/v1/users/%FF/scores"},
        ),
        ("envoy", "GET", "/decisions/v1/users/%ED%A0%80/scores", {}),
        (
            "traefik",
            "GET",
            "/decisions",
            {"X-Forwarded-Method": "G\u00c9T", "X-Forwarded-Uri": "/v1/users/usr_a/scores"},
        ),
    ],
    ids=["nginx: invalid utf-8", "envoy: surrogate in path", "traefik: non-ascii method"],
)
async def test_a_malformed_original_request_is_400_under_its_own_proxy(
    gw: Gateway, ask: Decider, style: str, method: str, path: str, headers: dict[str, str]
) -> None:
    """Each reaches the check it is about (not the missing-header refusal): the original
    request as that proxy reports it is refused as the proxy would have it refused."""
    key = await gw.key()
    sent = {**headers, "Authorization": f"Bearer {key}"}
    answer = await raw_http(ask.port, raw_request(method, path, sent))
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert status_of(answer) == 400, answer[:200]
    assert body["details"].get("reason") != "original_request", body
