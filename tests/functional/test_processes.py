"""Real ``gateway serve`` processes: the CLI, the admin API, replicas sharing Redis, streaming
large bodies."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from tests.support import (
    ADMIN_TOKEN,
    GatewayProcess,
    Recorder,
    base_url,
    gateway_command,
    write_config,
)

SCORES = "/v1/users/usr_a/scores"


def upstream_url(upstream: tuple[Recorder, TestServer]) -> str:
    return base_url(upstream[1])


def cli(config: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        gateway_command(*args, "--config", str(config)), capture_output=True, check=True, timeout=30
    )
    data: dict[str, Any] = orjson.loads(result.stdout)
    return data


async def status(session: aiohttp.ClientSession, base: str, key: str) -> int:
    async with session.get(base + SCORES, headers={"Authorization": f"Bearer {key}"}) as r:
        await r.read()
        return r.status


async def test_revocation_reaches_every_replica_within_one_second(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    url = upstream_url(upstream)
    first = write_config(tmp_path, url, store=redis_url, name="shared")
    # Same store and prefix, different ports: two replicas.
    second = write_config(tmp_path, url, store=redis_url, name="shared")
    for proc in (first, second):
        await asyncio.to_thread(proc.start)
        processes.append(proc)
    created = await asyncio.to_thread(
        cli,
        first.config,
        "keys",
        "create",
        "--account",
        "acc_1",
        "--environment",
        "live",
        "--label",
        "replicas",
    )
    key, key_id = created["key"], created["key_id"]
    listed = await asyncio.to_thread(cli, first.config, "keys", "list")
    assert [k["key_id"] for k in listed["keys"]] == [key_id]
    assert key not in str(listed)
    async with aiohttp.ClientSession() as session:
        for proc in (first, second):
            assert await status(session, proc.base, key) == 200
        # Both replicas now hold the key in their caches; revoke it through the CLI.
        await asyncio.to_thread(cli, first.config, "keys", "revoke", key_id)
        revoked_at = time.monotonic()
        pending = {first.base, second.base}
        while pending and time.monotonic() - revoked_at < 3:
            for base in list(pending):
                if await status(session, base, key) == 401:
                    pending.discard(base)
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - revoked_at
    assert not pending, "a replica still accepted the revoked key"
    # The contract's bound (one second), with margin for polling on a loaded machine.
    assert elapsed < 1.0 + 0.5


async def test_admin_api_manages_keys(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    proc = write_config(tmp_path, upstream_url(upstream))
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    admin = f"http://127.0.0.1:{proc.admin_port}"
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
            async with s.post(
                admin + "/admin/keys", json={"account": "acc_1"}, headers=headers
            ) as r:
                assert r.status == 401
        async with s.post(
            admin + "/admin/keys", json={"account": "acc_1", "environment": "sandbox"}, headers=auth
        ) as r:
            assert r.status == 201
            created = await r.json()
        assert created["key"].startswith("sk_sandbox_") and created["status"] == "active"
        assert await status(s, proc.base, created["key"]) == 200
        async with s.post(admin + f"/admin/keys/{created['key_id']}/rotate", headers=auth) as r:
            rotated = await r.json()
        assert await status(s, proc.base, created["key"]) == 401
        assert await status(s, proc.base, rotated["key"]) == 200
        async with s.get(admin + "/admin/keys", headers=auth) as r:
            listing = await r.json()
        assert {k["status"] for k in listing["keys"]} == {"active", "rotated"}
        assert "key" not in listing["keys"][0]
        async with s.post(admin + "/admin/keys", json={"account": "../x"}, headers=auth) as r:
            assert r.status == 400 and (await r.json())["details"]["field"] == "account"
        async with s.get(admin + "/healthz") as r:
            assert r.status == 200
        async with s.get(admin + "/readyz") as r:
            assert r.status == 200
        async with s.get(admin + "/metrics") as r:
            text = await r.text()
        assert 'gateway_requests_total{credential="api_key"' in text
    # The public listener does not serve the admin API (to a stranger it is a 401 like every
    # path; to a key holder, a path no rule serves).
    async with aiohttp.ClientSession() as s:
        async with s.get(proc.base + "/admin/keys", headers=auth) as r:
            assert r.status == 401
        key_auth = {"Authorization": f"Bearer {rotated['key']}"}
        async with s.get(proc.base + "/admin/keys", headers=key_auth) as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"


async def test_keys_cli_refuses_a_memory_store(tmp_path: Path) -> None:
    proc = write_config(tmp_path, "http://127.0.0.1:1")
    result = subprocess.run(
        gateway_command("keys", "list", "--config", str(proc.config)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "needs a shared store" in result.stderr


async def test_streams_large_bodies_each_way(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    """Bodies larger than any buffer cross a real process intact, both ways (how much memory
    that takes is measured by ``bench/memory.py stream``, not asserted here)."""
    proc = write_config(
        tmp_path, upstream_url(upstream), extra={"limits": {"max_body_bytes": 1 << 30}}
    )
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    recorder = upstream[0]
    total = 32 * 1024 * 1024
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{proc.admin_port}/admin/keys",
            json={"account": "acc_1"},
            headers=auth,
        ) as r:
            key = (await r.json())["key"]

        async def body() -> AsyncIterator[bytes]:
            chunk = b"z" * (1 << 20)
            for _ in range(32):
                yield chunk

        # Upload: a write route, the body streamed to the upstream.
        async with s.post(
            proc.base + "/v1/users", data=body(), headers={"Authorization": f"Bearer {key}"}
        ) as r:
            assert r.status == 200
            assert (await r.json())["received"] == total
        assert recorder.last.body_size == total
        # Download: the upstream streams the same amount back.
        received = 0
        async with s.get(
            proc.base + SCORES + f"?bytes={total}", headers={"Authorization": f"Bearer {key}"}
        ) as r:
            assert r.status == 200
            async for chunk in r.content.iter_chunked(1 << 20):
                received += len(chunk)
        assert received == total


async def test_one_mobile_token_500_concurrent_initializes_two_replicas_one_winner(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    url = upstream_url(upstream)
    replicas = [write_config(tmp_path, url, store=redis_url, name="race") for _ in range(2)]
    for proc in replicas:
        await asyncio.to_thread(proc.start)
        processes.append(proc)
    admin = f"http://127.0.0.1:{replicas[0].admin_port}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.post(
            admin + "/admin/keys",
            json={"account": "acc_1"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r:
            key = (await r.json())["key"]
        async with s.post(
            replicas[0].base + "/v1/auth/mobile-token",
            json={"user_id": "usr_abc123"},
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            assert r.status == 200
            mt = (await r.json())["token"]
        start = asyncio.Event()

        async def initialize(base: str) -> tuple[int, str]:
            await start.wait()
            async with s.post(
                base + "/v1/sdk/initialize", headers={"Authorization": f"Bearer {mt}"}
            ) as r:
                body = await r.json()
                return r.status, body.get("details", {}).get("reason", "ok")

        tasks = [asyncio.create_task(initialize(replicas[i % 2].base)) for i in range(500)]
        await asyncio.sleep(0.2)
        start.set()
        results = await asyncio.gather(*tasks)
    winners = [r for r in results if r[0] == 200]
    assert len(winners) == 1
    assert {r for r in results if r[0] != 200} == {(401, "used")}
