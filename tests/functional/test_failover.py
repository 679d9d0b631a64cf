"""Failover for real: a Redis master killed with SIGKILL and promoted away, on Sentinel and on a
Cluster started by the test (127.0.0.1 only, each test bounded to about a minute).

Replication is cut off a moment before the kill (the replication user is disabled on the master,
its replica link dropped), so that writes the master took in that moment exist nowhere else: on
127.0.0.1 replication is otherwise so fast that a kill would almost never lose a write, and
"nothing was accepted twice" would hold whether the gateway waits for replicas or not. The
store-level test shows both sides (without ``min_replicas_ack`` tokens *are* accepted twice); the
load test drives two ``gateway serve`` replicas through the failover and reports its figures
(printed; run with ``-s`` to see them, or set ``GATEWAY_FAILOVER_REPORT`` to a file to collect
them as JSON lines).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.crc import key_slot

from gateway.config.store import StoreSettings
from gateway.errors import StoreUnavailable
from gateway.stores.base import MobileState
from gateway.stores.redis import RedisStore, open_redis_store
from tests.support import (
    ADMIN_TOKEN,
    ClusterTopology,
    GatewayProcess,
    Recorder,
    RedisNode,
    SentinelTopology,
    base_url,
    write_config,
)

pytestmark = pytest.mark.slow

NOW = 1_700_000_000.0
SCORES = "/v1/users/usr_a/scores"
Topology = SentinelTopology | ClusterTopology


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A topology of the test's own: the test kills one of its masters."""
    started: Topology = SentinelTopology() if request.param == "sentinel" else ClusterTopology()
    yield started
    started.stop()


def victim(topology: Topology, key: str) -> RedisNode:
    """The master serving ``key``."""
    if isinstance(topology, SentinelTopology):
        return topology.master
    return topology.master_of(key)


def promoted(topology: Topology, key: str, old: RedisNode) -> RedisNode:
    if isinstance(topology, SentinelTopology):
        return topology.wait_promoted(old)
    return topology.wait_promoted(key, old)


def store_on(topology: Topology, prefix: str, **extra: Any) -> RedisStore:
    section = topology.store_section(prefix=prefix, **extra)
    return open_redis_store(StoreSettings.model_validate(section))


