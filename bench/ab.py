"""One row of ``bench/run.py``, repeated in interleaved rounds, this tree against another.

    python bench/ab.py mobile [--kid ed1] [--rounds 5] [--seconds 8] [--compare DIR]
                              [--compare-kid es1]
    python bench/ab.py open-loop [--rate 3000] [--rounds 5] [--seconds 6] [--compare DIR]
    python bench/ab.py memory [--rounds 2] [--compare DIR]
    python bench/ab.py decision [--rounds 5] [--seconds 6] [--compare DIR]
    python bench/ab.py ROW --compare DIR --compare-python VENV/bin/python

On this two-core VM a row moves by ±25 % between runs a few minutes apart (the host's steal
time, neighbours), more than most changes are worth; one before/after pair in ``run.py`` then
tells little. Here each round measures both trees one after the other, so a slow minute slows
both: the comparison is the median of the rounds' ratios (``mobile``, ``decision``) or
differences (``open-loop``, ``memory``), printed after each tree's own median. The trees take
turns going first (swapped every other round). Every row starts new gateway processes for
every round: two processes of the same tree, side by side, differed by up to 12 % in mobile
pairs for their whole lives (``--compare .``: x1.12, x0.94, x0.98, and x0.97, x1.09 with
``PYTHONHASHSEED=0``), so one process per tree would measure the two processes as much as the
two trees.

- ``mobile``: issue + initialize pairs per CPU-second of one worker (wrk ``-t1 -c32`` and the
  Lua script of ``run.py``), SDK sessions signed with ``--kid`` (``ed1`` EdDSA, ``es1``
  ES256, ``rs1`` RS256; ``--compare-kid`` for the compared tree's, so that ``--compare .
  --kid es1 --compare-kid ed1`` sets two algorithms side by side);
- ``open-loop``: ``bench/openloop.py`` at ``--rate`` requests/s with a cached API key, the
  direct upstream first in each round, then each tree; the figure is p99 over the direct
  upstream's p99 of the same round, with the machine's steal time beside it;
- ``memory``: peak RSS of a fresh worker once it has seen 100,000 distinct live member tokens
  (the memory row of ``run.py``), a new gateway for each tree in each round;
- ``decision``: the decision listener alone, 1,000 distinct user tokens (the wrk script of
  ``run.py``), as requests per CPU-second against HAProxy's ``jwt_verify`` RS256 measured first
  in the same round (target 2 of the performance issue: at least 1.5).

``--compare DIR`` is a checkout of another tree (``git worktree add DIR REV``). Started as
``run.py`` starts them: nginx upstream and Redis on core 1, each gateway on core 0, one worker.
Never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    SCORES,
    Server,
    credentials,
    haproxy_jwt,
    haproxy_row,
    has_eddsa,
    measure,
    memory_peak,
    mobile_pairs,
    open_loop,
    python_server,
    stack,
    start_gateway,
    token_script,
)
from tests.support import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row", choices=("mobile", "open-loop", "memory", "decision"))
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kid", choices=("ed1", "es1", "rs1"), default="ed1")
    parser.add_argument(
        "--compare-kid",
        choices=("ed1", "es1", "rs1"),
        help="mobile: the compared tree's signing key (default --kid); with --compare . two "
        "algorithms side by side",
    )
    parser.add_argument("--rate", type=float, default=3000.0, help="open-loop requests/s")
    parser.add_argument("--compare", type=Path, metavar="DIR", help="an earlier tree's checkout")
    parser.add_argument(
        "--compare-python",
        metavar="PYTHON",
        help="the interpreter the compared tree runs on (a virtualenv's python with the project "
        "installed); with --compare . this tree on two Pythons side by side",
    )
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("now", None)]
    if args.compare:
        trees.insert(0, ("before", args.compare.resolve()))
    elif args.compare_python is not None:
        parser.error("--compare-python needs --compare (. for this tree)")
    if args.compare_python is not None:
        args.compare_python = interpreter(parser, args.compare_python, args.compare.resolve())
    results: dict[str, list[float]] = {label: [] for label, _ in trees}
    unit = {
        "mobile": "pairs per CPU-second",
        "open-loop": "ms p99 over direct",
        "decision": "x HAProxy's requests per CPU-second",
    }.get(args.row, "MiB peak RSS")
    with tempfile.TemporaryDirectory(prefix="gw-ab-") as tmpdir:
        tmp = Path(tmpdir)
        with stack(tmp, args.seconds) as ctx:
            if args.row == "memory":
                for round_ in range(1, args.rounds + 1):
                    for label, code in turns(trees, round_):
                        python = args.compare_python if label == "before" else None
                        _, peak, _ = memory_peak(tmp, ctx, f"{label}{round_}", code, python)
                        results[label].append(peak)
                        print(f"round {round_} {label}: {peak:.1f} {unit}", flush=True)
                summary(args.row, unit, results)
                return
            if args.row == "decision":
                decision_rounds(
                    tmp, ctx, trees, args.rounds, args.seconds, results, args.compare_python
                )
                summary(args.row, unit, results)
                return
            for round_ in range(1, args.rounds + 1):
                # New processes every round: one process of a tree ran up to 12 % faster or
                # slower than another of the same tree for its whole life (not its string
                # hashes: a fixed PYTHONHASHSEED kept it), so a pair kept for all rounds
                # measures two processes as much as two trees.
                servers = [start_tree(tmp, ctx, label, code, round_, args) for label, code in trees]
                if args.row == "open-loop":
                    url = f"http://127.0.0.1:{ctx['up_port']}{SCORES}"
                    direct = open_loop(url, args.rate, args.seconds, {})
                    print(
                        f"round {round_} direct: p99 {direct['p99']:.2f} ms, "
                        f"steal {direct['steal %']:.1f} %",
                        flush=True,
                    )
                for label, server, key in turns(servers, round_):
                    if args.row == "open-loop":  # the warm second, not counted
                        url = f"http://127.0.0.1:{server.port}{SCORES}"
                        open_loop(url, args.rate, 1, {"Authorization": f"Bearer {key}"})
                    if args.row == "mobile":
                        mobile_pairs(tmp, server, key, 1)  # the warm second, not counted
                        rate, cpu_us = mobile_pairs(tmp, server, key, args.seconds)
                        figure = 1e6 / cpu_us
                        shown = f"{rate:,.0f} pairs/s, {cpu_us:.0f} µs CPU a pair"
                    else:
                        url = f"http://127.0.0.1:{server.port}{SCORES}"
                        through = open_loop(
                            url, args.rate, args.seconds, {"Authorization": f"Bearer {key}"}
                        )
                        figure = through["p99"] - direct["p99"]
                        shown = (
                            f"p50 {through['p50']:.2f}, p99 {through['p99']:.2f}, p99.9 "
                            f"{through['p99.9']:.2f} ms, send lag p99 {through['lag_p99']:.2f} "
                            f"ms, steal {through['steal %']:.1f} %"
                        )
                    results[label].append(figure)
                    print(f"round {round_} {label}: {figure:,.2f} {unit} ({shown})", flush=True)
                for _, server, _ in servers:
                    server.stop()
    summary(args.row, unit, results)


def interpreter(parser: argparse.ArgumentParser, given: str, tree: Path) -> str:
    """``--compare-python`` as an absolute path, checked before anything starts: it runs and
    imports the compared tree's gateway with its dependencies (a gateway that cannot start
    would otherwise be found only after the port's timeout)."""
    found = shutil.which(given)
    if not given or found is None:
        parser.error(f"--compare-python: no such interpreter: {given!r}")
    path = str(Path(found).absolute())  # a virtualenv's python: the link itself, not its target
    check = subprocess.run(
        [path, "-c", "import aiohttp, jwt, redis, gateway.cli"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["(no output)"])[-1]
        parser.error(f"--compare-python {path} cannot import the gateway: {last}")
    return path


def start_tree(
    tmp: Path,
    ctx: dict[str, object],
    label: str,
    code: Path | None,
    round_: int,
    args: argparse.Namespace,
) -> tuple[str, Server, str]:
    """A new gateway worker of one tree for one round, and an API key of its own."""
    kid = args.compare_kid or args.kid if label == "before" else args.kid
    kid = kid if has_eddsa(code) or kid != "ed1" else "es1"
    python = args.compare_python if label == "before" else None
    name = f"gw-{label}{round_}"
    server, admin = start_gateway(tmp, name, ctx, active_kid=kid, code=code, python=python)
    key = str(asyncio.run(credentials(server.port, admin, 0))["key"])
    return label, server, key


def decision_rounds(
    tmp: Path,
    ctx: dict[str, object],
    trees: list[tuple[str, Path | None]],
    rounds: int,
    seconds: int,
    results: dict[str, list[float]],
    compare_python: str | None = None,
) -> None:
    """Each round: HAProxy, the minimal aiohttp decision service (the framework's floor, shown
    for reference), then each tree's decision listener; the figure is HAProxy's CPU µs a
    request over the listener's (its requests per CPU-second as a multiple of HAProxy's)."""
    haproxy, token = haproxy_jwt(tmp, ctx)
    floor: Server | None = None
    for round_ in range(1, rounds + 1):
        listeners = []  # new processes every round, as for the other rows
        for label, code in trees:
            port = free_port()
            decision = {
                "enabled": True,
                "proxy": "envoy",  # asked as /decisions{SCORES}
                "listen": {"host": "127.0.0.1", "port": port},
            }
            name = f"gw-{label}{round_}"
            python = compare_python if label == "before" else None
            server, admin = start_gateway(
                tmp, name, ctx, {"decision": decision}, code=code, python=python
            )
            users = asyncio.run(credentials(server.port, admin, 1000))["user_tokens"]
            script = token_script(tmp, users, f"users-{label}{round_}")  # type: ignore[arg-type]
            listeners.append((label, server, port, script))
            if floor is None:
                users_file = str(tmp / f"users-{label}{round_}.txt")
                floor = python_server("floor", "minimal_decision.py", users_file)
                ctx["started"].append(floor)  # type: ignore[attr-defined]
                floor_script = script
        assert floor is not None
        before = haproxy.cpu_split()
        anchor = haproxy_row(haproxy, token, seconds).cpu_us
        print(
            f"round {round_} HAProxy: {anchor:.1f} µs CPU a request ({kernel(haproxy, before)})",
            flush=True,
        )
        before = floor.cpu_split()
        least = measure(
            "floor", [floor], f"http://127.0.0.1:{floor.port}{SCORES}", seconds, script=floor_script
        ).cpu_us
        print(
            f"round {round_} minimal aiohttp decision service: {anchor / least:.3f} x HAProxy "
            f"({least:.1f} µs CPU a request, {kernel(floor, before)})",
            flush=True,
        )
        for label, server, port, script in turns(listeners, round_):
            url = f"http://127.0.0.1:{port}/decisions{SCORES}"
            measure(label, [server], url, 1, script=script)  # the warm second, not counted
            before = server.cpu_split()
            row = measure(label, [server], url, seconds, script=script)
            results[label].append(anchor / row.cpu_us)
            print(
                f"round {round_} {label}: {anchor / row.cpu_us:.3f} x HAProxy "
                f"({row.cpu_us:.1f} µs CPU a decision, {row.rps:,.0f} req/s, "
                f"{kernel(server, before)})",
                flush=True,
            )
        for _, server, _, _ in listeners:
            server.stop()
    if floor is not None:
        floor.stop()
    haproxy.stop()


T = TypeVar("T")


def turns(items: list[T], round_: int) -> list[T]:
    """The trees in the order a round measures them: swapped every other round, so that
    neither is always the one measured second (in a warmer or busier minute)."""
    return items if round_ % 2 else items[::-1]


def kernel(server: Server, before: tuple[float, float]) -> str:
    user, system = (now - then for now, then in zip(server.cpu_split(), before, strict=True))
    return f"kernel {system / (user + system):.0%} of it"


def summary(row: str, unit: str, results: dict[str, list[float]]) -> None:
    for label, figures in results.items():
        ordered = ", ".join(f"{f:,.2f}" for f in sorted(figures))
        print(f"{label}: median {statistics.median(figures):,.2f} {unit} [{ordered}]")
    if "before" in results:
        # Paired by round: the machine's speed drifts within minutes, the pair shares it.
        before, now = results["before"], results["now"]
        if row in ("mobile", "decision"):
            ratios = [n / b for b, n in zip(before, now, strict=True)]
            print(
                f"now / before, round by round: median {statistics.median(ratios):.3f} "
                f"[{', '.join(f'{r:.3f}' for r in ratios)}]"
            )
        else:
            deltas = [n - b for b, n in zip(before, now, strict=True)]
            shown = ", ".join(f"{d:+.2f}" for d in deltas)
            per = "ms" if row == "open-loop" else "MiB"
            print(
                f"now - before, round by round: median {statistics.median(deltas):+.2f} {per} "
                f"[{shown}]"
            )


if __name__ == "__main__":
    main()
