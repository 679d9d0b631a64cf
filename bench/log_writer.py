"""What the log writer costs a request's access and audit lines, for a few callers and for many.

    python bench/log_writer.py [--entries 20000] [--compare DIR]

The writer thread keeps the part of a request's two lines that repeats for every request of one
caller on one route (:class:`gateway.observe.lines.BatchLines`, at most ``MAX_MIDDLES`` kept):
requests of the same few callers find it kept, requests of ever new callers make it each time.
This formats ``--entries`` requests' lines both ways, 100 callers taking turns and every request
a new caller, and prints the best of seven rounds in µs a request (wall time on one core:
compare trees in one run, interleaved, never figures from different runs). With ``--compare``
the same is measured on an earlier tree's checkout, each round in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(entries: int) -> dict[str, float]:
    """µs a request for each kind of traffic, in the tree this interpreter imports."""
    try:
        from gateway.observe.lines import BatchLines
    except ImportError:  # a tree from before the lines had a module of their own
        from gateway.observe.logs import _BatchLines as BatchLines  # type: ignore[attr-defined,no-redef]

    def traffic(callers: int) -> list[tuple[object, bool, bool]]:
        out: list[tuple[object, bool, bool]] = []
        for i in range(entries):
            user = f"usr_{i % callers}"
            fields = (f"{i:032x}", "users.read", "GET", 200, "user_token", "acc_1", user,
                      None, None, 0.000412, None, "key_1", "allow")  # fmt: skip
            out.append((fields, True, True))
        return out

    out = {}
    for name, callers in (("100 callers in turn", 100), ("a new caller each", entries)):
        batch = traffic(callers)

        def run(batch: list[tuple[object, bool, bool]] = batch) -> None:
            lines = BatchLines()
            for entry in batch:
                lines.exchange(1.7e9, entry)  # type: ignore[arg-type]

        best = min(timeit.repeat(run, number=1, repeat=7))
        out[name] = best / entries * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--compare", type=Path, help="an earlier tree's checkout")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside is not None:
        sys.path.insert(0, str(args.inside))
        print(json.dumps(measure(args.entries)))
        return
    trees = [("now", ROOT)] + ([("before", args.compare.resolve())] if args.compare else [])
    for round_ in (1, 2, 3):
        for label, tree in trees if round_ % 2 else trees[::-1]:
            printed = subprocess.run(
                [sys.executable, __file__, "--inside", str(tree), "--entries", str(args.entries)],
                capture_output=True,
                text=True,
                check=True,
                cwd=tree,
            ).stdout
            figures = json.loads(printed)
            shown = ", ".join(f"{name}: {us:.2f} µs" for name, us in figures.items())
            print(f"round {round_} {label}: {shown}")


if __name__ == "__main__":
    main()
