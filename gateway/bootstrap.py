"""``gateway init``: what a config file needs before its first ``gateway serve``.

It reads the config file as written (placeholders unexpanded) and creates only what is missing,
never overwriting anything:

- every signing key file named under ``tokens.signing_keys`` (and a ``master_key_file``), mode
  0600, in directories created 0700;
- an environment file (default ``gateway.env`` beside the config) with one ``NAME=value`` line
  for every ``${NAME}`` placeholder the config uses: fresh secrets for the master key and the
  admin token, the Redis URL given, and the optional ``${NAME:-default}`` ones commented out
  with their defaults. The same shape, without values, is the shipped
  ``config/gateway.env.example`` (:func:`render_env` with ``values=None``).

It prints what it created and the next commands, never a secret. The environment file is read
by ``set -a; . ./gateway.env; set +a`` in a shell, by systemd's ``EnvironmentFile=``, by
``docker run --env-file`` and by ``kubectl create secret generic --from-env-file``.
"""

from __future__ import annotations

import argparse
import secrets
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from gateway.config import ConfigError
from gateway.config.loader import read_yaml
from gateway.config.placeholders import PLACEHOLDER, check_written
from gateway.config.store import REDIS_SCHEMES

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# What the shipped configs' variables are for (any other variable is described by its field).
DESCRIPTIONS = {
    "REDIS_URL": "Redis shared by every replica: redis://[:password@]host:6379/0, rediss:// "
    "for TLS, unix:///path.sock",
    "GATEWAY_ADMIN_TOKEN": "Bearer token of the admin API, at least 16 characters "
    "(`openssl rand -hex 32`).",
    "GATEWAY_MASTER_KEY": "Encrypts API keys at rest: 32 bytes, base64 (gateway master-key). "
    "Every replica and every CLI run sharing the store must use this same key; without it the "
    "stored API keys cannot be opened.",
    "GATEWAY_PORT": "Port of the public listener.",
    "GATEWAY_ADMIN_PORT": "Port of the admin listener (health, readiness, metrics, admin API).",
    "GATEWAY_LIVE_UPSTREAM": "The backend that live keys (sk_live_) reach: http(s)://host[:port].",
    "GATEWAY_SANDBOX_UPSTREAM": "The backend that sandbox keys (sk_sandbox_, sk_test_) reach.",
}
EXAMPLE_HINTS = {
    "REDIS_URL": DEFAULT_REDIS_URL,
    "GATEWAY_ADMIN_TOKEN": "",
    "GATEWAY_MASTER_KEY": "",
}


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    default: str | None  # None: required
    field: str  # the first config field that uses it


def variables(document: Any) -> list[Variable]:
    """Every ``${NAME}`` the config document uses, in order of first use; required ones (no
    ``:-default``) first."""
    found: dict[str, Variable] = {}
    for field, text in _strings(document, ""):
        for match in PLACEHOLDER.finditer(text):
            name = match.group(1)
            if name not in found:
                found[name] = Variable(name, match.group(2), field)
    ordered = list(found.values())
    return [v for v in ordered if v.default is None] + [v for v in ordered if v.default is not None]


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")


def render_env(config_name: str, document: Any, values: dict[str, str] | None) -> str:
    """The environment file for a config: with ``values`` (name → value) the real file, with
    ``None`` the example (required values empty, to be filled in)."""
    lines = [
        f"# The environment of {config_name}: one line per ${{NAME}} it uses.",
        "# Keep the real file private (mode 0600), out of version control, and the same on every",
        "# replica. Load it before `gateway serve` and every CLI command:",
        "#   set -a; . ./gateway.env; set +a",
        "# (systemd EnvironmentFile=, docker run --env-file and kubectl create secret generic",
        "#  --from-env-file= read it as it is.)",
    ]
    if values is None:
        lines.append("# `gateway init --config FILE` writes this file with fresh secrets.")
    for var in variables(document):
        lines.append("")
        description = DESCRIPTIONS.get(var.name, f"Used by {var.field}.")
        lines.extend(textwrap.wrap(description, 98, initial_indent="# ", subsequent_indent="# "))
        if var.default is not None:
            lines.append(f"# Optional (default {var.default}):")
            lines.append(f"# {var.name}={var.default}")
        elif values is None:
            lines.append(f"{var.name}={EXAMPLE_HINTS.get(var.name, '')}")
        else:
            lines.append(f"{var.name}={values.get(var.name, '')}")
    return "\n".join(lines) + "\n"


