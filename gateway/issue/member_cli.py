"""``gateway tokens member``: sign a member or caregiver token the way a customer's server does.

It mirrors the customer-side library of the Source auth document: header
``{"alg": "HS256", "kid": KEY_ID}`` (no ``typ``), payload ``sub``, optional ``act``, ``iat``,
``exp`` and ``scopes`` (default ``[]``), HMAC-SHA256 keyed with the API key's UTF-8 bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import jwt

from gateway.authn.claims import MAX_SCOPE_LENGTH, MAX_SCOPES, scope_tokens
from gateway.commands import command
from gateway.config import ConfigError, Node
from gateway.identifiers import is_identifier
from gateway.keys.material import KEY_ID_SHAPE, KEY_SHAPE

MAX_TTL = 86400.0
# Where the signing key is read from when --key is not given: an argument is visible to every
# user of the machine in the process list, the environment only to the process's owner.
KEY_ENV = "GATEWAY_API_KEY"


def member_token(
    key: str,
    key_id: str,
    sub: str,
    *,
    act: str | None = None,
    ttl: float = 300.0,
    scopes: tuple[str, ...] = (),
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    payload: dict[str, Any] = {"sub": sub}
    if act is not None:
        payload["act"] = act
    payload.update({"iat": issued, "exp": issued + int(ttl), "scopes": list(scopes)})
    return jwt.encode(
        payload, key.encode("utf-8"), algorithm="HS256", headers={"kid": key_id, "typ": None}
    )


def cmd_member(args: argparse.Namespace) -> int:
    problems = []
    key = args.key if args.key is not None else os.environ.get(KEY_ENV)
    if key is None:
        problems.append(f"the signing key is needed: set {KEY_ENV} (or give --key)")
    elif not KEY_SHAPE.match(key):
        problems.append(
            f"{'--key' if args.key is not None else KEY_ENV} must be an API key "
            "(sk_live_…, sk_sandbox_…, sk_test_…)"
        )
    if not KEY_ID_SHAPE.match(args.key_id):
        problems.append("--key-id must be a key id (key_…)")
    for name in ("sub", "act"):
        value = getattr(args, name)
        if value is not None and not is_identifier(value):
            problems.append(f"--{name} must be 1-128 letters, digits, '_' or '-'")
    try:
        ttl = Node(args.ttl, "--ttl").duration(minimum=1, maximum=MAX_TTL)
    except ConfigError as exc:
        problems.append(f"{exc} (at most 24h)")
        ttl = 0.0
    scopes = tuple(s for s in (args.scopes or "").split(",") if s)
    if scope_tokens(list(scopes)) is None:
        # What the gateway would refuse (401 `claims`): never signed.
        problems.append(
            f"--scopes must be at most {MAX_SCOPES} comma-separated scopes of printable ASCII "
            f"without space, '\"' or '\\', each at most {MAX_SCOPE_LENGTH} characters"
        )
    if problems or key is None:
        sys.stderr.write("gateway: " + "; ".join(problems) + "\n")
        return 2
    print(member_token(key, args.key_id, args.sub, act=args.act, ttl=ttl, scopes=scopes))
    return 0


def add_member_command(sub: Any) -> None:

    key_from_env = f'export {KEY_ENV}="$API_KEY"   # the API key that signs'
    example = "gateway tokens member --key-id key_0123456789abcdef01234567 --sub usr_1 --ttl 1h"
    tokens = command(
        sub,
        "tokens",
        "sign tokens as a customer's server would",
        "Sign tokens the way a customer's own server does, for trying the gateway out and for\n"
        "tests. It needs no config: only the API key that signs.",
        (key_from_env, example),
    )
    tsub = tokens.add_subparsers(dest="action", required=True, metavar="KIND")
    m = command(
        tsub,
        "member",
        "a member token (or a caregiver token with --act)",
        "Print a member token: an HS256 JWT signed with an API key, header kid = the key's id,\n"
        "payload sub, optional act (a caregiver acting for sub), iat, exp and scopes. A\n"
        "caregiver token works only while the relationship (sub, act) is granted. The API key\n"
        f"that signs is read from {KEY_ENV}: an argument would show it to every user of the\n"
        "machine in the process list.",
        (
            key_from_env,
            example,
            "gateway tokens member --key-id key_0123456789abcdef01234567 --sub usr_1 --act usr_2 "
            "--scopes sleep:read,scores:read",
        ),
    )
    m.add_argument(
        "--key",
        help=f"the API key that signs (sk_…), instead of {KEY_ENV}: visible in the process list",
    )
    m.add_argument("--key-id", required=True, help="its key id (key_…), the JWT kid")
    m.add_argument("--sub", required=True, help="the member")
    m.add_argument("--act", help="the caregiver acting for --sub")
    m.add_argument(
        "--ttl", default="5m", help="lifetime, e.g. 5m, 1h (default %(default)s, at most 24h)"
    )
    m.add_argument("--scopes", default="", help="comma-separated, e.g. sleep:read,scores:read")
    tokens.set_defaults(func=cmd_member)
