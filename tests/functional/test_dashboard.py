"""The Grafana dashboard shipped in k8s/grafana: every query is valid PromQL (promtool checks
them as recording rules), and every metric and label it reads is one a real gateway exports,
scraped after the requests that make each panel show something: traffic, refusals, tokens, an
upstream down, rate limits, spent failure budgets, a reload, and Redis stopped."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    ROOT,
    GatewayProcess,
    Recorder,
    RedisServer,
    admin_create_key,
    base_url,
    free_port,
    require_binary,
    write_config,
)

DASHBOARD = ROOT / "k8s/grafana/gateway-dashboard.json"
# Grafana's variables, as a query runs: the dashboard's own ($job, $instance) and the built-in
# interval; anything else left with a "$" fails the test.
VARIABLES = {"$__rate_interval": "1m", "$job": "gateway", "$instance": ".*"}
METRIC = re.compile(r"\bgateway_[a-z_]+\b")
SELECTOR = re.compile(r"\b(gateway_[a-z_]+)\{([^}]*)\}")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus when it scrapes


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query, Grafana's variables as a query run fills them."""
    found = []
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            found.append((panel["title"], expr))
    return found


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "prometheus")
    queries = expressions()
    assert len(queries) >= 20
    for title, expr in queries:
        assert "$" not in expr, (title, expr)  # a variable the test does not know
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(queries)} rules found" in check.stdout


def test_panels_are_laid_out_without_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A Redis of this test's own: it is stopped halfway, to see the store's failures."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateway_proc(
    tmp_path: Path, redis: RedisServer, upstream: tuple[Recorder, TestServer]
) -> Iterator[GatewayProcess]:
    proc = write_config(
        tmp_path,
        base_url(upstream[1]),
        store=redis.url,
        name="dashboard",
        extra={
            "upstreams": {
                "live": {"url": base_url(upstream[1])},
                "sandbox": {"url": f"http://127.0.0.1:{free_port()}"},  # nothing listens
            },
            # Key records stay usable while Redis is down, so rate limits meet the outage.
            "api_keys": {"stale_window": "60s"},
            "rate_limits": {"rules": [{"group": "default", "limit": 50, "period": "1m"}]},
            "abuse": {
                "enabled": True,
                "burst": 2,
                "failures_per_minute": 1,
                "trusted_proxies": ["127.0.0.0/8"],
                "on_store_error": "allow",
            },
        },
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_every_metric_and_label_it_reads_is_exported(
    gateway_proc: GatewayProcess, redis: RedisServer
) -> None:
    proc = gateway_proc
    live = await asyncio.to_thread(admin_create_key, proc, "acc_1", "live")
    sandbox = await asyncio.to_thread(admin_create_key, proc, "acc_1", "sandbox")
    statuses: list[int] = []

    async def call(s: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> Any:
        async with s.request(method, proc.base + path, **kw) as r:
            statuses.append(r.status)
            return await r.json(content_type=None)

    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    # A reload first: it replaces the key caches the outage below relies on.
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(1.0)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            await call(s, "GET", "/v1/users/usr_a/scores", headers=auth(live))
        user = await call(
            s, "POST", "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=auth(live)
        )
        await call(s, "GET", "/v1/users/usr_b/scores", headers=auth(user["token"]))  # wrong_user
        issued = await call(
            s, "POST", "/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=auth(live)
        )
        for _ in range(2):  # consumed, then used
            await call(s, "POST", "/v1/sdk/initialize", headers=auth(issued["token"]))
        await call(s, "GET", "/v1/users/usr_a/scores", headers=auth(sandbox))  # upstream down
        rate_limited = await asyncio.to_thread(admin_create_key, proc, "acc_2", "live")
        for _ in range(52):
            await call(s, "GET", "/v1/users/usr_b/daily", headers=auth(rate_limited))
        # A client (behind a trusted proxy) spends its budget of failed authentications.
        for _ in range(4):
            await call(
                s,
                "GET",
                "/v1/users/usr_a/scores",
                headers={**auth("sk_live_" + "x" * 43), "X-Forwarded-For": "203.0.113.7"},
            )
        # Redis stops: the store's failures, under both policies.
        await asyncio.to_thread(redis.stop)
        await call(s, "GET", "/v1/users/usr_a/scores", headers=auth(live))
        await call(
            s,
            "GET",
            "/v1/users/usr_a/scores",
            headers={**auth("sk_live_" + "y" * 43), "X-Forwarded-For": "198.51.100.4"},
        )
        async with s.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as r:
            text = await r.text()
    for status in (200, 401, 403, 429, 502, 503):
        assert status in statuses, (status, statuses)

    exported: dict[str, set[str]] = {}  # sample name -> the label names its samples carry
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    for title, expr in expressions():
        used = set(METRIC.findall(expr))
        missing = used - set(exported)
        assert not missing, (title, missing)
        labels = set().union(*(exported[name] for name in used))
        for name, matchers in SELECTOR.findall(expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in exported[name] | SCRAPE_LABELS, (title, name, label)
        for grouping in GROUPING.findall(expr):
            for label in (part.strip() for part in grouping.split(",")):
                assert label in labels | SCRAPE_LABELS, (title, label)
    # The variables' own queries read a metric every gateway exports.
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert set(METRIC.findall(variable["definition"])) == {"gateway_build_info"}
