"""Mobile tokens are authenticated by being consumed on ``POST /v1/sdk/initialize``.

One store round trip (the consuming script) instead of a look then a consumption, and never at
the price of a token used up by a request the gateway then refuses: the rule is known to admit
the kind first, a rate limit on the route is counted before the token is used, and decision
mode only ever looks at it. Run on both stores (memory and a real Redis).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp.test_utils import TestServer, make_mocked_request

from gateway.authn.api_key import KIND as API_KEY
from gateway.authn.mobile_token import KIND as MOBILE_TOKEN
from gateway.errors import InsufficientScope
from gateway.issue.endpoints import sdk_initialize
from gateway.principal import Principal
from gateway.stores.base import Store
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url

INITIALIZE = "/v1/sdk/initialize"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def mobile_token(gw: Gateway, key: str, user: str = "usr_a") -> str:
    response = await gw.client.post(
        "/v1/auth/mobile-token", headers=bearer(key), json={"user_id": user}
    )
    assert response.status == 200, await response.text()
    token: str = (await response.json())["token"]
    return token


class Operations:
    """Counts the mobile-token operations asked of a real store (the store still does them)."""

    def __init__(self, store: Store) -> None:
        self.counts = {"peek_mobile": 0, "consume_mobile": 0}
        for name in self.counts:
            setattr(store, name, self._counted(name, getattr(store, name)))

    def _counted(self, name: str, operation: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return await operation(*args, **kwargs)

        return counted

    def __call__(self, name: str) -> int:
        return self.counts[name]


def consumptions(gw: Gateway, result: str) -> float:
    gw.runtime.metrics.flush()
    value = gw.runtime.metrics.registry.get_sample_value(
        "gateway_mobile_token_consumptions_total", {"result": result}
    )
    return value or 0.0


async def initialize(gw: Gateway, token: str) -> tuple[int, str]:
    response = await gw.client.post(INITIALIZE, headers=bearer(token))
    body = await response.json()
    if response.status == 200:
        return 200, body["user_id"]
    return response.status, body["details"].get("reason", body["error"])


async def test_initialize_is_one_store_operation(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(store=store)
    operations = Operations(store)
    token = await mobile_token(gw, await gw.key())
    assert await initialize(gw, token) == (200, "usr_a")
    assert (operations("consume_mobile"), operations("peek_mobile")) == (1, 0)
    assert consumptions(gw, "ok") == 1
    # Used: refused, as used, by that same single operation.
    assert await initialize(gw, token) == (401, "used")
    assert (operations("consume_mobile"), operations("peek_mobile")) == (2, 0)
    assert consumptions(gw, "used") == 1
    assert await initialize(gw, "mt_" + "x" * 43) == (401, "unknown")
    gw.clock.advance(3600)
    assert await initialize(gw, await mobile_token(gw, await gw.key())) == (200, "usr_a")


async def test_issued_tokens_are_counted_by_kind(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(store=store)
    key = await gw.key()
    user = await gw.client.post("/v1/auth/user-token", headers=bearer(key), json={"user_id": "u1"})
    assert user.status == 200
    assert await initialize(gw, await mobile_token(gw, key)) == (200, "usr_a")
    assert await initialize(gw, await mobile_token(gw, key)) == (200, "usr_a")
    gw.runtime.metrics.flush()
    issued = {
        kind: gw.runtime.metrics.registry.get_sample_value(
            "gateway_tokens_issued_total", {"kind": kind}
        )
        for kind in ("user_token", "mobile_token", "sdk_session")
    }
    assert issued == {"user_token": 1.0, "mobile_token": 2.0, "sdk_session": 2.0}


async def test_an_expired_token_is_refused_as_expired(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(store=store)
    token = await mobile_token(gw, await gw.key())
    gw.clock.advance(gw.runtime.settings.tokens.mobile_token_ttl)
    assert await initialize(gw, token) == (401, "expired")


async def test_a_rate_limit_is_counted_before_the_token_is_used(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], store: Store
) -> None:
    """With a limit on the route's group the token is looked at, counted, then consumed: a
    request refused by the limit leaves its token usable."""
    url = base_url(upstream[1])
    limits = {"rules": [{"group": "auth", "per": "credential", "limit": 1, "period": "60s"}]}
    gw = await make_gateway(settings=make_settings(url, rate_limits=limits), store=store)
    operations = Operations(store)
    key = await gw.key()
    first = await mobile_token(gw, key)
    gw.clock.advance(60)  # the key's own budget for issuing
    second = await mobile_token(gw, key)
    gw.clock.advance(60)
    assert await initialize(gw, first) == (200, "usr_a")
    assert await initialize(gw, second) == (429, "rate_limited")
    assert operations("peek_mobile") == 2
    gw.clock.advance(60)
    assert await initialize(gw, second) == (200, "usr_a")  # it was not used up by the 429


async def test_decision_mode_never_uses_a_token_up(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], store: Store
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(url, decision={"enabled": True, "proxy": "nginx"}), store=store
    )
    operations = Operations(store)
    token = await mobile_token(gw, await gw.key())
    asked = await gw.client.get(
        "/decisions",
        headers={"X-Original-Method": "POST", "X-Original-URI": INITIALIZE, **bearer(token)},
    )
    assert asked.status == 404
    assert (await asked.json())["details"]["reason"] == "gateway_endpoint"
    assert operations("consume_mobile") == 0
    assert await initialize(gw, token) == (200, "usr_a")


async def test_elsewhere_a_token_is_only_looked_at(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(store=store)
    operations = Operations(store)
    token = await mobile_token(gw, await gw.key())
    response = await gw.client.get("/v1/users/usr_a/scores", headers=bearer(token))
    assert response.status == 403
    assert operations("consume_mobile") == 0
    assert await initialize(gw, token) == (200, "usr_a")


async def test_the_endpoint_refuses_a_token_that_was_not_used_up(
    make_gateway: GatewayFactory,
) -> None:
    """The SDK endpoint mints a session only for a principal whose token this request consumed;
    a mobile principal that was only looked at (however it got there) gets nothing."""
    gw = await make_gateway()
    looked_at = Principal("acc_1", MOBILE_TOKEN, "live", "usr_a", "usr_a", key_id="key_1")
    request = make_mocked_request("POST", INITIALIZE)
    with pytest.raises(InsufficientScope):
        await sdk_initialize(request, gw.runtime, looked_at)
    # Nor for another kind's principal, however it is marked.
    other = dataclasses.replace(looked_at, credential=API_KEY, consumed=True)
    with pytest.raises(InsufficientScope):
        await sdk_initialize(request, gw.runtime, other)
    used_up = dataclasses.replace(looked_at, consumed=True)
    response = await sdk_initialize(request, gw.runtime, used_up)
    assert response.status == 200


BOUND_POLICY = {
    "routes": [
        {
            "id": "mobile-token",
            "methods": ["POST"],
            "paths": ["/v1/auth/mobile-token"],
            "allow": ["api_key"],
            "handler": "mobile_token",
        },
        {
            "id": "sdk-initialize",
            "methods": ["POST"],
            "paths": ["/v1/sdk/initialize"],
            "allow": ["mobile_token"],
            "handler": "sdk_initialize",
        },
        {
            "id": "sdk-initialize-for",
            "methods": ["POST"],
            "paths": ["/v1/sdk/initialize/{user_id}"],
            "allow": ["mobile_token"],
            "handler": "sdk_initialize",
            "bind": "user_id",
        },
    ]
}


async def test_a_rule_that_could_refuse_the_token_never_uses_it_up(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], store: Store
) -> None:
    """A consuming route whose rule binds a user needs the token's user before it can decide:
    the token is looked at, refused for another user (403), and stays usable."""
    url = base_url(upstream[1])
    gw = await make_gateway(settings=make_settings(url, policy=BOUND_POLICY), store=store)
    token = await mobile_token(gw, await gw.key(), user="usr_a")
    refused = await gw.client.post("/v1/sdk/initialize/usr_b", headers=bearer(token))
    assert refused.status == 403
    assert (await refused.json())["error"] == "wrong_user"
    assert await initialize(gw, token) == (200, "usr_a")
