"""An open-loop load generator: requests leave on a fixed schedule, whatever the answers do.

A closed-loop tool (``wrk -c32``) sends the next request only when an answer came back, so when
the server stalls it stops sending and the stall hides from its percentiles (coordinated
omission). Here request *i* is due at ``start + i / rate``; its latency is counted from that
due time, not from when a connection was free to send it, so queueing anywhere (in the server,
in the kernel, in this client) shows up in the figures.

HTTP/1.1 over keep-alive connections: 32 opened before the schedule starts, more as needed (at
most ``max_connections``), and the schedule never waits for one (a request due while all are
busy waits in a backlog, its latency counted from its due time); the request bytes are built
once; an answer is read by its ``Content-Length`` (or to the end of a
chunked body). uvloop, one thread: about 15,000 requests/s of one core, far above the rates
measured here (half of one gateway worker's saturation).

    python bench/openloop.py http://127.0.0.1:8080/v1/users/usr_a/scores --rate 2000 \\
        --seconds 10 --header "Authorization: Bearer sk_live_…"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop

# Told (due time, status) of each answer; status 0 when the connection closed before it came.
_Answer = Callable[[float, int], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers matched in order."""

    def __init__(
        self,
        on_idle: Callable[[_Connection], None],
        on_answer: _Answer,
        on_lost: Callable[[], None],
    ) -> None:
        self._on_idle = on_idle
        self._on_lost = on_lost
        self._on_answer = on_answer
        self._buffer = bytearray()
        self._due = 0.0
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._due:
            self._on_answer(self._due, 0)  # an answer that never came is an error, not lost
            self._due = 0.0
        self._on_lost()

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
            self._on_idle(self)


def _percentile(values: list[float], p: float, empty: float) -> float:
    """The ``p`` percentile of ``values`` (nearest rank); ``empty`` when there are none."""
    ordered = sorted(values)
    if not ordered:
        return empty
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@dataclass
class Result:
    rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    late_sends: int = 0  # requests sent more than 1 ms after they were due
    connections: int = 0  # connections opened, the warm ones included
    send_lag_ms: list[float] = field(default_factory=list)  # sent this long after due

    def lag(self, p: float) -> float:
        """The ``p`` percentile of how late requests left (the generator's own share)."""
        return _percentile(self.send_lag_ms, p, 0.0)

    def percentile(self, p: float) -> float:
        return _percentile(self.latencies_ms, p, float("nan"))

    def summary(self) -> str:
        done = len(self.latencies_ms)
        return (
            f"{done:,} answers at {self.rate:,.0f}/s for {self.seconds:.0f} s, "
            f"{self.errors} errors, {self.late_sends} sent late, "
            f"{self.connections} connections, send lag p99 {self.lag(99):.2f} ms; "
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
    warm_connections: int = 32,
) -> Result:
    """Send ``rate`` requests a second for ``seconds`` (after ``warmup`` seconds not counted);
    every request is answered or counted as an error.

    The schedule never waits for a connection: a request due while every open connection is
    busy waits in a backlog (its latency still counted from its due time) for the first
    connection to come free or to open (one is opened for it, up to ``max_connections``).
    ``warm_connections`` are opened before the schedule starts, as a client's pool would be."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    result = Result(rate, seconds)
    idle: list[_Connection] = []
    backlog: deque[float] = deque()  # due times of requests waiting for a connection
    live = 0  # connections open or opening
    outstanding = 0
    finished = loop.create_future()
    counting_from = 0.0
    sending_done = False

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

    def send(conn: _Connection, due: float) -> None:
        if due >= counting_from:
            lag = time.perf_counter() - due
            result.send_lag_ms.append(lag * 1000)
            if lag > 0.001:
                result.late_sends += 1
        conn.send(request, due)

    def free(conn: _Connection) -> None:
        if conn.lost:
            return
        if backlog:
            send(conn, backlog.popleft())
        else:
            idle.append(conn)

    def lost() -> None:
        nonlocal live
        live -= 1
        if backlog and live < max_connections:
            tasks.append(loop.create_task(open_one()))

    async def open_one() -> None:
        nonlocal live
        live += 1
        result.connections += 1
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(free, answered, lost), host, port
            )
        except OSError:
            live -= 1
            while backlog:  # nothing to send them on: errors, not silence
                backlog.popleft()
                answered(counting_from, 0)
            return
        free(conn)

    tasks: list[asyncio.Task[None]] = []
    await asyncio.gather(*(open_one() for _ in range(warm_connections)))

    def dispatch(due: float) -> None:
        nonlocal outstanding
        outstanding += 1
        while idle:
            conn = idle.pop()
            if not conn.lost:
                send(conn, due)
                return
        backlog.append(due)
        if live < max_connections:
            tasks.append(loop.create_task(open_one()))

    start = time.perf_counter() + 0.01
    counting_from = start + warmup
    total = int((warmup + seconds) * rate)

    def clock() -> None:
        # The schedule on a thread of its own: the event loop's timers fire on whole
        # milliseconds (libuv), and later still when no answer wakes the loop, which made
        # requests leave up to 1.4 ms late; time.sleep wakes within tens of microseconds.
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            loop.call_soon_threadsafe(dispatch, due)

    await loop.run_in_executor(None, clock)  # its last call_soon_threadsafe ran before this
    sending_done = True
    if outstanding:
        await asyncio.wait_for(finished, 30)
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    for task in tasks:
        task.cancel()
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
    sys.setswitchinterval(0.0002)  # the clock thread waits at most this for the GIL
    result = asyncio.run(run(args.url, args.rate, args.seconds, headers, args.method))
    print(result.summary())
    if args.json:
        figures = {f"p{p:g}": result.percentile(p) for p in (50, 90, 99, 99.9)}
        figures.update(
            errors=result.errors,
            late=result.late_sends,
            connections=result.connections,
            lag_p99=result.lag(99),
        )
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
