"""The ``gateway`` command: serve, check-config, demo, keys, relationships, tokens."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson

from gateway.confignode import ConfigError
from gateway.errors import GatewayError
from gateway.requirements import check_runtime_requirements

Command = Callable[[argparse.Namespace], int]


def _print(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _fail(message: str) -> int:
    sys.stderr.write(f"gateway: {message}\n")
    return 2


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import load_settings

    settings = load_settings(args.file)
    check_runtime_requirements(settings)
    rules = len(settings.policy.rules)
    print(
        f"{args.file}: OK ({len(settings.upstreams)} upstream(s), {rules} route rule(s), "
        f"store {settings.store.url.split('@')[-1] if settings.store.is_redis else 'memory'})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.config import load_settings
    from gateway.observe import logs

    settings = load_settings(args.config)
    check_runtime_requirements(settings)
    listener = logs.configure(settings.log_level)
    try:
        if settings.store.is_redis:
            asyncio.run(_check_master_key(settings))
        if settings.workers > 1 and not args.worker:
            from gateway.workers import supervise

            return supervise(Path(args.config), settings)
        from gateway.server import install_event_loop_policy, run

        install_event_loop_policy()
        asyncio.run(run(settings, admin=not args.worker, share_port=args.worker))
    finally:
        listener.stop()
    return 0


async def _check_master_key(settings: Any) -> None:
    """Before serving: refuse a master key other than the one the store's API keys are sealed
    under (:class:`~gateway.keys.fingerprint.MasterKeyMismatch`, a config error). A store that
    cannot answer now does not stop the start (the gateway fails closed until it answers, and
    keys are checked again before one is created)."""
    import logging

    from gateway.errors import StoreUnavailable
    from gateway.keys.fingerprint import ensure_master_key
    from gateway.keys.sealing import Sealer
    from gateway.observe import logs
    from gateway.stores.redis import RedisStore

    store = RedisStore(
        settings.store.url, timeout=settings.store.timeout, prefix=settings.store.prefix
    )
    try:
        await ensure_master_key(store, Sealer(settings.master_key))
    except StoreUnavailable:
        logs.event(
            "cannot compare the master key with the store's now (store unavailable); it is "
            "compared again before a key is created",
            logging.WARNING,
        )
    finally:
        await store.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo.run import run_demo
    from gateway.observe import logs
    from gateway.server import install_event_loop_policy

    listener = logs.configure("WARNING")
    install_event_loop_policy()
    try:
        asyncio.run(run_demo(args.port, args.admin_port, args.backend_port, args.host))
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
    return 0


def cmd_master_key(args: argparse.Namespace) -> int:
    from gateway.keys.sealing import new_master_key

    print(new_master_key())
    return 0


def _with_runtime(args: argparse.Namespace, action: Callable[[Any], Awaitable[Any]]) -> int:
    """Run ``action(runtime)`` against the store named by the config file."""
    from gateway.config import load_settings
    from gateway.runtime import build_runtime

    settings = load_settings(args.config)
    if not settings.store.is_redis:
        return _fail(
            "this command needs a shared store: the config's store is 'memory', which "
            "lives inside one gateway process (use the admin API of that process)"
        )
    check_runtime_requirements(settings)

    async def main() -> Any:
        runtime = build_runtime(settings)
        try:
            # Before anything else: a CLI run never seals a key the servers could not open.
            await runtime.keys.ensure_master_key()
            return await action(runtime)
        finally:
            await runtime.store.close()

    _print(_run(main()))
    return 0


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def cmd_keys(args: argparse.Namespace) -> int:
    """Statuses are reported as of after the change (a revoked key prints as ``revoked``)."""
    environment = getattr(args, "environment", None)
    if args.action == "create":
        if args.test and environment == "live":
            return _fail(
                "--test makes a sandbox key (sk_test_…); it cannot be combined with "
                "--environment live"
            )
        environment = environment or ("sandbox" if args.test else "live")

    async def action(runtime: Any) -> Any:
        if args.action == "create":
            key, record = await runtime.keys.create(
                args.account,
                environment,
                label=args.label,
                test=args.test,
                lifetime=args.lifetime,
            )
            return {"key": key, **record.public(runtime.clock.now())}
        if args.action == "list":
            records = await runtime.keys.list(args.account)
            now = runtime.clock.now()
            return {"keys": [r.public(now) for r in records]}
        if args.action == "rotate":
            key, new, old = await runtime.keys.rotate(args.key_id, grace=args.grace)
            now = runtime.clock.now()
            return {"key": key, **new.public(now), "previous": old.public(now)}
        record = await runtime.keys.revoke(args.key_id)
        return record.public(runtime.clock.now())

    return _with_runtime(args, action)


def cmd_relationships(args: argparse.Namespace) -> int:
    from gateway.identifiers import is_identifier

    for name in ("account", "subject", "actor"):
        if not is_identifier(getattr(args, name)):
            return _fail(f"--{name} must be 1-128 letters, digits, '_' or '-'")

    async def action(runtime: Any) -> Any:
        active = args.action == "grant"
        await runtime.store.set_relationship(args.account, args.subject, args.actor, active)
        return {
            "account": args.account,
            "subject": args.subject,
            "actor": args.actor,
            "active": active,
        }

    return _with_runtime(args, action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway from a config file")
    p.add_argument("--config", required=True)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate a config file and name any bad field")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("demo", help="run the gateway and a sandbox backend on embedded defaults")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=9090)
    p.add_argument("--backend-port", type=int, default=8081)
    p.set_defaults(func=cmd_demo)

    from gateway.bootstrap import DEFAULT_REDIS_URL, cmd_init

    p = sub.add_parser(
        "init",
        help="create the signing keys and the environment file (fresh secrets) a config needs",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--env-file")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("master-key", help="print a new random master key (base64)")
    p.set_defaults(func=cmd_master_key)

    keys = sub.add_parser("keys", help="create, list, rotate and revoke API keys")
    ksub = keys.add_subparsers(dest="action", required=True)
    k = ksub.add_parser("create")
    k.add_argument("--account", required=True)
    k.add_argument("--environment", choices=("live", "sandbox"), default=None)
    k.add_argument("--label", default="")
    k.add_argument("--test", action="store_true", help="sandbox key with the sk_test_ prefix")
    k.add_argument("--lifetime", type=float, help="seconds (default and maximum: 90 days)")
    k = ksub.add_parser("list")
    k.add_argument("--account")
    k = ksub.add_parser("rotate")
    k.add_argument("key_id")
    k.add_argument(
        "--grace",
        type=float,
        default=0.0,
        help="seconds the old key keeps working (default 0: revoked at once)",
    )
    k = ksub.add_parser("revoke")
    k.add_argument("key_id")
    for k in ksub.choices.values():
        k.add_argument("--config", required=True)
    keys.set_defaults(func=cmd_keys)

    rel = sub.add_parser("relationships", help="grant or revoke caregiver relationships")
    rsub = rel.add_subparsers(dest="action", required=True)
    for name in ("grant", "revoke"):
        r = rsub.add_parser(name)
        r.add_argument("--config", required=True)
        r.add_argument("--account", required=True)
        r.add_argument("--subject", required=True, help="the member receiving care")
        r.add_argument("--actor", required=True, help="the caregiver")
    rel.set_defaults(func=cmd_relationships)

    _extend(sub)
    return parser


def _extend(sub: Any) -> None:
    """Commands of the token modules (signing keys, member tokens)."""
    from gateway.issue.cli import add_commands

    add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except GatewayError as exc:
        return _fail(f"{exc.code}: {exc.message}")
