"""Instructions per mobile-token pair (issue, then initialize) on the public listener, counted
by callgrind.

    python bench/mobile_cost.py --callgrind [--rounds 1000] [--store memory|redis]
                                [--kid ed1|es1|rs1] [--keep DIR]

The mobile row of ``bench/run.py`` (target 4 of the performance issue) counts pairs per CPU
second under wrk, a figure that moves by ±25 % with this machine's neighbours. This counts the
same pair in machine instructions, which do not: ``--rounds`` pairs on one keep-alive
connection of the public listener (aiohttp's request handler as :class:`gateway.protocol.
GatewayRunner` serves it, the gateway's one handler, :mod:`gateway.front`), each
``POST /v1/auth/mobile-token`` with an API key and ``POST /v1/sdk/initialize`` with the token
it answered, fed to the connection's ``data_received`` on a fake transport, the event loop run
until each answer is written. Printed by part, as ``bench/decision_cost.py`` prints them:

- **request path**: both requests, from bytes in to bytes out: the HTTP parser, aiohttp's
  request and response objects, the pipeline (the API key and the mobile token authenticated,
  the policy), the token drawn and stored, the SDK session signed (``--kid``: ``ed1`` EdDSA,
  the default, ``es1`` ES256, ``rs1`` RS256), the metrics, the four log lines as the request
  path leaves them;
- **writer thread**: formatting and writing those four lines (to ``/dev/null``, as ``gateway
  serve`` writes to its stdout);
- their sum.

The store is ``memory`` by default (deterministic, and the part of the pair that is the
gateway's own); ``--store redis`` starts a ``redis-server`` on a free port and counts the
client's side of the two round trips too (the Redis server's own work is another process, not
counted). The user's membership is cached before the rounds (as in the benchmark, where the
backend is asked once), and the runtime's clock is stopped as in ``decision_cost.py``.
``bench/run.py`` stays the measure of the target: it includes the kernel's share of the
sockets, and wrk's real connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decision_cost import (  # noqa: E402
    HeldLines,
    StoppedClock,
    Transport,
    callgrind_parts,
    held_lines,
)
from bench.run import gateway_config  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.protocol import GatewayRunner  # noqa: E402
from gateway.runtime import Current, build_runtime  # noqa: E402
from gateway.server import install_event_loop_policy, settle_heap  # noqa: E402
from gateway.settings import load_settings  # noqa: E402

WARM = 200


class Answers(Transport):
    """A transport that wakes the round once a whole response (headers and its
    ``Content-Length`` of body) has been written, however many writes it took."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.pending += bytes(data)
        head, found, body = self.pending.partition(b"\r\n\r\n")
        if not found:
            return
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length is None or len(body) < int(length.group(1)):
            return
        self.written.append(self.pending)
        self.pending = b""
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def issue_request(key: str) -> bytes:
    body = b'{"user_id":"usr_a"}'
    return (
        b"POST /v1/auth/mobile-token HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def initialize_request(token: bytes) -> bytes:
    return (
        b"POST /v1/sdk/initialize HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + token + b"\r\nContent-Length: 0\r\n\r\n"
    )


async def answer(connection: Any, transport: Answers, request: bytes) -> bytes:
    transport.answered = asyncio.get_running_loop().create_future()
    connection.data_received(request)
    await transport.answered
    return transport.written[-1]


async def pairs(connection: Any, transport: Answers, issue: bytes, n: int) -> None:
    """``n`` pairs: a token issued, then consumed by an initialization."""
    for _ in range(n):
        issued = await answer(connection, transport, issue)
        token = re.search(rb'"token":"(mt_[0-9A-Za-z]+)"', issued)
        assert token is not None, issued[:300]
        session = await answer(connection, transport, initialize_request(token.group(1)))
        assert session.startswith(b"HTTP/1.1 200 OK\r\n") and b'"session_token"' in session, (
            session[:300]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--kid", choices=("ed1", "es1", "rs1"), default="ed1")
    parser.add_argument("--callgrind", action="store_true", help="count under valgrind")
    parser.add_argument("--keep", type=Path, help="keep the callgrind files here")
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind or (args.store == "redis" and args.redis_port is None):
        with redis_server(args.store) as port:
            if args.callgrind:
                under_callgrind(args, port)
            else:
                args.redis_port = port
                measure(args)
        return
    measure(args)


class redis_server:
    """A throwaway ``redis-server`` on a free port (``--store redis``), or nothing."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> int:
        if self.store != "redis":
            return 0
        self.port = free_port()
        binary = shutil.which("redis-server") or "redis-server"
        command = [binary, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self.port
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()


def measure(args: argparse.Namespace) -> None:
    install_event_loop_policy()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory(prefix="gw-cost-") as tmp:
        stream = sys.stdout if args.inside else open(os.devnull, "w")  # noqa: SIM115
        connection, transport, issue, writer_part, close = loop.run_until_complete(
            setup(Path(tmp), stream, args.store, args.redis_port or 0, args.kid)
        )

        def rounds_part() -> None:
            loop.run_until_complete(pairs(connection, transport, issue, args.rounds))

        begin = time.perf_counter()
        sys.call_tracing(rounds_part, ())
        elapsed = time.perf_counter() - begin
        sys.call_tracing(writer_part, ())
        assert len(transport.written) == 2 * args.rounds
        loop.run_until_complete(close())
        if not args.inside:
            print(f"{args.rounds} pairs, {elapsed / args.rounds * 1e6:.1f} µs a pair (wall)")
    loop.close()


async def setup(
    tmp: Path, stream: Any, store: str, redis_port: int, kid: str
) -> tuple[Any, Answers, bytes, HeldLines, Callable[[], Any]]:
    """The gateway's public app on one connection with a fake transport, warmed; the issuing
    request; the writer thread's part; and what closes the app."""
    extra: dict[str, object] = {"store": {"url": "memory"}} if store == "memory" else {}
    path, _, _ = gateway_config(tmp, "gw", 1, redis_port, extra, kid)
    settings = load_settings(path)
    clock = StoppedClock()
    current = Current(build_runtime(settings, clock=clock))
    runtime = current.runtime
    writer_part = held_lines(stream, settings.log_level)

    runner = GatewayRunner(create_app(current))
    await runner.setup()
    assert runner.server is not None
    secret, record = await runtime.keys.create("acc_1", "live")
    clock.stop()
    runtime.membership.cache.put(("acc_1", "live", "usr_a"), True, clock.now() + 10**6)
    connection = runner.server()
    transport = Answers()
    connection.connection_made(transport)
    issue = issue_request(secret)

    await pairs(connection, transport, issue, WARM)
    settle_heap()
    writer_part.drop()
    transport.written.clear()

    async def close() -> None:
        assert not getattr(transport, "closed", False), "the gateway closed the connection"
        connection.connection_lost(None)
        await runner.cleanup()

    del record
    return connection, transport, issue, writer_part, close


def under_callgrind(args: argparse.Namespace, redis_port: int) -> None:
    """Run the pairs under callgrind; print instructions per pair by part."""
    arguments = ["--rounds", str(args.rounds), "--store", args.store, "--kid", args.kid]
    arguments += ["--redis-port", str(redis_port)]
    parts = callgrind_parts(__file__, arguments, args.rounds, args.keep)
    print(
        f"{args.rounds} mobile pairs ({args.kid}, {args.store} store) under callgrind, "
        "instructions per pair:"
    )
    for name, value in parts.items():
        print(f"  {name:14} {value:10,.0f}")


if __name__ == "__main__":
    main()
