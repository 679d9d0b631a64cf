"""CLI commands of the token modules: signing keys and member tokens."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gateway.issue.signing import generate_private_key, private_pem


def cmd_signing_key(args: argparse.Namespace) -> int:
    pem = private_pem(generate_private_key(args.alg))
    if args.out == "-":
        sys.stdout.write(pem.decode())
        return 0
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    print(f"wrote {args.alg} private key to {args.out} (mode 0600)")
    return 0


def add_commands(sub: Any) -> None:
    from gateway.issue.member_cli import add_member_command

    add_member_command(sub)
    p = sub.add_parser("signing-key", help="generate a gateway signing key (PEM)")
    p.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    p.add_argument("--out", required=True, help="file to create (never overwritten), or -")
    p.set_defaults(func=cmd_signing_key)
