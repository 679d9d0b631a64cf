"""Mobile-token pairs alone: the row of ``bench/run.py`` that target 4 is about, repeated.

    python bench/mobile.py [--seconds 8] [--rounds 3] [--kid ed1] [--compare DIR]

Starts what ``bench/run.py`` starts for its mobile rows (nginx as the upstream, one Redis, one
gateway worker on core 0 signing SDK sessions with ``--kid``: ``ed1`` EdDSA, ``es1`` ES256,
``rs1`` RS256) and drives issue + initialize pairs with wrk (``-t1 -c32``, core 1) for
``--rounds`` rounds. With ``--compare DIR`` (a checkout of another tree: ``git worktree add
DIR REV``) the rounds alternate between that tree and this one, so both see the same machine.
Prints each round and the median pairs per CPU-second of the worker. Never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import credentials, has_eddsa, mobile_pairs, stack, start_gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kid", choices=("ed1", "es1", "rs1"), default="ed1")
    parser.add_argument("--compare", type=Path, metavar="DIR", help="an earlier tree's checkout")
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("now", None)]
    if args.compare:
        trees.insert(0, ("before", args.compare.resolve()))
    results: dict[str, list[float]] = {label: [] for label, _ in trees}
    with tempfile.TemporaryDirectory(prefix="gw-mobile-") as tmpdir:
        tmp = Path(tmpdir)
        with stack(tmp, args.seconds) as ctx:
            servers = []
            for label, code in trees:
                kid = args.kid if has_eddsa(code) or args.kid != "ed1" else "es1"
                server, admin = start_gateway(tmp, f"gw-{label}", ctx, active_kid=kid, code=code)
                key = asyncio.run(credentials(server.port, admin, 0))["key"]
                servers.append((label, server, str(key)))
            for round_ in range(args.rounds):
                for label, server, key in servers:
                    rate, cpu_us = mobile_pairs(tmp, server, key, args.seconds)
                    results[label].append(1e6 / cpu_us)
                    print(
                        f"round {round_ + 1} {label:6s}: {rate:,.0f} pairs/s, {cpu_us:.0f} µs "
                        f"CPU a pair = {1e6 / cpu_us:,.0f} pairs per CPU-second",
                        flush=True,
                    )
            for _, server, _ in servers:
                server.stop()
    for label, figures in results.items():
        print(
            f"{label}: median {statistics.median(figures):,.0f} pairs per CPU-second ({args.kid})"
        )


if __name__ == "__main__":
    main()
