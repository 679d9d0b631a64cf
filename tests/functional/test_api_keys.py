"""API keys end to end: both forms, every failure, both stores, logs and metrics kept clean."""

from __future__ import annotations

import base64
import io

from prometheus_client import generate_latest

from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from tests.conftest import Gateway, GatewayFactory
from tests.support import RedisServer

SCORES = "/v1/users/usr_a/scores"
DAY = 86400.0


def basic(key: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


async def test_bearer_and_basic_forms(make_gateway: GatewayFactory, store: Store) -> None:
    gw = await make_gateway(store=store)
    key = await gw.key()
    for header in (f"Bearer {key}", basic(key)):
        response = await gw.client.get(SCORES, headers={"Authorization": header})
        assert response.status == 200, await response.text()
    assert len(gw.recorder.seen) == 2


async def expect(
    gw: Gateway, header: str | None, status: int, code: str, reason: str | None = None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = await gw.client.get(SCORES, headers=headers)
    body = await response.json()
    assert (response.status, body["error"]) == (status, code), body
    if reason is not None:
        assert body["details"].get("reason") == reason
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="gateway"')


async def test_every_bad_key_is_refused(make_gateway: GatewayFactory, store: Store) -> None:
    gw = await make_gateway(store=store)
    key, record = await gw.runtime.keys.create("acc_1", "live")
    await expect(gw, None, 401, "invalid_token", "missing")
    await expect(gw, "Bearer sk_live_", 401, "invalid_token", "malformed")
    await expect(gw, f"Bearer {key[:20]}", 401, "invalid_token", "unknown")  # truncated
    await expect(gw, f"Bearer {key}x", 401, "invalid_token", "unknown")
    await expect(gw, f"Bearer sk_live_{'Z' * 43}", 401, "invalid_token", "unknown")
    await expect(gw, basic(key, "pw"), 401, "invalid_token", "malformed")
    await expect(gw, f"Bearer {key.replace('sk_live_', 'sk_sandbox_')}", 401, "invalid_token")
    assert gw.recorder.seen == []

    await gw.runtime.keys.revoke(record.key_id)
    await expect(gw, f"Bearer {key}", 401, "invalid_token", "revoked")
    assert gw.recorder.seen == []


async def test_rotated_and_expired_keys(make_gateway: GatewayFactory, store: Store) -> None:
    gw = await make_gateway(store=store)
    old, record = await gw.runtime.keys.create("acc_1", "live")
    new, _, _ = await gw.runtime.keys.rotate(record.key_id)
    await expect(gw, f"Bearer {old}", 401, "invalid_token", "rotated")
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {new}"})
    assert response.status == 200
    gw.clock.advance(90 * DAY)
    await expect(gw, f"Bearer {new}", 401, "token_expired", "expired")


async def test_two_authorization_headers_are_400(gateway: Gateway) -> None:
    key = await gateway.key()
    response = await gateway.client.get(
        SCORES, headers=[("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {key}")]
    )
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"
    assert gateway.recorder.seen == []


async def test_key_in_query_string_is_refused(gateway: Gateway) -> None:
    key = await gateway.key()
    response = await gateway.client.get(SCORES, params={"access_token": key})
    assert response.status == 400
    assert key not in await response.text()


async def test_key_never_appears_in_logs_metrics_or_errors(
    gateway: Gateway, log_lines: io.StringIO
) -> None:
    key, record = await gateway.runtime.keys.create("acc_1", "live")
    bodies = []
    for header in (f"Bearer {key}", basic(key), f"Bearer {key}x", f"Bearer {key[:-3]}"):
        response = await gateway.client.get(SCORES, headers={"Authorization": header})
        bodies.append(await response.text() + str(response.headers))
    await gateway.runtime.keys.revoke(record.key_id)
    response = await gateway.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    bodies.append(await response.text() + str(response.headers))
    logs = log_lines.getvalue()
    gateway.runtime.metrics.flush()
    metrics = generate_latest(gateway.runtime.metrics.registry).decode()
    assert '"credential": "api_key"' in logs.replace('":"', '": "')  # lines were written
    secret = key.split("_")[-1]
    for text in (logs, metrics, *bodies):
        assert secret[:16] not in text


async def test_access_and_audit_lines_name_the_actor(
    gateway: Gateway, log_lines: io.StringIO
) -> None:
    import orjson

    key, record = await gateway.runtime.keys.create("acc_1", "live")
    await gateway.client.get(
        SCORES, headers={"Authorization": f"Bearer {key}", "X-Request-Id": "rid-1"}
    )
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    access = [x for x in lines if x["logger"] == "gateway.access"]
    audit = [x for x in lines if x["logger"] == "gateway.audit"]
    assert access[-1]["request_id"] == "rid-1" and access[-1]["status"] == 200
    assert access[-1]["route"] == "user-scores" and access[-1]["upstream_ms"] is not None
    assert audit[-1]["actor"] == record.key_id and audit[-1]["account"] == "acc_1"


async def test_redis_down_is_503_and_nothing_is_forwarded(
    make_gateway: GatewayFactory, redis_server: RedisServer, redis_url: str
) -> None:
    store = RedisStore(redis_url, prefix="down:", timeout=0.2)
    gw = await make_gateway(store=store)
    key = await gw.key()
    assert (await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})).status == 200
    redis_server.stop()
    try:
        gw.clock.advance(1.0)  # past the key cache
        response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 503
        assert (await response.json())["error"] == "service_unavailable"
        assert response.headers["Retry-After"] == "1"  # a failover is seconds
        assert len(gw.recorder.seen) == 1
    finally:
        redis_server.start()
    # The test Redis keeps nothing on disk, so its keys are gone; a new key works at once:
    # the gateway recovered without a restart.
    fresh = await gw.key()
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {fresh}"})
    assert response.status == 200
