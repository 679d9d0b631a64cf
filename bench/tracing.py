"""What tracing costs: the gateway with tracing off, on (every request recorded and exported)
and on at ``sampling_ratio: 0`` (nothing recorded, trace context still propagated).

    python bench/tracing.py [--seconds 5] [--rounds 3]

Same stack as ``bench/run.py``: an nginx upstream and Redis on core 1, ``gateway serve`` (one
worker, Redis store, INFO logging) on core 0, ``wrk -t1 -c32`` with a cached API key on
``GET /v1/users/usr_a/scores``. With tracing on, spans go over OTLP/HTTP to the same nginx
(``POST /v1/traces`` answered 200 without decoding: the collector's cost is not the gateway's;
the gateway's encoding and posting, on its exporter thread, are counted). The three
configurations are measured in turn, ``--rounds`` times, and the median CPU µs per request of
each is printed with its ratio to tracing off. Then, in this process, the tracer's own CPU per
request, precise where wrk's figures are noisy: the calls one proxied request makes into the
no-op tracer (what "off" adds), and into the OpenTelemetry one at each ratio, with its exporter
thread encoding and posting the spans to the same nginx. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import ADMIN, Row, measure, stack, start_gateway
from gateway.config import TracingSettings
from gateway.observe.tracing import CREDENTIAL_KIND, NOOP_TRACER, STATUS, Tracer, build_tracer

PATH = "/v1/users/usr_a/scores"
HEADERS = CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer sk_live_x", "Accept": "*/*"}))
UPSTREAM = URL("http://127.0.0.1:8000")
OUT: CIMultiDict[str] = CIMultiDict()  # the outgoing headers; the tracer replaces its own
BATCH = 400  # requests between flushes: their spans stay within the exporter's queue (2,048)
CONFIGS: dict[str, dict[str, object]] = {
    "tracing off": {},
    "tracing on, sampling_ratio 1": {"sampling_ratio": 1.0},
    "tracing on, sampling_ratio 0": {"sampling_ratio": 0.0},
}


async def create_key(admin: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{admin}/admin/keys",
            json={"account": "acc_1", "environment": "live"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response,
    ):
        key: str = (await response.json())["key"]
        return key


def one_request(tracer: Tracer) -> None:
    """The calls the request path makes into the tracer for one proxied request: the request
    span and its finish, the two steps (one attribute), the upstream step (with injection)."""
    span = tracer.request(HEADERS, "GET", "0123456789abcdef0123456789abcdef")
    with tracer.authentication() as step:
        step.set(CREDENTIAL_KIND, "api_key")
    with tracer.authorization("user-scores", "/v1/users/{user_id}/scores"):
        pass
    with tracer.upstream("live", "GET", UPSTREAM, OUT) as up:
        up.set(STATUS, 200)
    span.finish(200, "user-scores", "api_key", None)


def noop_calls_ns(number: int = 200_000) -> float:
    """ns per request of the calls into the no-op tracer (tracing off)."""
    return (
        min(timeit.repeat(lambda: one_request(NOOP_TRACER), number=number, repeat=5)) / number * 1e9
    )


def tracer_cpu_us(endpoint: str, ratio: float, number: int = 3000) -> float:
    """CPU µs per request of the OpenTelemetry tracer's own work, in this process: the calls
    above on the loop's thread plus the exporter thread encoding and posting the spans to
    ``endpoint`` (``time.process_time`` counts every thread), flushed before the clock stops."""
    settings = TracingSettings(enabled=True, endpoint=URL(endpoint), sampling_ratio=ratio)
    tracer = build_tracer(settings)
    for _ in range(200):
        one_request(tracer)  # warm-up
    assert tracer.flush(30)
    started = time.process_time()
    for i in range(number):
        one_request(tracer)
        if i % BATCH == BATCH - 1:
            assert tracer.flush(30)  # nothing dropped: every span is encoded and posted
    assert tracer.flush(30)
    cpu = time.process_time() - started
    asyncio.run(tracer.close())
    return cpu / number * 1e6


def run(seconds: int, rounds: int) -> tuple[dict[str, list[Row]], dict[str, float]]:
    results: dict[str, list[Row]] = {name: [] for name in CONFIGS}
    inprocess: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gw-bench-tracing-") as tmpdir:
        tmp = Path(tmpdir)
        with stack(tmp, seconds) as ctx:
            endpoint = f"http://127.0.0.1:{ctx['up_port']}/v1/traces"
            gateways = {}
            for i, (name, tracing) in enumerate(CONFIGS.items()):
                extra = {"tracing": {"enabled": True, "endpoint": endpoint, **tracing}}
                server, admin = start_gateway(tmp, f"gw{i}", ctx, extra if tracing else None)
                key = asyncio.run(create_key(admin))
                url = f"http://127.0.0.1:{server.port}{PATH}"
                headers = {"Authorization": f"Bearer {key}"}
                measure(name, [server], url, 2, headers=headers)  # warm-up
                gateways[name] = (server, url, headers)
            for _ in range(rounds):
                for name, (server, url, headers) in gateways.items():
                    results[name].append(measure(name, [server], url, seconds, headers=headers))
            inprocess["tracing off"] = noop_calls_ns() / 1000
            for name, tracing in CONFIGS.items():
                if tracing:
                    ratio = float(tracing["sampling_ratio"])  # type: ignore[arg-type]
                    inprocess[name] = tracer_cpu_us(endpoint, ratio)
    return results, inprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results, inprocess = run(args.seconds, args.rounds)
    off = statistics.median(r.cpu_us for r in results["tracing off"])
    print(f"`python bench/tracing.py --seconds {args.seconds} --rounds {args.rounds}`\n")
    print(
        "| configuration | gateway CPU µs/request, wrk (median; each round) | vs off "
        "| requests/s (median) | the tracer's own CPU µs/request, in-process |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        cpu = statistics.median(r.cpu_us for r in rows)
        each = ", ".join(f"{r.cpu_us:.0f}" for r in rows)
        rps = statistics.median(r.rps for r in rows)
        own = inprocess[name]
        print(f"| {name} | {cpu:.0f} ({each}) | {cpu / off:.2f}x | {rps:,.0f} | {own:.1f} |")


if __name__ == "__main__":
    main()
