"""Redis behind Sentinel and as a Cluster, from the config file alone: what only a topology with
replicas can show (writes no replica holds), credentials and TLS, and two `gateway serve`
replicas on each topology. Failover itself (a master killed) is in
tests/functional/test_failover.py (slow)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme
from aiohttp.test_utils import TestServer

from gateway.cli import main
from gateway.config.store import StoreSettings
from gateway.errors import StoreUnavailable
from gateway.stores.base import MobileState
from gateway.stores.redis import open_redis_store
from tests.stores.conftest import topology_store
from tests.support import (
    ADMIN_TOKEN,
    STORE_PASSWORD,
    GatewayProcess,
    Recorder,
    RedisNode,
    SentinelTopology,
    base_url,
    free_port,
    gateway_command,
    write_config,
)

NOW = 1_700_000_000.0
TOPOLOGIES = ["sentinel", "cluster"]


@pytest.fixture(params=TOPOLOGIES)
def topology(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_topology")


async def test_writes_no_replica_holds_are_not_accepted(
    topology: Any, log_lines: io.StringIO
) -> None:
    """With replication cut off, a consumption is refused (503) and the token stays usable;
    revoking a key or a relationship is not confirmed. Without `min_replicas_ack` the same
    consumption is accepted: the loss a failover would then cause is the deployment's choice."""
    prefix = f"acked-{time.monotonic_ns()}:"
    store = topology_store(topology, prefix=prefix)
    unacked = topology_store(topology, prefix=prefix, min_replicas_ack=0)
    try:
        for digest in ("m1", "m2"):
            await store.put_mobile(digest, b"rec", NOW, NOW + 300, NOW + 3600)
        topology.block_replication()
        try:
            with pytest.raises(StoreUnavailable) as refused:
                await store.consume_mobile("m1", NOW)
            assert refused.value.details == {"store": "redis", "reason": "not_replicated"}
            # ...and the log says why (an operator sees 503s and needs the cause).
            warned = [json.loads(line) for line in log_lines.getvalue().splitlines()]
            assert any(line.get("exc_type") == "not_replicated" for line in warned), warned
            assert await store.peek_mobile("m1", NOW) == (MobileState.OK, b"rec")
            for write in (
                store.put_key("key_1", "d1", b"revoked", "acc_1"),
                store.set_relationship("acc_1", "mem_1", "mem_2", False),
            ):
                with pytest.raises(StoreUnavailable):
                    await write
            assert await unacked.consume_mobile("m2", NOW) == (MobileState.OK, b"rec")
        finally:
            await asyncio.to_thread(topology.restore_replication)
        assert await store.consume_mobile("m1", NOW) == (MobileState.OK, b"rec")
        assert await store.consume_mobile("m1", NOW) == (MobileState.USED, None)
    finally:
        await store.close()
        await unacked.close()


async def test_wrong_credentials_fail_closed(topology: Any) -> None:
    store = topology_store(topology, password="not-the-password")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.key_by_digest("d1")
    finally:
        await store.close()
    right = topology_store(topology)
    try:
        await right.ping()
    finally:
        await right.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gateway_command(*args),
        capture_output=True,
        text=True,
        timeout=30,
    )


async def status(session: aiohttp.ClientSession, url: str, key: str = "") -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with session.get(url, headers=headers) as response:
        await response.read()
        return response.status


def test_check_config_names_the_topology_and_no_secret(
    tmp_path: Path, topology: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    section = topology.store_section()
    config = write_config(tmp_path, "http://127.0.0.1:1", store=section).config
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    kind = "sentinel" if isinstance(topology, SentinelTopology) else "cluster"
    assert f"store redis {kind} " in out and section[kind]["nodes"][0] in out
    assert "password" not in out and STORE_PASSWORD not in out


async def test_two_replicas_serve_from_config_alone_and_see_a_revocation_within_a_second(
    tmp_path: Path,
    topology: Any,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    replicas = [
        write_config(tmp_path, base_url(upstream[1]), store=topology.store_section(), name="topo")
        for _ in range(2)
    ]
    processes.extend(replicas)
    await asyncio.gather(*(asyncio.to_thread(proc.start) for proc in replicas))
    # The CLI finds the store from the same file.
    created = await asyncio.to_thread(
        cli, "keys", "create", "--config", str(replicas[0].config), "--account", "acc_1"
    )
    assert created.returncode == 0, created.stderr
    key, key_id = (orjson.loads(created.stdout)[k] for k in ("key", "key_id"))
    scores = "/v1/users/usr_a/scores"
    admin = f"http://127.0.0.1:{replicas[1].admin_port}"
    async with aiohttp.ClientSession() as session:
        for proc in replicas:
            assert await status(session, f"http://127.0.0.1:{proc.admin_port}/readyz") == 200
            assert await status(session, proc.base + scores, key) == 200
        async with session.post(
            f"{admin}/admin/keys/{key_id}/revoke",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response:
            assert response.status == 200
        revoked_at = time.monotonic()
        pending = {proc.base for proc in replicas}
        while pending and time.monotonic() - revoked_at < 3:
            for base in list(pending):
                if await status(session, base + scores, key) == 401:
                    pending.discard(base)
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - revoked_at
    assert not pending, "a replica still accepted the revoked key"
    assert elapsed < 1.0 + 0.25  # the bound, plus margin


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A standalone redis-server that speaks TLS only, and the CA that signed its certificate."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = tmp_path / "r.crt", tmp_path / "r.key", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    port = free_port()
    node = RedisNode(
        port,
        [
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(cert_path), "--tls-key-file", str(key_path)),
            *("--tls-ca-cert-file", str(ca_path), "--tls-auth-clients", "no"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
    )
    node.start()
    yield port, ca_path
    node.stop()


async def test_tls_with_the_ca_the_config_names(
    tmp_path: Path, tls_redis: tuple[int, Path]
) -> None:
    port, ca_path = tls_redis
    trusted = open_redis_store(
        StoreSettings.model_validate(
            {"url": f"rediss://127.0.0.1:{port}/0", "tls": {"ca_file": str(ca_path)}}
        )
    )
    try:
        await trusted.put_mobile("m1", b"rec", NOW, NOW + 300, NOW + 3600)
        assert await trusted.consume_mobile("m1", NOW) == (MobileState.OK, b"rec")
    finally:
        await trusted.close()
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    untrusted = open_redis_store(
        StoreSettings.model_validate(
            {"url": f"rediss://127.0.0.1:{port}/0", "tls": {"ca_file": str(other_ca)}}
        )
    )
    try:
        with pytest.raises(StoreUnavailable):  # a server the CA does not vouch for
            await untrusted.ping()
    finally:
        await untrusted.close()


def test_the_kubernetes_sentinel_overlay_names_a_store_the_gateway_accepts() -> None:
    import yaml

    root = Path(__file__).resolve().parent.parent.parent
    document = yaml.safe_load((root / "k8s/overlays/redis-sentinel/gateway.yaml").read_text())
    section = document["store"]
    section["password"] = section["sentinel"]["password"] = "expanded-from-the-secret"
    store = StoreSettings.model_validate(section)
    assert store.topology == "sentinel" and store.replicas_ack == 1
    assert [f"{h}:{p}" for h, p in store.sentinel.nodes] == [  # type: ignore[union-attr]
        f"redis-{i}.redis:26379" for i in range(3)
    ]
