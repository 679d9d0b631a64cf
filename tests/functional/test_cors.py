"""CORS at the edge, over real sockets (the browser itself is in test_browser.py)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url

APP = "https://app.example.com"
EVIL = "https://evil.example.com"


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]) -> Gateway:
    url = base_url(upstream[1])
    return await make_gateway(
        settings=make_settings(
            url,
            cors=[
                {
                    "origins": [APP],
                    "methods": ["GET", "POST"],
                    "headers": ["Authorization", "Content-Type"],
                    "max_age": 300,
                }
            ],
        )
    )


def preflight(origin: str, method: str = "GET", headers: str = "authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_preflight_for_an_allowed_origin(gw: Gateway) -> None:
    response = await gw.client.options("/v1/users/usr_a/scores", headers=preflight(APP))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "GET" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert response.headers["Access-Control-Max-Age"] == "300"
    assert "Origin" in response.headers["Vary"]
    assert gw.recorder.seen == []  # answered at the edge, never forwarded


@pytest.mark.parametrize(
    ("origin", "method", "headers", "path"),
    [
        (EVIL, "GET", "authorization", "/v1/users/usr_a/scores"),
        ("https://app.example.com.evil.com", "GET", "authorization", "/v1/users/usr_a/scores"),
        ("null", "GET", "authorization", "/v1/users/usr_a/scores"),
        (APP, "DELETE", "authorization", "/v1/users/usr_a"),
        (APP, "GET", "x-custom", "/v1/users/usr_a/scores"),
        (APP, "GET", "authorization", "/v1/nowhere"),
    ],
)
async def test_preflight_refusals_carry_no_allow_headers(
    gw: Gateway, origin: str, method: str, headers: str, path: str
) -> None:
    response = await gw.client.options(path, headers=preflight(origin, method, headers))
    assert response.status == 204
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers
    assert gw.recorder.seen == []


async def test_actual_responses_and_errors_carry_cors_headers(gw: Gateway) -> None:
    key = await gw.key()
    ok = await gw.client.get(
        "/v1/users/usr_a/scores", headers={"Origin": APP, "Authorization": f"Bearer {key}"}
    )
    assert ok.status == 200
    assert ok.headers["Access-Control-Allow-Origin"] == APP
    assert "X-Request-Id" in ok.headers["Access-Control-Expose-Headers"]
    denied = await gw.client.get("/v1/users/usr_a/scores", headers={"Origin": APP})
    assert denied.status == 401
    assert denied.headers["Access-Control-Allow-Origin"] == APP  # the page can read the error
    evil = await gw.client.get("/v1/users/usr_a/scores", headers={"Origin": EVIL})
    assert "Access-Control-Allow-Origin" not in evil.headers
    assert "Origin" in evil.headers["Vary"]


def test_wildcard_with_credentials_is_a_config_error() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"cors\[0\]\.origins: '\*' cannot be combined"):
        make_settings("http://x", cors=[{"origins": ["*"], "allow_credentials": True}])
    with pytest.raises(ConfigError, match=r"cors\[0\]\.origins\[0\]: .* is not an origin"):
        make_settings("http://x", cors=[{"origins": ["app.example.com/path"]}])
