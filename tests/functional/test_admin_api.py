"""The admin listener: its token guards the admin API as a whole header compared in constant
time, and ``/readyz`` tells the truth when Redis or an upstream is gone."""

from __future__ import annotations

import hmac
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_admin_app
from gateway.stores.redis import RedisStore
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import ADMIN_TOKEN, RedisServer, base_url, free_port


async def admin_client(aiohttp_client: Any, gw: Gateway) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    return client


@pytest.fixture
async def admin(
    make_gateway: GatewayFactory, aiohttp_client: Any
) -> tuple[Gateway, TestClient[Any, Any]]:
    gw = await make_gateway(admin={"token": ADMIN_TOKEN})
    return gw, await admin_client(aiohttp_client, gw)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        f"{ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN}, Bearer other",
        f"xBearer {ADMIN_TOKEN}",
        f"Basic Bearer {ADMIN_TOKEN}",
        f"Bearer  {ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        "Bearer " + "x" * len(ADMIN_TOKEN),
    ],
)
async def test_only_the_exact_admin_header_is_accepted(
    admin: tuple[Gateway, TestClient[Any, Any]], header: str | None
) -> None:
    gw, client = admin
    headers = {} if header is None else {"Authorization": header}
    response = await client.post("/admin/keys", json={"account": "acc_1"}, headers=headers)
    body = await response.json()
    assert (response.status, body["error"]) == (401, "invalid_token"), header
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await gw.runtime.keys.list() == []  # nothing was created
    # The exact header works (the control).
    response = await client.post(
        "/admin/keys", json={"account": "acc_1"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status == 201
    assert [r.account for r in await gw.runtime.keys.list()] == ["acc_1"]


async def test_the_admin_header_is_compared_whole_in_constant_time(
    admin: tuple[Gateway, TestClient[Any, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing cannot be asserted in a test (bench/ measures it); what can be checked is that
    the comparison goes through ``hmac.compare_digest`` over the whole header value."""
    _, client = admin
    compared: list[tuple[object, object]] = []
    constant_time = hmac.compare_digest

    def recording(a: bytes | str, b: bytes | str) -> bool:
        compared.append((a, b))
        return constant_time(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(hmac, "compare_digest", recording)
    guess = f"Bearer {ADMIN_TOKEN[:5]}"
    response = await client.get("/admin/keys", headers={"Authorization": guess})
    assert response.status == 401
    response = await client.get("/admin/keys", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status == 200
    expected = f"Bearer {ADMIN_TOKEN}".encode()
    assert (guess.encode(), expected) in compared and (expected, expected) in compared


async def test_without_an_admin_token_the_admin_api_does_not_exist(
    gateway: Gateway, aiohttp_client: Any
) -> None:
    client = await admin_client(aiohttp_client, gateway)
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        response = await client.post("/admin/keys", json={"account": "acc_1"}, headers=headers)
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    assert await gateway.runtime.keys.list() == []
    # Health and readiness stay open: probes carry no token.
    assert (await client.get("/healthz")).status == 200


# --- readiness ---------------------------------------------------------------------------


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    """A Redis of this test's own, so that stopping it disturbs no other test."""
    server = RedisServer()
    yield server
    server.stop()


async def test_readyz_is_503_while_redis_is_down_and_recovers(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    aiohttp_client: Any,
    own_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/readyz follows the store, and so does the log: a warning when it stops answering, and
    one line when it answers again (an operator otherwise saw only the outage)."""
    caplog.set_level("INFO", logger="gateway")
    store = RedisStore(own_redis.url, prefix=f"ready{uuid.uuid4().hex[:6]}:", timeout=1.0)
    gw = await make_gateway(store=store)
    client = await admin_client(aiohttp_client, gw)
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {
        "store": "ok",
        "upstream:live": "ok",
        "upstream:sandbox": "ok",
    }
    own_redis.stop()
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503 and body["status"] == "not_ready"
    assert body["checks"]["store"] == "unavailable"
    assert body["checks"]["upstream:live"] == "ok"
    assert (await client.get("/healthz")).status == 200  # alive, just not ready
    own_redis.start()
    response = await client.get("/readyz")
    assert response.status == 200, await response.text()
    messages = [record.getMessage() for record in caplog.records]
    down = messages.index("store unavailable; requests that need it get 503 until it answers")
    assert messages.index("store available again") > down
    await store.close()


async def test_readyz_is_503_while_an_upstream_refuses_connections(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], aiohttp_client: Any
) -> None:
    url = base_url(upstream[1])
    dead = f"http://127.0.0.1:{free_port()}"
    gw = await make_gateway(settings=make_settings(url, dead))
    client = await admin_client(aiohttp_client, gw)
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert body["checks"] == {
        "store": "ok",
        "upstream:live": "ok",
        "upstream:sandbox": "unavailable",
    }


async def test_every_admin_request_is_logged_and_every_admitted_one_audited(
    admin: tuple[Gateway, TestClient[Any, Any]], log_lines: io.StringIO
) -> None:
    """A key created, rotated or revoked and a relationship changed, each with the account and
    key it acted on; a wrong token and two Authorization headers refused and logged, never
    audited as actions; no line holds the admin token or a created key."""
    _, client = admin
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = await (
        await client.post("/admin/keys", json={"account": "acc_9"}, headers=auth)
    ).json()
    kid = created["key_id"]
    rotated = await client.post(f"/admin/keys/{kid}/rotate", json={}, headers=auth)
    new_kid = (await rotated.json())["key_id"]
    assert (await client.post(f"/admin/keys/{new_kid}/revoke", headers=auth)).status == 200
    relationship = {"account": "acc_9", "subject": "usr_a", "actor": "usr_b"}
    assert (await client.put("/admin/relationships", json=relationship, headers=auth)).status == 200
    wrong = await client.post(
        "/admin/keys", json={"account": "acc_9"}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status == 401
    twice = await client.post(
        "/admin/keys",
        json={"account": "acc_9"},
        headers=[("Authorization", f"Bearer {ADMIN_TOKEN}"), ("Authorization", "Bearer x")],
    )
    assert twice.status == 401
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    audit = [
        (x["route"], x.get("account"), x.get("key_id"), x["status"])
        for x in lines
        if x["logger"] == "gateway.audit"
    ]
    assert audit == [
        ("admin:create_key", "acc_9", kid, 201),
        ("admin:rotate_key", "acc_9", kid, 201),
        ("admin:revoke_key", "acc_9", new_kid, 200),
        ("admin:set_relationship", "acc_9", None, 200),
    ]
    access = [
        (x["route"], x["status"], x.get("error")) for x in lines if x["logger"] == "gateway.access"
    ]
    assert access[-2:] == [("admin:create_key", 401, "invalid_token")] * 2
    assert len(access) == 6
    assert ADMIN_TOKEN not in log_lines.getvalue() and created["key"] not in log_lines.getvalue()


async def test_refusals_are_json_and_echo_nothing_sent(
    admin: tuple[Gateway, TestClient[Any, Any]],
) -> None:
    """A path or method the admin API does not serve, a key id no key has (a path, say), and a
    field the endpoint does not take (a misspelt one would be ignored silently)."""
    _, client = admin
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    cases = [
        ("GET", "/admin/nope", None, 404, "not_found"),
        ("GET", "/admin/keys/key_x/rotate", None, 405, "method_not_allowed"),
        ("POST", "/admin/keys/..%2F..%2Fsecret/revoke", None, 404, "not_found"),
        (
            "POST",
            "/admin/keys",
            {"account": "acc_1", "lifetime_second": 60},
            400,
            "invalid_request",
        ),
        ("POST", "/admin/keys", {"account": "acc_1", "key": "sk_live_x"}, 400, "invalid_request"),
    ]
    for method, path, body, status, code in cases:
        response = await client.request(method, path, json=body, headers=auth)
        document = await response.json()
        assert (response.status, document["error"]) == (status, code), (path, document)
        assert "secret" not in document["message"] and "sk_live_x" not in document["message"]
    response = await client.post(
        "/admin/keys", json={"account": "acc_1", "lifetime_second": 60}, headers=auth
    )
    assert (await response.json())["details"] == {"field": "lifetime_second"}
