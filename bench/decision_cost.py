"""Instructions per cached decision on the decision listener, counted by callgrind.

    python bench/decision_cost.py --callgrind [--rounds 2000] [--keep DIR]

Counts what one cached decision costs the gateway in-process, in machine instructions: a
figure that is the same on every run and on a busy machine, unlike ``bench/run.py``'s CPU
seconds. With ``--callgrind`` the script runs itself under ``valgrind --tool=callgrind``
(collection only inside ``sys.call_tracing``, one profile dump after each such call) and
prints the instructions per decision of each part:

- **request path**: ``--rounds`` rounds on one keep-alive connection of the decision listener
  (:mod:`gateway.decision_server`), each the bytes of one nginx ``auth_request`` subrequest
  fed to the connection's ``data_received`` and the event loop run until the answer is
  written to a fake transport: the C parser, the connection's task, the pipeline's hit path,
  the answer's bytes, the metrics, and the access and audit lines as the request path leaves
  them (a tuple on a list; one queue put per :attr:`~gateway.observe.logs._Lines.MAX_BATCH`);
- **writer thread**: formatting and writing those lines as the writer thread does
  (``_Listener.handle``, to the process's stdout, which is ``/dev/null``: the byte stream
  ``gateway serve`` writes to), run on the main thread so callgrind counts it;
- their sum, the figure to compare.

The gateway is built as ``bench/run.py`` builds it for the decision-listener row (its config:
one worker, RS256 user tokens, ``log_level: INFO``, uvloop, the heap settled as the server
settles it), except for the store: ``memory`` instead of Redis. The hit path never reaches the
store (abuse budget and rate limits are off in that config; the decision, the key and the
relationship are all cached: cProfile of the rounds shows no call into ``gateway/stores``).
1,000 distinct user tokens are warmed first (each decided once, then once more) and the rounds
cycle through them; the script fails unless every round is a reused decision answered 200.
The clock the runtime reads is stopped before the warm-up (under valgrind the warm-up alone
outlasts a cached decision's 1 s); it still calls ``time.time()``, so a read costs what it
costs with the system clock. The ``Date`` header and the log lines' times are the real ones.

To compare two trees, run the script in each (``git worktree add`` for the older one). The
counts never move with the machine's load, but they do between runs: the request path's by
up to about a thousand instructions (each run signs new tokens with a new key, and
dictionaries probe differently for them), the writer's by a few hundred (the log lines'
times). A change worth less than that needs several runs of each tree. ``bench/run.py``
stays the measure of the targets (CPU seconds, including the kernel's share of reading and
writing the sockets, which this does not count).

Without ``--callgrind`` the same rounds run natively and the script prints µs per round
(wall time, noisy: only a sanity check). ``--keep DIR`` keeps the callgrind files for
``callgrind_annotate --inclusive=yes DIR/callgrind.out.*.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import gateway_config  # noqa: E402
from gateway import decision_server  # noqa: E402
from gateway.issue.gateway_tokens import USER  # noqa: E402
from gateway.observe import logs  # noqa: E402
from gateway.runtime import Current, build_runtime  # noqa: E402
from gateway.server import install_event_loop_policy, settle_heap  # noqa: E402
from gateway.settings import load_settings  # noqa: E402

PATH = "/v1/users/usr_a/scores"
TOKENS = 1000


class StoppedClock:
    """The system clock, stopped at :meth:`stop`: still one ``time.time()`` call a read."""

    def __init__(self) -> None:
        self.stopped: float | None = None

    def now(self) -> float:
        now = time.time()
        return now if self.stopped is None else self.stopped

    def stop(self) -> None:
        self.stopped = time.time()


class Transport(asyncio.Transport):
    """Collects what the connection writes; wakes the round waiting for its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.answered: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise AssertionError("the decision listener closed the connection")

    def abort(self) -> None:
        raise AssertionError("the decision listener aborted the connection")


def subrequest(token: str) -> bytes:
    """The request nginx sends for ``auth_request`` in bench/run.py's config."""
    return (
        f"GET /decisions{PATH} HTTP/1.1\r\n"
        "Host: gateway\r\n"
        f"X-Original-URI: {PATH}\r\n"
        "X-Original-Method: GET\r\n"
        f"Authorization: Bearer {token}\r\n"
        "\r\n"
    ).encode()


async def drive(connection: Any, transport: Transport, requests: list[bytes], n: int) -> None:
    """``n`` rounds: one request in, run until its answer is out."""
    loop = asyncio.get_running_loop()
    count = len(requests)
    for i in range(n):
        transport.answered = loop.create_future()
        connection.data_received(requests[i % count])
        await transport.answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--callgrind", action="store_true", help="count under valgrind")
    parser.add_argument("--keep", type=Path, help="keep the callgrind files here")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind:
        under_callgrind(args.rounds, args.keep)
        return
    install_event_loop_policy()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory(prefix="gw-cost-") as tmp:
        # Inside valgrind stdout is /dev/null: the writer writes there as `gateway serve`
        # writes to its stdout (the byte stream beneath the text layer).
        stream = sys.stdout if args.inside else open(os.devnull, "w")  # noqa: SIM115
        connection, transport, requests, writer_part = loop.run_until_complete(
            setup(Path(tmp), stream)
        )
        cache = connection._server.current.runtime.decisions._cache

        def decisions_missed() -> int:
            return int(cache.misses)

        def rounds_part() -> None:
            loop.run_until_complete(drive(connection, transport, requests, args.rounds))

        # Under callgrind only what runs inside sys.call_tracing is counted, each call its
        # own dump: 1 the rounds, 2 the writer's part.
        begin = time.perf_counter()
        misses = decisions_missed()
        sys.call_tracing(rounds_part, ())
        elapsed = time.perf_counter() - begin
        sys.call_tracing(writer_part, ())
        assert decisions_missed() == misses, "a round was not a reused decision"
        assert len(transport.written) == args.rounds
        assert all(w.startswith(b"HTTP/1.1 200 OK\r\n") for w in transport.written)
        if not args.inside:
            print(f"{args.rounds} rounds, {elapsed / args.rounds * 1e6:.1f} µs a round (wall)")
    loop.close()


