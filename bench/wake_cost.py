"""What a request costs a server when requests come one at a time (an open loop) against when
they come in a crowd (``wrk -c32``'s closed loop), for the gateway and for servers that do less.

    python bench/wake_cost.py [--seconds 5] [--rate 2000]

Each server (pinned to core 0, like ``bench/run.py``'s) is measured twice: ``wrk -t1 -c32``
for ``--seconds`` (its closed-loop saturation and CPU µs per request), then
``bench/openloop.py`` at ``--rate`` requests/s (CPU µs per request and p99). The servers:
nginx ``proxy_pass``; ``bench/raw_relay.py`` (bytes relayed, no HTTP at all); the bare
aiohttp + uvloop proxy; the gateway in proxy mode with a cached API key; the gateway's
decision listener with the same key. The last column is what half of the closed loop's
saturation (issue 15's target 5 rate) would take of one core if every request there cost what
it costs in the open loop: above 1, no worker can hold that rate on a schedule. Traffic goes to
127.0.0.1 only; never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    PROXY_BODY,
    SCORES,
    Server,
    credentials,
    measure,
    nginx,
    open_loop,
    python_server,
    stack,
    start_gateway,
)
from tests.support import free_port


def open_cost(
    server: Server, url: str, rate: float, seconds: int, headers: dict[str, str]
) -> tuple[float, float]:
    """CPU µs per request and p99 (ms) of ``server`` under the open loop, after a second of the
    same load (not counted)."""
    open_loop(url, rate, 1, headers)
    before = server.cpu_seconds()
    figures = open_loop(url, rate, seconds, headers)
    spent = server.cpu_seconds() - before
    return spent / (rate * seconds) * 1e6, figures["p99"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=2000.0, help="open-loop requests/s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-wake-") as tmpdir:
        tmp = Path(tmpdir)
        with stack(tmp, args.seconds) as ctx:
            up_port = int(ctx["up_port"])  # type: ignore[call-overload]
            started: list[Server] = ctx["started"]  # type: ignore[assignment]
            direct = open_loop(f"http://127.0.0.1:{up_port}{SCORES}", args.rate, args.seconds, {})
            print(f"direct upstream at {args.rate:,.0f}/s: p99 {direct['p99']:.2f} ms", flush=True)
            port = free_port()
            started.append(nginx(tmp, "proxy", port, PROXY_BODY, up_port))
            servers: list[tuple[str, Server, str, dict[str, str]]] = [
                ("nginx proxy_pass", started[-1], f"http://127.0.0.1:{port}{SCORES}", {})
            ]
            for name, script, arg in (
                ("raw relay (bench/raw_relay.py)", "raw_relay.py", str(up_port)),
                ("bare aiohttp proxy", "bare_proxy.py", f"http://127.0.0.1:{up_port}"),
            ):
                started.append(python_server(name, script, arg))
                url = f"http://127.0.0.1:{started[-1].port}{SCORES}"
                servers.append((name, started[-1], url, {}))
            listener = free_port()
            decision = {
                "enabled": True,
                "proxy": "envoy",
                "listen": {"host": "127.0.0.1", "port": listener},
            }
            gateway, admin = start_gateway(tmp, "gw", ctx, {"decision": decision})
            key = {
                "Authorization": f"Bearer {asyncio.run(credentials(gateway.port, admin, 0))['key']}"
            }
            servers += [
                (
                    "gateway proxy, API key",
                    gateway,
                    f"http://127.0.0.1:{gateway.port}{SCORES}",
                    key,
                ),
                (
                    "gateway decision listener, API key",
                    gateway,
                    f"http://127.0.0.1:{listener}/decisions{SCORES}",
                    key,
                ),
            ]
            print(
                f"| server | closed loop µs/req | closed loop req/s | open loop µs/req at "
                f"{args.rate:,.0f}/s | open ÷ closed | p99 ms at {args.rate:,.0f}/s | cores at "
                "half the closed loop's req/s |\n|---|---:|---:|---:|---:|---:|---:|",
                flush=True,
            )
            for name, server, url, headers in servers:
                closed = measure(name, [server], url, args.seconds, warm=True, headers=headers)
                cost, p99 = open_cost(server, url, args.rate, args.seconds, headers)
                cores = closed.rps / 2 * cost / 1e6
                print(
                    f"| {name} | {closed.cpu_us:.1f} | {closed.rps:,.0f} | {cost:.1f} | "
                    f"{cost / closed.cpu_us:.1f}x | {p99:.2f} | {cores:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
