"""CLI commands of the token modules: signing keys and member tokens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.commands import command
from gateway.keys.files import write_private_file
from gateway.keys.signing import generate_private_key, private_pem


def cmd_signing_key(args: argparse.Namespace) -> int:
    pem = private_pem(generate_private_key(args.alg))
    if args.out == "-":
        sys.stdout.write(pem.decode())
        return 0
    try:
        write_private_file(Path(args.out), pem)
    except FileExistsError:
        sys.stderr.write(f"gateway: {args.out} exists; it is never overwritten\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"gateway: cannot write {args.out}: {exc.strerror}\n")
        return 2
    print(f"wrote {args.alg} private key to {args.out} (mode 0600)")
    return 0


def add_commands(sub: Any) -> None:
    from gateway.issue.member_cli import add_member_command

    add_member_command(sub)
    p = command(
        sub,
        "signing-key",
        "generate a gateway signing key (PEM)",
        "Generate a private key for tokens.signing_keys, the keys the gateway signs user tokens\n"
        "and SDK sessions with. The file is created mode 0600 (missing directories 0700) and an\n"
        "existing file is never overwritten. `gateway init` makes the keys a config names.",
        (
            "gateway signing-key --out config/keys/gw-2.pem",
            "gateway signing-key --alg RS256 --out -",
        ),
    )
    p.add_argument(
        "--alg",
        choices=("EdDSA", "ES256", "RS256"),
        default="EdDSA",
        help="EdDSA (Ed25519, the default: the cheapest to sign), ES256 (P-256) or RS256 "
        "(RSA 2048, for relying parties that know nothing else)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="the file to create (never overwritten), or - for standard output",
    )
    p.set_defaults(func=cmd_signing_key)
