"""Request metrics: bound label values, counted apart and flushed into the registry exactly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from gateway.app import create_admin_app
from gateway.observe.metrics import Metrics
from gateway.runtime import Current, build_runtime, flush_metrics, runtime_ctx, watch_store
from gateway.stores.memory import MemoryStore
from tests.conftest import GatewayFactory, make_settings

SCORES = "/v1/users/usr_a/scores"
REQUESTS = (
    'gateway_requests_total{credential="api_key",method="GET",route="user-scores",status="200"}'
)


def exported(metrics: Metrics) -> str:
    metrics.flush()
    return generate_latest(metrics.registry).decode()


def test_invented_methods_fold_to_other_and_do_not_grow_the_label_set() -> None:
    metrics = Metrics()
    for i in range(500):
        metrics.request_done("users", f"X{i}", "api_key", 200, 0.001)
    metrics.request_done("users", "GET", "api_key", 200, 0.001)
    text = exported(metrics)
    assert (
        'gateway_requests_total{credential="api_key",method="OTHER",route="users",status="200"}'
        " 500.0" in text
    )
    assert 'method="GET"' in text and 'method="X1"' not in text
    assert len(metrics._requests) == 2  # SECURITY: bounded by the folded label values


def test_auth_decisions_and_upstream_durations_are_counted_per_label_set() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.auth_decision("user_token", "deny", "token_expired")
    metrics.upstream_done("live", 0.002)
    metrics.upstream_done("live", 0.004)
    text = exported(metrics)
    assert (
        'gateway_auth_decisions_total{credential="user_token",outcome="deny",'
        'reason="token_expired"} 3.0' in text
    )
    assert 'gateway_upstream_duration_seconds_count{upstream="live"} 2.0' in text


def test_a_flush_exports_exact_counts_and_buckets() -> None:
    metrics = Metrics()
    # On the smallest bound (its own bucket, ≤), between bounds, above the largest (+Inf only).
    for seconds in (0.0001, 0.003, 20.0):
        metrics.request_done("users", "GET", "api_key", 200, seconds)
    metrics.request_done("users", "GET", "api_key", 401, 0.0001)
    stats = metrics.cache_stats("api_key")
    stats.hit.inc()
    stats.hit.inc()
    stats.miss.inc()
    metrics.observe_store("get", 0.25, ok=True)
    before = generate_latest(metrics.registry).decode()
    # Counted, not yet flushed: the series exist, at zero.
    assert 'gateway_cache_lookups_total{cache="api_key",result="hit"} 0.0' in before
    assert 'gateway_request_duration_seconds_count{route="users"} 0.0' in before
    text = exported(metrics)
    lines = set(text.splitlines())
    requests = 'gateway_requests_total{credential="api_key",method="GET",route="users"'
    bucket = "gateway_request_duration_seconds_bucket"
    expected = {
        requests + ',status="200"} 3.0',
        requests + ',status="401"} 1.0',
        bucket + '{le="0.0001",route="users"} 2.0',
        bucket + '{le="0.00025",route="users"} 2.0',
        bucket + '{le="0.0025",route="users"} 2.0',
        bucket + '{le="0.005",route="users"} 3.0',
        bucket + '{le="10.0",route="users"} 3.0',
        bucket + '{le="+Inf",route="users"} 4.0',
        'gateway_request_duration_seconds_count{route="users"} 4.0',
        f'gateway_request_duration_seconds_sum{{route="users"}} {0.0001 + 0.003 + 20.0 + 0.0001}',
        'gateway_cache_lookups_total{cache="api_key",result="hit"} 2.0',
        'gateway_cache_lookups_total{cache="api_key",result="miss"} 1.0',
        'gateway_store_operation_duration_seconds_bucket{le="0.25",operation="get"} 1.0',
        'gateway_store_operation_duration_seconds_bucket{le="0.1",operation="get"} 0.0',
    }
    assert expected <= lines, expected - lines


def test_flushing_again_does_not_count_again() -> None:
    metrics = Metrics()
    metrics.request_done("users", "GET", "api_key", 200, 0.5)
    metrics.cache_stats("decision").miss.inc()
    first = exported(metrics)
    assert exported(metrics) == first
    metrics.request_done("users", "GET", "api_key", 200, 0.5)
    metrics.cache_stats("decision").miss.inc()  # the same count as the first call's
    text = exported(metrics)
    assert (
        'gateway_requests_total{credential="api_key",method="GET",route="users",status="200"} 2.0'
        in text
    )
    assert 'gateway_request_duration_seconds_sum{route="users"} 1.0' in text
    assert 'gateway_cache_lookups_total{cache="decision",result="miss"} 2.0' in text


async def test_a_scrape_of_the_admin_app_counts_the_request_just_answered(
    make_gateway: GatewayFactory, aiohttp_client: Any
) -> None:
    gw = await make_gateway()
    admin = await aiohttp_client(create_admin_app(gw.current))
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {await gw.key()}"})
    assert response.status == 200
    scrape = await admin.get("/metrics")
    assert REQUESTS + " 1.0" in (await scrape.text()).splitlines()


async def test_the_runtime_flushes_every_second_until_it_closes() -> None:
    current = Current(build_runtime(make_settings("http://127.0.0.1:1"), store=MemoryStore()))
    metrics = current.runtime.metrics
    app = web.Application()
    app.cleanup_ctx.append(runtime_ctx(current))
    app.freeze()
    others = asyncio.all_tasks()
    await app.startup()
    started = {task.get_coro().__qualname__: task for task in asyncio.all_tasks() - others}  # type: ignore[union-attr]
    # The runtime's two tasks: the metrics' flusher, and the store watch (gateway.keys.watch).
    assert set(started) == {flush_metrics.__qualname__, watch_store.__qualname__}
    flusher, watcher = started[flush_metrics.__qualname__], started[watch_store.__qualname__]

    def requests() -> float | None:
        labels = {"route": "r", "method": "GET", "credential": "api_key", "status": "200"}
        return metrics.registry.get_sample_value("gateway_requests_total", labels)

    metrics.request_done("r", "GET", "api_key", 200, 0.001)
    deadline = time.monotonic() + 5
    while requests() != 1.0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert requests() == 1.0  # flushed by the task, nobody scraped
    metrics.request_done("r", "GET", "api_key", 200, 0.001)
    await app.cleanup()
    assert flusher.cancelled() and watcher.cancelled()
    assert requests() == 2.0  # what was pending at shutdown was flushed
