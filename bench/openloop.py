"""An open-loop load generator: requests leave on a fixed schedule, whatever the answers do.

A closed-loop tool (``wrk -c32``) sends the next request only when an answer came back, so when
the server stalls it stops sending and the stall hides from its percentiles (coordinated
omission). Here request *i* is due at ``start + i / rate``; its latency is counted from that
due time, not from when a connection was free to send it, so queueing anywhere (in the server,
in the kernel, in this client) shows up in the figures.

HTTP/1.1 over keep-alive connections, opened as needed (at most ``max_connections``); the
request bytes are built once; an answer is read by its ``Content-Length`` (or to the end of a
chunked body). uvloop, one thread: about 15,000 requests/s of one core, far above the rates
measured here (half of one gateway worker's saturation).

    python bench/openloop.py http://127.0.0.1:8080/v1/users/usr_a/scores --rate 2000 \\
        --seconds 10 --header "Authorization: Bearer sk_live_…"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop

# Told (due time, status) of each answer; status 0 when the connection closed before it came.
_Answer = Callable[[float, int], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers matched in order."""

    def __init__(self, done: asyncio.Queue[_Connection], on_answer: _Answer) -> None:
        self._idle = done
        self._on_answer = on_answer
        self._buffer = bytearray()
        self._due = 0.0
        self._status = 0
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._due:
            self._on_answer(self._due, 0)  # an answer that never came is an error, not lost
            self._due = 0.0

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self._due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._due:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).lower()
            status = int(head[9:12])
            if b"transfer-encoding: chunked" in head:
                last = self._buffer.find(b"\r\n0\r\n\r\n", end)
                if last < 0:
                    return
                size = last + 7
            else:
                marker = head.find(b"content-length:")
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0]) if marker >= 0 else 0
                size = end + 4 + length
                if len(self._buffer) < size:
                    return
            del self._buffer[:size]
            due, self._due = self._due, 0.0
            self._on_answer(due, status)
            self._idle.put_nowait(self)


@dataclass
class Result:
    rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    late_sends: int = 0  # requests sent more than 1 ms after they were due

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]

    def summary(self) -> str:
        done = len(self.latencies_ms)
        return (
            f"{done:,} answers at {self.rate:,.0f}/s for {self.seconds:.0f} s, "
            f"{self.errors} errors, {self.late_sends} sent late; "
            f"latency ms p50 {self.percentile(50):.2f} "
            f"p90 {self.percentile(90):.2f} p99 {self.percentile(99):.2f} "
            f"p99.9 {self.percentile(99.9):.2f} max {max(self.latencies_ms, default=0):.2f}"
        )


async def run(
    url: str,
    rate: float,
    seconds: float,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    max_connections: int = 256,
    warmup: float = 1.0,
) -> Result:
    """Send ``rate`` requests a second for ``seconds`` (after ``warmup`` seconds not counted);
    every request is answered or counted as an error."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    result = Result(rate, seconds)
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    opened: list[_Connection] = []
    outstanding = 0
    finished = loop.create_future()
    counting_from = 0.0

    def answered(due: float, status: int) -> None:
        nonlocal outstanding
        outstanding -= 1
        if due >= counting_from:
            if 200 <= status < 300:
                result.latencies_ms.append((time.perf_counter() - due) * 1000)
            else:
                result.errors += 1
        if sending_done and outstanding == 0 and not finished.done():
            finished.set_result(None)

    async def connection() -> _Connection:
        while not idle.empty():
            conn = idle.get_nowait()
            if not conn.lost:
                return conn
        if len([c for c in opened if not c.lost]) < max_connections:
            _, conn = await loop.create_connection(lambda: _Connection(idle, answered), host, port)
            opened.append(conn)
            return conn
        while True:
            conn = await idle.get()
            if not conn.lost:
                return conn

    sending_done = False
    start = time.perf_counter()
    counting_from = start + warmup
    total = int((warmup + seconds) * rate)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await connection()
        if time.perf_counter() - due > 0.001 and due >= counting_from:
            result.late_sends += 1
        outstanding += 1
        conn.send(request, due)
    sending_done = True
    if outstanding:
        await asyncio.wait_for(finished, 30)
    for conn in opened:
        if conn.transport is not None:
            conn.transport.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--json", action="store_true", help="and a last line of JSON figures")
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    uvloop.install()
    result = asyncio.run(run(args.url, args.rate, args.seconds, headers, args.method))
    print(result.summary())
    if args.json:
        figures = {f"p{p:g}": result.percentile(p) for p in (50, 90, 99, 99.9)}
        figures.update(errors=result.errors, late=result.late_sends)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