async def eventually(call: Any, seconds: float = 30.0) -> Any:
    """``call()`` until the store answers (it recovers by itself after the promotion)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_consumption_no_replica_holds_is_never_accepted_twice(topology: Topology) -> None:
    """Twenty tokens are consumed through a store that waits for a replica and twenty through
    one that does not, while the master serving them has its replication cut off; then it
    dies. On the promoted replica the first twenty were never accepted (503, undone) and are
    accepted once now; the other twenty were accepted, the promotion lost that, and they are
    accepted a second time."""
    prefix = f"drill{time.monotonic_ns()}:"
    acked, unacked = store_on(topology, prefix), store_on(topology, prefix, min_replicas_ack=0)
    old = victim(topology, f"{prefix}mobile:t0")
    # Tokens the master about to die serves (on the Cluster, tokens hash to three masters).
    on_victim = [f"t{i}" for i in range(40)]
    if isinstance(topology, ClusterTopology):
        ranges = topology.slots_of(old)
        names = (f"t{i}" for i in range(10_000))
        on_victim = [
            n
            for n in names
            if any(low <= key_slot(f"{prefix}mobile:{n}".encode()) <= high for low, high in ranges)
        ][:40]
    guarded, unguarded = on_victim[:20], on_victim[20:]
    accepted: Counter[str] = Counter()
    try:
        for digest in on_victim:
            await acked.put_mobile(digest, b"rec", NOW, NOW + 300, NOW + 3600)
        await asyncio.to_thread(old.wait_replicated)  # every replica has the fresh tokens
        old.block_replication()
        for digest in guarded:
            try:
                state, _ = await acked.consume_mobile(digest, NOW)
            except StoreUnavailable:
                continue
            accepted[digest] += state is MobileState.OK
        for digest in unguarded:
            state, _ = await unacked.consume_mobile(digest, NOW)
            accepted[digest] += state is MobileState.OK
        old.kill()
        await asyncio.to_thread(promoted, topology, f"{prefix}mobile:t0", old)
        # The promoted replica has no replica of its own: until one is back (the dead node
        # restarted, as an orchestrator would, and re-synced) a consumption is 503.
        await asyncio.to_thread(old.restart)
        unknown = 0
        for digest in guarded + unguarded:
            state, _ = await eventually(lambda d=digest: acked.consume_mobile(d, NOW))
            accepted[digest] += state is MobileState.OK
            unknown += state is MobileState.UNKNOWN
    finally:
        await acked.close()
        await unacked.close()
    lost = sorted(d for d in unguarded if accepted[d] > 1)
    twice = sorted(d for d in guarded if accepted[d] > 1)
    print(
        f"\n{type(topology).__name__}: with min_replicas_ack 1, accepted twice {len(twice)} of "
        f"{len(guarded)}; with 0, {len(lost)} of {len(unguarded)}; unknown after it {unknown}"
    )
    assert twice == []  # whatever the topology did: never accepted twice
    if unknown:
        # The new master does not know tokens every replica had before the cut: the topology
        # lost data it had replicated (seen in two CI runs of five on Sentinel), so
        # what follows cannot be judged. Not accepted is failing closed; the assertion above
        # held.
        pytest.skip("the promoted master lost the replicated tokens: the drill's premise failed")
    assert all(accepted[d] == 1 for d in guarded)  # each accepted once, after the failover
    # The control: the loss is real. Every token consumed without an acknowledgement was
    # accepted on the dead master and again on its successor.
    assert lost == sorted(unguarded)


# -- two gateway replicas under load ----------------------------------------------------------


@dataclass
class Drill:
    """What the load saw, timed from the kill (monotonic seconds)."""

    killed_at: float = 0.0
    promoted_at: float = 0.0
    replica_back_at: float = 0.0
    events: list[tuple[float, float, str, int]] = field(default_factory=list)
    wrongly_allowed: list[str] = field(default_factory=list)
    unexpected: list[tuple[str, int]] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)
    issued: list[str] = field(default_factory=list)
    ready: list[tuple[float, int]] = field(default_factory=list)

    def record(self, started: float, op: str, status: int, expected: set[int]) -> None:
        self.events.append((started, time.monotonic(), op, status))
        if status not in expected | {503}:
            self.unexpected.append((op, status))

    def figures(self) -> dict[str, Any]:
        after = [(s, e, op, st) for s, e, op, st in self.events if s >= self.killed_at]
        failures = [e for _, e, _, st in after if st == 503]
        first_failure = min(failures, default=self.killed_at)
        last_failure = max(failures, default=self.killed_at)
        # What needs no replica: everything but a mobile token's consumption.
        others = [e for _, e, op, st in after if st == 503 and op != "initialize"]
        # Recovery of the store's writes: a mobile token issued (a write on a master) by a
        # request sent after the outage showed.
        writes = [e for s, e, op, st in after if op == "issue" and st == 200 and s >= first_failure]
        return {
            "requests": len(self.events),
            "requests_after_kill": len(after),
            "503_after_kill": len(failures),
            "first_503_s": round(first_failure - self.killed_at, 2),
            "promoted_s": round(self.promoted_at - self.killed_at, 2),
            "replica_back_s": round(self.replica_back_at - self.killed_at, 2),
            "first_success_s": round(min(writes, default=float("nan")) - self.killed_at, 2),
            "zero_errors_except_initialize_s": round(
                max(others, default=self.killed_at) - self.killed_at, 2
            ),
            "zero_errors_s": round(last_failure - self.killed_at, 2),
            "wrongly_allowed": len(self.wrongly_allowed),
            "non_503_5xx": sum(1 for _, st in self.unexpected if st >= 500 or st == 0),
            "unexpected": len(self.unexpected),
            "mobile_consumed": sum(1 for n in self.accepted.values() if n),
            "accepted_twice": sum(1 for n in self.accepted.values() if n > 1),
            "readyz_503_after_kill": sum(
                1 for t, st in self.ready if t >= self.killed_at and st != 200
            ),
        }


class Load:
    """Workers sending a bounded mixed load to two gateway replicas: API keys (valid and
    revoked), a user token, mobile issue + initialize pairs (each accepted token tried again on
    the other replica)."""

    def __init__(
        self, session: aiohttp.ClientSession, replicas: list[GatewayProcess], drill: Drill
    ) -> None:
        self.s, self.replicas, self.drill = session, replicas, drill
        self.key = self.revoked = self.user_token = ""
        self.stopping = asyncio.Event()

    async def call(self, method: str, url: str, token: str, **kw: Any) -> tuple[int, Any]:
        try:
            async with self.s.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, **kw
            ) as response:
                body = await response.json(content_type=None)
                return response.status, body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, None

    async def get(self, op: str, base: str, token: str, ok: set[int]) -> int:
        started = time.monotonic()
        status, _ = await self.call("GET", base + SCORES, token)
        self.drill.record(started, op, status, ok)
        return status

    async def mobile(self, first: str, second: str) -> None:
        started = time.monotonic()
        status, body = await self.call(
            "POST", first + "/v1/auth/mobile-token", self.key, json={"user_id": "usr_a"}
        )
        self.drill.record(started, "issue", status, {200})
        if status != 200:
            return
        token = body["token"]
        self.drill.issued.append(token)
        for base in (second, first):  # the second try must be refused: used
            started = time.monotonic()
            status, _ = await self.call("POST", base + "/v1/sdk/initialize", token)
            self.drill.record(started, "initialize", status, {200, 401})
            if status == 200:
                self.drill.accepted[token] += 1
            if status != 200:
                return

    async def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stopping.is_set():
            first, second = rng.sample([p.base for p in self.replicas], 2)
            op = rng.randrange(4)
            if op == 0:
                await self.get("api_key", first, self.key, {200})
            elif op == 1:
                if await self.get("revoked_key", first, self.revoked, {401}) == 200:
                    self.drill.wrongly_allowed.append("revoked_key")
            elif op == 2:
                await self.get("user_token", first, self.user_token, {200})
            else:
                await self.mobile(first, second)

    async def readiness(self) -> None:
        while not self.stopping.is_set():
            for proc in self.replicas:
                status, _ = await self.call(
                    "GET", f"http://127.0.0.1:{proc.admin_port}/readyz", ADMIN_TOKEN
                )
                self.drill.ready.append((time.monotonic(), status))
            await asyncio.sleep(0.1)

    async def recheck(self) -> None:
        """Every token ever issued, tried once more on each replica: none may be accepted
        again (one accepted now for the first time is fine)."""
        semaphore = asyncio.Semaphore(16)

        async def again(token: str) -> None:
            async with semaphore:
                for proc in self.replicas:
                    status, _ = await self.call("POST", proc.base + "/v1/sdk/initialize", token)
                    if status == 200:
                        self.drill.accepted[token] += 1
                    elif status not in (401,):
                        self.drill.unexpected.append(("recheck", status))

        await asyncio.gather(*(again(token) for token in self.drill.issued))


async def admin(session: aiohttp.ClientSession, proc: GatewayProcess, path: str, **kw: Any) -> Any:
    async with session.post(
        f"http://127.0.0.1:{proc.admin_port}{path}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        **kw,
    ) as response:
        assert response.status in (200, 201), await response.text()
        return await response.json()


async def test_failover_under_load_two_replicas(
    tmp_path: Path,
    topology: Topology,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    extra = {
        "rate_limits": {"rules": [{"group": "default", "limit": 1_000_000, "period": "1m"}]},
        "log_level": "WARNING",
    }
    replicas = [
        write_config(
            tmp_path,
            base_url(upstream[1]),
            store=topology.store_section(),
            name="drill",
            extra=extra,
        )
        for _ in range(2)
    ]
    processes.extend(replicas)
    await asyncio.gather(*(asyncio.to_thread(proc.start) for proc in replicas))
    drill = Drill()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        load = Load(session, replicas, drill)
        load.key = (await admin(session, replicas[0], "/admin/keys", json={"account": "acc_1"}))[
            "key"
        ]
        revoked = await admin(session, replicas[0], "/admin/keys", json={"account": "acc_1"})
        await admin(session, replicas[1], f"/admin/keys/{revoked['key_id']}/revoke")
        load.revoked = revoked["key"]
        status, body = await load.call(
            "POST", replicas[0].base + "/v1/auth/user-token", load.key, json={"user_id": "usr_a"}
        )
        assert status == 200
        load.user_token = body["token"]

        tasks = [asyncio.create_task(load.worker(seed)) for seed in range(6)]
        tasks.append(asyncio.create_task(load.readiness()))
        try:
            await asyncio.sleep(2.0)  # warm: every kind of request succeeds
            # The API keys' master (on the Cluster, the node serving {apikeys}).
            old = victim(topology, "drill:{apikeys}:all")
            old.block_replication()
            await asyncio.sleep(0.3)
            old.kill()
            drill.killed_at = time.monotonic()
            await asyncio.to_thread(promoted, topology, "drill:{apikeys}:all", old)
            drill.promoted_at = time.monotonic()
            # The dead node restarted (as an orchestrator would) becomes the new master's
            # replica: mobile tokens are consumed again once it is in sync.
            await asyncio.to_thread(old.restart)
            await asyncio.to_thread(topology.wait_ready)
            drill.replica_back_at = time.monotonic()
            # Until three seconds without a 503, at most 30 s after the kill.
            while time.monotonic() - drill.killed_at < 30:
                last = max(
                    (e for _, e, _, st in drill.events if st == 503), default=drill.killed_at
                )
                if time.monotonic() - max(last, drill.replica_back_at) > 3:
                    break
                await asyncio.sleep(0.2)
        finally:
            load.stopping.set()
            await asyncio.gather(*tasks)
        await load.recheck()
        for proc in replicas:
            ready, _ = await load.call("GET", f"http://127.0.0.1:{proc.admin_port}/readyz", "")
            assert ready == 200
    figures = {"topology": type(topology).__name__, **drill.figures()}
    print("\nfailover:", json.dumps(figures))
    if report := os.environ.get("GATEWAY_FAILOVER_REPORT"):
        with open(report, "a", encoding="utf-8") as out:
            out.write(json.dumps(figures) + "\n")
    assert figures["wrongly_allowed"] == 0
    assert figures["accepted_twice"] == 0, "a mobile token was accepted twice"
    assert figures["non_503_5xx"] == 0, drill.unexpected[:10]
    assert drill.unexpected == []
    assert figures["503_after_kill"] > 0  # the outage was seen, and refused closed
    assert figures["readyz_503_after_kill"] > 0  # /readyz reflected it
    assert figures["zero_errors_s"] < 30  # and it ended by itself, no restart
    assert figures["mobile_consumed"] > 0
