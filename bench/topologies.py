"""The store's topologies side by side, in one run: the API-key proxy row and mobile issue +
initialize pairs, on a standalone Redis, on Sentinel (one master, one replica, three sentinels)
and on a Cluster (three masters, one replica each).

    python bench/topologies.py [--seconds 10] [--rounds 2]

Each topology is started as the tests start it (tests/support.py) and gets its own gateway (one
worker, pinned to core 0) configured from a `store` section alone; wrk and the upstream run on
core 1, the Redis processes unpinned. Sentinel runs twice: with the default
`min_replicas_ack: 1` (every consumption waits for the replica, `WAIT`) and with 0, which
separates the cost of the acknowledgement from the cost of the topology. Rounds interleave the
rows; the table gives each row's median. Needs wrk, nginx and redis-server (Debian packages);
never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    LOAD_CORE,
    UPSTREAM_BODY,
    Row,
    Server,
    credentials,
    gateway_config,
    measure,
    mobile_pairs,
    nginx,
)
from tests.support import (  # noqa: E402
    ClusterTopology,
    RedisServer,
    SentinelTopology,
    free_port,
    wait_for_port,
)

SCORES = "/v1/users/usr_a/scores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="per row and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    stoppers: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="gw-bench-topo-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            up_port = free_port()
            upstream = nginx(tmp, "upstream", up_port, UPSTREAM_BODY, up_port, core=LOAD_CORE)
            stoppers.append(upstream.stop)
            standalone = RedisServer()
            stoppers.append(standalone.stop)
            sentinel = SentinelTopology()
            stoppers.append(sentinel.stop)
            cluster = ClusterTopology()
            stoppers.append(cluster.stop)
            sections: dict[str, dict[str, Any]] = {
                "standalone": {"url": standalone.url},
                "sentinel": sentinel.store_section(),
                "sentinel, min_replicas_ack 0": sentinel.store_section(min_replicas_ack=0),
                "cluster": cluster.store_section(),
            }
            gateways: dict[str, tuple[Server, str]] = {}
            for index, (name, section) in enumerate(sections.items()):
                prefix = f"bench{index}:"
                path, port, admin = gateway_config(
                    tmp, f"gw{index}", up_port, 0, {"store": {**section, "prefix": prefix}}
                )
                server = Server(
                    name, [sys.executable, "-m", "gateway", "serve", "--config", str(path)], port
                )
                stoppers.append(server.stop)
                wait_for_port(admin)
                made = asyncio.run(credentials(port, admin, users=1))
                gateways[name] = (server, str(made["key"]))
            api: dict[str, list[Row]] = {name: [] for name in gateways}
            pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in gateways}
            for _ in range(args.rounds):
                for name, (server, key) in gateways.items():
                    url = f"http://127.0.0.1:{server.port}{SCORES}"
                    headers = {"Authorization": f"Bearer {key}"}
                    api[name].append(measure(name, [server], url, args.seconds, headers=headers))
                    pairs[name].append(mobile_pairs(tmp, server, key, args.seconds))
        finally:
            for stop in reversed(stoppers):
                stop()
    print(
        f"\n{args.rounds} rounds of {args.seconds} s per row, medians; gateway: 1 worker on core "
        "0, wrk -t1 -c32 on core 1.\n"
    )
    print(
        "| store | API key: req/s | p50 ms | p99 ms | CPU µs/req | mobile pairs/s | CPU µs/pair |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in gateways:
        rows, mobile = api[name], pairs[name]
        print(
            f"| {name} | {statistics.median(r.rps for r in rows):,.0f} "
            f"| {statistics.median(r.p50_ms for r in rows):.2f} "
            f"| {statistics.median(r.p99_ms for r in rows):.2f} "
            f"| {statistics.median(r.cpu_us for r in rows):.0f} "
            f"| {statistics.median(m[0] for m in mobile):,.0f} "
            f"| {statistics.median(m[1] for m in mobile):,.0f} |"
        )


if __name__ == "__main__":
    main()
