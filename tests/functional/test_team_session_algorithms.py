"""A provider's ``algorithms`` restrict what its tokens may use, even when its JWKS publishes
keys of other algorithms (JWKS endpoints often carry keys for several purposes)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.functional.test_team_sessions import AUDIENCE, ISSUER, IdentityProvider


@pytest.fixture
async def idp(aiohttp_server: Any) -> tuple[IdentityProvider, TestServer]:
    provider = IdentityProvider()  # publishes idp-1, an RS256 key
    provider.add("idp-es", "ES256")  # and an ES256 key
    return provider, await aiohttp_server(provider.app())


async def gateway_allowing(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    idp: tuple[IdentityProvider, TestServer],
    algorithms: list[str] | None,
) -> Gateway:
    provider: dict[str, Any] = {
        "name": "corp",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": str(idp[1].make_url("/.well-known/jwks.json")),
    }
    if algorithms is not None:
        provider["algorithms"] = algorithms
    url = str(upstream[1].make_url("")).rstrip("/")
    return await make_gateway(settings=make_settings(url, identity_providers=[provider]))


async def status_of(gw: Gateway, token: str) -> tuple[int, str]:
    response = await gw.client.get("/v1/users", headers={"Authorization": f"Bearer {token}"})
    if response.status == 200:
        return 200, "ok"
    return response.status, (await response.json())["details"].get("reason", "")


@pytest.mark.parametrize("algorithms", [None, ["RS256"]])
async def test_a_key_of_an_algorithm_the_provider_is_not_allowed_is_refused(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    idp: tuple[IdentityProvider, TestServer],
    algorithms: list[str] | None,
) -> None:
    gw = await gateway_allowing(make_gateway, upstream, idp, algorithms)  # default: RS256 only
    now = gw.clock.now()
    assert await status_of(gw, idp[0].token("idp-1", now=now)) == (200, "ok")
    # A genuine signature by a key the provider publishes, in an algorithm not allowed.
    assert await status_of(gw, idp[0].token("idp-es", now=now)) == (401, "alg")
    assert len(gw.recorder.seen) == 1


async def test_allowing_the_algorithm_admits_the_same_token(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    idp: tuple[IdentityProvider, TestServer],
) -> None:
    """The control: the refusal above is the configuration's, not the key's."""
    gw = await gateway_allowing(make_gateway, upstream, idp, ["RS256", "ES256"])
    assert await status_of(gw, idp[0].token("idp-es", now=gw.clock.now())) == (200, "ok")