def fresh_values(document: Any, redis_url: str) -> dict[str, str]:
    """Values for the required variables that ``init`` can make: secrets and the Redis URL."""
    from gateway.keys.sealing import new_master_key

    makers: dict[str, Callable[[], str]] = {
        "GATEWAY_MASTER_KEY": new_master_key,
        "GATEWAY_ADMIN_TOKEN": lambda: secrets.token_urlsafe(32),
        "REDIS_URL": lambda: redis_url,
    }
    return {
        var.name: makers[var.name]()
        for var in variables(document)
        if var.default is None and var.name in makers
    }


def _literal_path(base: Path, value: Any) -> Path | None:
    if not isinstance(value, str) or PLACEHOLDER.search(value):
        return None
    path = Path(value)
    return path if path.is_absolute() else base / path


def cmd_init(args: argparse.Namespace) -> int:
    """Create the missing files a config names (see the module docstring); 0, or a
    :class:`~gateway.config.ConfigError` when the file cannot be read."""
    from gateway.keys.sealing import new_master_key

    if not args.redis_url.startswith(REDIS_SCHEMES):
        # Written to the environment file, it would fail only at `serve`.
        raise ConfigError("--redis-url", "must be a redis://, rediss:// or unix:// URL")
    config = Path(args.config)
    document = read_yaml(config, "") or {}
    # A broken placeholder would name a file or a variable that is not the one meant.
    check_written(document)
    if not isinstance(document, dict):
        raise ConfigError("", f"{config} must be a mapping")
    base = config.parent
    report: list[str] = []
    tokens = document.get("tokens") or {}
    signing_keys = tokens.get("signing_keys") if isinstance(tokens, dict) else None
    for entry in signing_keys if isinstance(signing_keys, list) else []:
        if not isinstance(entry, dict):
            continue
        path = _literal_path(base, entry.get("file"))
        algorithm = entry.get("algorithm", "RS256")
        if path is None or algorithm not in ("RS256", "ES256", "EdDSA"):
            continue
        what = f"{algorithm} signing key {entry.get('kid')}"
        report.append(_create(path, partial(_signing_pem, algorithm), what))
    master_file = _literal_path(base, document.get("master_key_file"))
    if master_file is not None:
        report.append(
            _create(master_file, lambda: (new_master_key() + "\n").encode(), "master key")
        )
    env_file = Path(args.env_file) if args.env_file else base / "gateway.env"
    values = fresh_values(document, args.redis_url)
    text = render_env(config.name, document, values)
    names = ", ".join(values) or "no variables"
    report.append(_create(env_file, text.encode, f"environment: {names}"))
    missing = [v.name for v in variables(document) if v.default is None and v.name not in values]
    for line in report:
        print(line)
    if missing:
        print(f"fill in {', '.join(missing)} in {env_file}")
    print("next:")
    print(f"  review {env_file} (the Redis URL, the upstream URLs)")
    print(f"  set -a; . {_shell_path(env_file)}; set +a")
    print(f"  gateway check-config {config}")
    print(f"  gateway serve --config {config}")
    return 0


def _signing_pem(algorithm: str) -> bytes:
    from gateway.keys.signing import generate_private_key, private_pem

    return private_pem(generate_private_key(algorithm))


def _create(path: Path, make: Callable[[], bytes], what: str) -> str:
    from gateway.keys.files import write_private_file

    if path.exists():
        return f"kept    {path} (exists; never overwritten)"
    write_private_file(path, make())
    return f"created {path} ({what}; mode 0600)"


def _shell_path(path: Path) -> str:
    text = str(path)
    return text if "/" in text else f"./{text}"
