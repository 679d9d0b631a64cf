"""What every ``gateway`` subcommand's parser shares (the commands live in :mod:`gateway.cli`
and the modules it gathers them from)."""

from __future__ import annotations

import argparse
from typing import Any


def command(
    sub: Any, name: str, summary: str, description: str, examples: tuple[str, ...]
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` explains it and ends with runnable examples (the CLI's
    tests parse every example line with this very parser)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="example"
        + ("s" if len(examples) > 1 else "")
        + ":\n"
        + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