class _Queue:
    """The writer thread's queue, with no thread: what the request path puts stays here
    until the writer's part is measured."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)

    def drain(self) -> list[Any]:
        items, self.items = self.items, []
        return items


async def setup(tmp: Path, stream: Any) -> tuple[Any, Transport, list[bytes], HeldLines]:
    """The gateway, one connection of its decision listener on a fake transport, the warmed
    requests, and the writer thread's part (formatting what the rounds logged)."""
    decision = {"enabled": True, "proxy": "nginx", "listen": {"host": "127.0.0.1", "port": 0}}
    path, _, _ = gateway_config(
        tmp, "gw", 1, 1, {"decision": decision, "store": {"url": "memory"}}, "rs1"
    )
    settings = load_settings(path)
    clock = StoppedClock()
    current = Current(build_runtime(settings, clock=clock))
    runtime = current.runtime
    writer_part = held_lines(stream, settings.log_level)

    _, record = await runtime.keys.create("acc_1", "live")
    key_id = record.key_id
    tokens = [
        runtime.tokens.issue(
            USER, user="usr_a", account="acc_1", environment="live", key_id=key_id, ttl=3600
        )[0]
        for _ in range(TOKENS)
    ]
    requests = [subrequest(t) for t in tokens]
    # Stopped before the warm-up: under valgrind the warm-up alone outlasts a decision's 1 s.
    clock.stop()
    server = decision_server.DecisionServer(current, settings)
    connection = decision_server._Connection(server, asyncio.get_running_loop())
    transport = Transport()
    connection.connection_made(transport)

    await drive(connection, transport, requests, 2 * TOKENS)  # decided once, then reused
    heads = {w.split(b"\r\n", 1)[0] for w in transport.written}
    assert heads == {b"HTTP/1.1 200 OK"}, heads
    settle_heap()
    writer_part.drop()
    transport.written.clear()
    return connection, transport, requests, writer_part


class HeldLines:
    """The writer thread's part, run when called: formatting and writing what the request
    path logged since the last call (or :meth:`drop`)."""

    def __init__(self, queue: _Queue, writer: Any) -> None:
        self._queue, self._writer = queue, writer

    def __call__(self) -> None:
        logs._LINES.flush()
        for batch in self._queue.drain():
            self._writer.handle(batch)

    def drop(self) -> None:
        logs._LINES.flush()
        self._queue.drain()


def held_lines(stream: Any, level: int | str) -> HeldLines:
    """Logging as configure() leaves it for the request path (lines batched, each batch put on
    the writer's queue, by MAX_BATCH only: no flush timer firing by the wall clock), with no
    writer thread: the lines wait for the returned part to write them to ``stream``."""
    logging.getLogger("gateway").setLevel(level)
    lines = logs._LINES
    lines.FLUSH_SECONDS = 3600.0
    queue = _Queue()
    lines.queue = queue  # type: ignore[assignment]
    return HeldLines(queue, logs._Listener(queue, logs._JsonStreamHandler(stream)))  # type: ignore[arg-type]


def under_callgrind(rounds: int, keep: Path | None) -> None:
    """Run the rounds under callgrind; print instructions per decision by part."""
    parts = callgrind_parts(__file__, ["--rounds", str(rounds)], rounds, keep)
    print(f"{rounds} cached decisions under callgrind, instructions per decision:")
    for name, value in parts.items():
        print(f"  {name:14} {value:10,.0f}")


def callgrind_parts(
    script: str, arguments: list[str], rounds: int, keep: Path | None
) -> dict[str, float]:
    """Run ``script --inside *arguments`` under callgrind, counting only inside
    ``sys.call_tracing`` (one dump after each call: 1 the request path, 2 the writer's part),
    and return the instructions per round of each part and their total."""
    with tempfile.TemporaryDirectory(prefix="gw-callgrind-") as tmp:
        out = keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        base = out / "callgrind.out"
        for old in out.glob("callgrind.out*"):
            old.unlink()
        command = [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=sys_call_tracing",
            "--dump-after=sys_call_tracing",
            f"--callgrind-out-file={base}",
            sys.executable,
            script,
            "--inside",
            *arguments,
        ]
        # One hash seed: the same strings probe dictionaries alike on every run (the tokens,
        # signed with a new key each run, still differ).
        env = dict(os.environ, PYTHONHASHSEED="0")
        subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        parts = {}
        for name, number in (("request path", 1), ("writer thread", 2)):
            text = Path(f"{base}.{number}").read_text()
            found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            assert found is not None, f"no totals in {base}.{number}"
            parts[name] = int(found.group(1)) / rounds
        parts["total"] = sum(parts.values())
        if keep is not None:
            print(f"callgrind_annotate --inclusive=yes {base}.1   (the request path)")
        return parts


if __name__ == "__main__":
    main()
