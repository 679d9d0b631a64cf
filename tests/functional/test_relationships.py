"""Caregiver relationships managed end to end: through the admin API of a running gateway, and
with ``gateway relationships grant|revoke`` against the Redis store that replicas share."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_admin_app
from tests.conftest import Gateway, GatewayFactory
from tests.support import (
    ADMIN_TOKEN,
    GatewayProcess,
    Recorder,
    base_url,
    gateway_command,
    write_config,
)

SCORES = "/v1/users/mem_1/scores"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PAIR = {"account": "acc_1", "subject": "mem_1", "actor": "mem_2"}


def caregiver_token(key: str, key_id: str, now: float, subject: str = "mem_1") -> str:
    claims = {"sub": subject, "act": "mem_2", "iat": int(now), "exp": int(now) + 600, "scopes": []}
    return jwt.encode(claims, key.encode(), algorithm="HS256", headers={"kid": key_id})


async def outcome(session: Any, url: str, token: str) -> tuple[int, str]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.read()
        if response.status == 200:
            return 200, "ok"
        return response.status, orjson.loads(body)["details"].get("reason", "")


INACTIVE = (403, "relationship_inactive")


@pytest.fixture
async def admin(
    make_gateway: GatewayFactory, aiohttp_client: Any
) -> tuple[Gateway, TestClient[Any, Any]]:
    gw = await make_gateway(admin={"token": ADMIN_TOKEN})
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    return gw, client


async def test_admin_api_grants_and_revokes_a_caregiver(
    admin: tuple[Gateway, TestClient[Any, Any]],
) -> None:
    gw, client = admin
    key, record = await gw.runtime.keys.create("acc_1", "live")
    token = caregiver_token(key, record.key_id, gw.clock.now())
    assert await outcome(gw.client, SCORES, token) == INACTIVE
    # Granted in another account: no effect on acc_1's caregiver.
    response = await client.put(
        "/admin/relationships", json={**PAIR, "account": "acc_2"}, headers=ADMIN
    )
    assert response.status == 200
    gw.clock.advance(1.0)
    assert await outcome(gw.client, SCORES, token) == INACTIVE
    # Granted in acc_1: the caregiver reads mem_1's data, attributed to mem_2.
    response = await client.put("/admin/relationships", json=PAIR, headers=ADMIN)
    assert response.status == 200
    assert await response.json() == {**PAIR, "active": True}
    gw.clock.advance(1.0)  # past the one-second negative cache
    assert await outcome(gw.client, SCORES, token) == (200, "ok")
    seen = gw.recorder.last.headers
    assert seen["x-auth-user"] == ["mem_1"] and seen["x-auth-actor"] == ["mem_2"]
    assert seen["x-auth-account"] == ["acc_1"]
    # Only for that subject: mem_2 is nobody's caregiver but mem_1's.
    other = caregiver_token(key, record.key_id, gw.clock.now(), subject="mem_3")
    assert await outcome(gw.client, "/v1/users/mem_3/scores", other) == INACTIVE
    # Revoked: refused again within the one-second bound.
    response = await client.delete("/admin/relationships", json=PAIR, headers=ADMIN)
    assert response.status == 200
    assert await response.json() == {**PAIR, "active": False}
    gw.clock.advance(1.0)
    assert await outcome(gw.client, SCORES, token) == INACTIVE
    forwarded = len(gw.recorder.seen)
    assert await outcome(gw.client, SCORES, token) == INACTIVE
    assert len(gw.recorder.seen) == forwarded


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**PAIR, "actor": "../mem_2"}, "actor"),
        ({**PAIR, "subject": "mem 1"}, "subject"),
        ({**PAIR, "account": ""}, "account"),
        ({"subject": "mem_1", "actor": "mem_2"}, "account"),
        ({**PAIR, "actor": 7}, "actor"),
    ],
)
async def test_admin_api_refuses_bad_relationships(
    admin: tuple[Gateway, TestClient[Any, Any]], body: dict[str, Any], field: str
) -> None:
    gw, client = admin
    response = await client.put("/admin/relationships", json=body, headers=ADMIN)
    answer = await response.json()
    assert (response.status, answer["error"], answer["details"]) == (
        400,
        "invalid_request",
        {"field": field},
    )
    assert not await gw.runtime.store.relationship_active("acc_1", "mem_1", "mem_2")


async def test_admin_api_relationships_need_the_admin_token(
    admin: tuple[Gateway, TestClient[Any, Any]],
) -> None:
    gw, client = admin
    for method in ("PUT", "DELETE"):
        response = await client.request(
            method, "/admin/relationships", json=PAIR, headers={"Authorization": "Bearer nope"}
        )
        assert response.status == 401
    response = await client.put(
        "/admin/relationships",
        data=b"[1, 2]",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert not await gw.runtime.store.relationship_active("acc_1", "mem_1", "mem_2")


# --- the CLI against a running gateway's Redis store ------------------------------------------


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gateway_command("relationships", *args, "--config", str(config)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def until(session: Any, url: str, token: str, wanted: tuple[int, str]) -> float:
    """Seconds until the gateway answers ``wanted`` (polling for at most 5 s)."""
    started = time.monotonic()
    while time.monotonic() - started < 5:
        if await outcome(session, url, token) == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"still not {wanted} after 5 s")


async def test_cli_grants_and_revokes_on_a_running_gateway(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    url = base_url(upstream[1])
    proc = write_config(tmp_path, url, store=redis_url, name=f"rel{tmp_path.name[-6:]}")
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{proc.admin_port}/admin/keys",
            json={"account": "acc_1"},
            headers=ADMIN,
        ) as r:
            created = await r.json()
        token = caregiver_token(created["key"], created["key_id"], time.time())
        assert await outcome(s, proc.base + SCORES, token) == INACTIVE

        args = ["--account", "acc_1", "--subject", "mem_1", "--actor", "mem_2"]
        granted = await asyncio.to_thread(cli, proc.config, "grant", *args)
        assert granted.returncode == 0, granted.stderr
        assert orjson.loads(granted.stdout) == {**PAIR, "active": True}
        await until(s, proc.base + SCORES, token, (200, "ok"))
        assert upstream[0].last.headers["x-auth-actor"] == ["mem_2"]

        revoked = await asyncio.to_thread(cli, proc.config, "revoke", *args)
        assert revoked.returncode == 0, revoked.stderr
        assert orjson.loads(revoked.stdout) == {**PAIR, "active": False}
        # The contract's bound: a revocation takes effect within one second (plus margin).
        assert await until(s, proc.base + SCORES, token, INACTIVE) < 1.0 + 0.5

        # A hostile identifier is refused by the CLI and changes nothing.
        bad = await asyncio.to_thread(
            cli, proc.config, "grant", "--account", "acc_1", "--subject", "mem_1", "--actor", "*"
        )
        assert bad.returncode == 2 and "--actor must be" in bad.stderr and bad.stdout == ""
        assert await outcome(s, proc.base + SCORES, token) == INACTIVE
