"""The ``gateway`` command's entry point: what must happen before anything heavy is imported.

For ``serve``, SIGHUP is remembered from here on (:mod:`gateway.hangup`); importing the CLI
(aiohttp, cryptography, pydantic) takes about half a second, and a SIGHUP in it used to end
the process.
"""

from __future__ import annotations

import sys


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        from gateway import hangup

        hangup.install()
    from gateway.cli import main as cli

    return cli()
