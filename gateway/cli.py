"""The ``gateway`` command: serve, check-config, config schema, demo, init, keys, relationships,
tokens, signing-key, master-key. Every command's ``--help`` explains each option and ends with
examples."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson

from gateway.commands import command
from gateway.config import ConfigError
from gateway.config.base import parse_duration
from gateway.errors import GatewayError, StoreUnavailable
from gateway.requirements import check_runtime_requirements, check_served_files

Command = Callable[[argparse.Namespace], int]


def _port(text: str) -> int:
    """A TCP port to listen on, 1-65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port, 1-65535, got {text!r}")
    return int(text)


def _duration(text: str) -> float:
    """``--lifetime``, ``--grace``: seconds, or a duration with a unit as in the config
    (``12h``, ``30d``)."""
    try:
        return float(parse_duration(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 3600, 12h or 30d, got {text!r}"
        ) from None


def _print(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _why(exc: GatewayError) -> str:
    """What an operator needs to act on a refusal the message leaves general: the reason in
    its details (``not_replicated``), and for a store that did not answer, what the client
    library said (``AuthenticationError: invalid username-password pair…``; never a
    password: redis-py's messages name none)."""
    if not isinstance(exc, StoreUnavailable):
        return ""  # the others' messages say what happened
    parts = []
    reason = exc.details.get("reason")
    if isinstance(reason, str) and reason not in exc.message:
        parts.append(f"reason: {reason}")
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, GatewayError):
        from gateway.stores.redis import said

        words = said(cause)[:300]
        parts.append(f"{type(cause).__name__}: {words}" if words else type(cause).__name__)
    return f" ({'; '.join(parts)})" if parts else ""


def _fail(message: str) -> int:
    sys.stderr.write(f"gateway: {message}\n")
    return 2


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.authz.policy import Policy
    from gateway.keys.signing import SigningKeys
    from gateway.settings import load_settings

    settings = load_settings(args.file)
    check_runtime_requirements(settings)
    check_served_files(settings)
    SigningKeys.from_settings(settings.tokens)  # each file a key of its algorithm, as serve loads
    rules = len(settings.section("policy", Policy).rules)
    print(
        f"{args.file}: OK ({len(settings.upstreams)} upstream(s), {rules} route rule(s), "
        f"store {settings.store.describe()})"
    )
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    from gateway.config.schema import render
    from gateway.settings import config_schema, policy_schema

    sys.stdout.write(render(policy_schema() if args.policy else config_schema()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway import hangup
    from gateway.observe import logs
    from gateway.settings import load_settings

    early = hangup.install()  # (by the entry point already) before the file is read
    settings = load_settings(args.config)
    check_runtime_requirements(settings)
    check_served_files(settings)
    listener = logs.configure(settings.log_level, worker=args.worker)
    try:
        if settings.store.is_redis:
            asyncio.run(_check_master_key(settings))
        if settings.workers > 1 and args.worker is None:
            from gateway.workers import supervise

            return supervise(Path(args.config), settings, early)
        from gateway.server import install_event_loop_policy, run

        install_event_loop_policy()
        worker = args.worker is not None
        asyncio.run(
            run(
                settings,
                admin=not worker,
                share_port=worker,
                supervisor=args.supervisor,
                early=early,
            )
        )
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
    from gateway.keys.fingerprint import CLAIMED, ensure_master_key
    from gateway.keys.sealing import Sealer
    from gateway.observe import logs
    from gateway.stores.redis import open_redis_store

    store = open_redis_store(settings.store)
    sealer = Sealer(settings.master_key)
    try:
        if await ensure_master_key(store, sealer):
            logs.event(CLAIMED.format(sealer.fingerprint))
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

    flags = {
        "--port": args.port,
        "--admin-port": args.admin_port,
        "--backend-port": args.backend_port,
        "--page-port": args.page_port,
    }
    seen: dict[int, str] = {}
    for flag, port in flags.items():
        if port in seen:
            print(f"gateway: {flag}: {port} is already {seen[port]}'s port", file=sys.stderr)
            return 2
        seen[port] = flag
    listener = logs.configure("WARNING")
    install_event_loop_policy()
    try:
        asyncio.run(
            run_demo(args.port, args.admin_port, args.backend_port, args.host, args.page_port)
        )
    except KeyboardInterrupt:
        pass
    except ConfigError as error:
        # The demo has no config file: a listener's field is said as the flag that sets it.
        as_flags = {"listen.port": "--port", "admin.port": "--admin-port", "listen.host": "--host"}
        said = as_flags.get(error.path)
        raise error if said is None else ConfigError(said, error.problem) from None
    finally:
        listener.stop()
    return 0


def cmd_master_key(args: argparse.Namespace) -> int:
    from gateway.keys.sealing import new_master_key

    print(new_master_key())
    return 0


def _with_runtime(args: argparse.Namespace, action: Callable[[Any], Awaitable[Any]]) -> int:
    """Run ``action(runtime)`` against the store named by the config file."""
    from gateway.keys.fingerprint import CLAIMED
    from gateway.runtime import build_runtime
    from gateway.settings import load_settings

    settings = load_settings(args.config)
    if not settings.store.is_redis:
        return _fail(
            "this command needs a shared store: the config's store is 'memory', which "
            "lives inside one gateway process (use the admin API of that process)"
        )
    check_runtime_requirements(settings)

    async def main() -> Any:
        runtime = build_runtime(settings)
        # The command says what the store said itself (its error line, _why); the store's own
        # warning line is a server's log line, in plain text here before it.
        runtime.store.quiet = True
        try:
            # Before anything else: a CLI run never seals a key the servers could not open.
            if await runtime.keys.ensure_master_key():
                note = CLAIMED.format(runtime.keys.sealer.fingerprint)
                sys.stderr.write(f"gateway: note: {note}\n")
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
        from gateway.admin import failed_on, key_acted_on

        if args.action == "list":
            records = await runtime.keys.list(args.account)
            now = runtime.clock.now()
            return {"keys": [r.public(now) for r in records]}
        route = f"cli:{args.action}_key"
        try:
            if args.action == "create":
                key, record = await runtime.keys.create(
                    args.account,
                    environment,
                    label=args.label,
                    test=args.test,
                    lifetime=args.lifetime,
                )
                acted_on = key_acted_on(record)
                result = {"key": key, **record.public(runtime.clock.now())}
            elif args.action == "rotate":
                key, new, old = await runtime.keys.rotate(args.key_id, grace=args.grace)
                now = runtime.clock.now()
                acted_on = key_acted_on(old, new)
                result = {"key": key, **new.public(now), "previous": old.public(now)}
            else:
                record = await runtime.keys.revoke(args.key_id)
                acted_on = key_acted_on(record)
                result = record.public(runtime.clock.now())
        except GatewayError as exc:
            # Refused (an unknown key, a key rotated already): on record too, as the admin
            # API's refusals are; without what was asked for (a key pasted for its id).
            _audit_change(route, exc.code, failed_on(exc))
            raise
        _audit_change(route, None, acted_on)
        return result

    return _with_runtime(args, action)


def _audit_change(route: str, error: str | None, acted_on: dict[str, str]) -> None:
    """The audit line of a key or relationship change made with a command, as the admin API
    writes one (:func:`gateway.admin.audit_action`; ``credential`` and ``actor`` ``cli``,
    ``os_user`` the local account running it), as a JSON line on stderr: stdout is the
    command's answer."""
    import getpass
    import logging
    import uuid

    from gateway.admin import audit_action
    from gateway.observe import logs

    try:
        os_user: str | None = getpass.getuser()
    except Exception:  # no name for this uid (a container's): the line says so, still written
        os_user = None
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "route": route,
        "error": error,
        "credential": "cli",
        "os_user": os_user,
    }
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.JsonFormatter())
    level = logs.AUDIT.level
    logs.AUDIT.addHandler(handler)
    logs.AUDIT.setLevel(logging.INFO)
    try:
        audit_action(fields, actor="cli", ok=error is None, acted_on=acted_on)
    finally:
        logs.AUDIT.removeHandler(handler)
        logs.AUDIT.setLevel(level)


def cmd_relationships(args: argparse.Namespace) -> int:
    from gateway.identifiers import is_identifier

    for name in ("account", "subject", "actor"):
        if not is_identifier(getattr(args, name)):
            return _fail(f"--{name} must be 1-128 letters, digits, '_' or '-'")

    async def action(runtime: Any) -> Any:
        from gateway.admin import relationship_acted_on

        active = args.action == "grant"
        route = f"cli:{args.action}_relationship"
        try:
            await runtime.store.set_relationship(args.account, args.subject, args.actor, active)
        except GatewayError as exc:
            _audit_change(route, exc.code, {})
            raise
        _audit_change(route, None, relationship_acted_on(args.account, args.subject, args.actor))
        return {
            "account": args.account,
            "subject": args.subject,
            "actor": args.actor,
            "active": active,
        }

    return _with_runtime(args, action)


CONFIG_HELP = (
    "the gateway's config file (YAML), the one the servers use; ${NAME} placeholders are read "
    "from the environment (load gateway.env first)"
)
OVERVIEW = """\
An authentication gateway for health-data APIs: it validates and scopes every bearer token at
the edge and forwards only what the route policy allows. Run `gateway COMMAND --help` for the
options and an example of each command."""
FIRST_DEPLOY = """\
first deploy (README, "Deployment"):
  gateway init --config config/gateway.yaml --redis-url redis://127.0.0.1:6379/0
  set -a; . config/gateway.env; set +a
  gateway check-config config/gateway.yaml
  gateway serve --config config/gateway.yaml

try it without a config:
  gateway demo"""


def build_parser() -> argparse.ArgumentParser:
    from gateway.bootstrap import DEFAULT_REDIS_URL, cmd_init

    parser = argparse.ArgumentParser(
        prog="gateway",
        description=OVERVIEW,
        epilog=FIRST_DEPLOY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from gateway import __version__

    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = command(
        sub,
        "serve",
        "run the gateway from a config file",
        "Serve the public and the admin listener (workers, addresses and everything else from\n"
        "the config file) until SIGTERM or SIGINT, which drain in-flight requests; SIGHUP\n"
        "reloads the file. Logs are JSON lines on stdout.",
        ("gateway serve --config config/gateway.yaml",),
    )
    p.add_argument("--config", required=True, metavar="FILE", help=CONFIG_HELP)
    # A worker of `workers: N`, started by the supervisor with its index (1 to N).
    p.add_argument("--worker", type=int, metavar="N", help=argparse.SUPPRESS)
    # ... and the supervisor's pid: the worker stops once that process is no longer its parent.
    p.add_argument("--supervisor", type=int, metavar="PID", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = command(
        sub,
        "check-config",
        "validate a config file and name any bad field",
        "Parse and validate a config file as `serve` would (placeholders expanded from the\n"
        "environment, files it names read); exit 0 with a summary, or 2 naming the bad field.",
        ("gateway check-config config/gateway.yaml",),
    )
    p.add_argument("file", metavar="FILE", help="the config file to check")
    p.set_defaults(func=cmd_check_config)

    p = command(
        sub,
        "config",
        "describe the config file",
        "What the config file may contain, for editors and tools.",
        ("gateway config schema",),
    )
    config_sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = command(
        config_sub,
        "schema",
        "print the JSON Schema of the config file",
        "Print the JSON Schema (draft 2020-12) of the config file, generated from the models\n"
        "the gateway validates with; config/gateway.schema.json is this output. Point an editor\n"
        "at it with a first line `# yaml-language-server: $schema=gateway.schema.json`.",
        ("gateway config schema", "gateway config schema --policy"),
    )
    p.add_argument(
        "--policy", action="store_true", help="the schema of a route policy file instead"
    )
    p.set_defaults(func=cmd_config_schema)

    p = command(
        sub,
        "demo",
        "run the gateway and a sandbox backend on embedded defaults",
        "Run the gateway with an in-process store and a bundled sandbox backend with synthetic\n"
        "data, and print a working API key and curl lines: API keys, user and mobile tokens,\n"
        "webhooks and events, a caregiver allowed and one refused. A web page on its own\n"
        "origin (--page-port) shows the browser flow: it reads a user's scores with a user\n"
        "token and draws them. One line per request is printed as it is answered. Nothing\n"
        "outlives the process.",
        (
            "gateway demo",
            "gateway demo --port 18080 --admin-port 19090 --backend-port 18081 --page-port 18082",
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=_port, default=8080, help="public port (default %(default)s)")
    p.add_argument(
        "--admin-port", type=_port, default=9090, help="admin port (default %(default)s)"
    )
    p.add_argument(
        "--backend-port",
        type=_port,
        default=8081,
        help="port of the bundled sandbox backend (default %(default)s)",
    )
    p.add_argument(
        "--page-port",
        type=_port,
        default=8082,
        help="port of the demo's web page, the origin the gateway's CORS config allows "
        "(default %(default)s)",
    )
    p.set_defaults(func=cmd_demo)

    p = command(
        sub,
        "init",
        "create the signing keys and the environment file a config needs",
        "Create what a config file names but nothing can ship: each signing key file under\n"
        "tokens.signing_keys (and a master_key_file), and an environment file with one line per\n"
        "${NAME} the config uses: fresh GATEWAY_MASTER_KEY and GATEWAY_ADMIN_TOKEN, the Redis\n"
        "URL given, optional variables commented out. Files are created mode 0600; an existing\n"
        "file is never overwritten, and no secret is printed.",
        (
            "gateway init --config config/gateway.yaml --redis-url redis://127.0.0.1:6379/0",
            "gateway init --config /etc/gateway/gateway.yaml --env-file /etc/gateway/gateway.env",
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the config file to prepare")
    p.add_argument(
        "--env-file",
        metavar="FILE",
        help="where to write the environment (default: gateway.env beside the config)",
    )
    p.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        metavar="URL",
        help="the REDIS_URL to write (default %(default)s)",
    )
    p.set_defaults(func=cmd_init)

    p = command(
        sub,
        "master-key",
        "print a new random master key (base64)",
        "Print 32 random bytes, base64: a value for master_key / GATEWAY_MASTER_KEY. API keys\n"
        "are sealed under it; every replica and CLI run sharing a store must use the same one\n"
        "(the store records its fingerprint and refuses another).",
        ("gateway master-key",),
    )
    p.set_defaults(func=cmd_master_key)

    keys = command(
        sub,
        "keys",
        "create, list, rotate and revoke API keys",
        "Manage API keys in the shared Redis store the config names (any replica sees a change\n"
        "within a second). Every command prints JSON; a new key is shown once, by create and\n"
        "rotate. Needs the servers' master key in the environment.",
        (
            "gateway keys create --config config/gateway.yaml --account acc_123",
            "gateway keys list --config config/gateway.yaml --account acc_123",
        ),
    )
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    k = command(
        ksub,
        "create",
        "create a key and print it (shown this once only)",
        "Create an API key for an account: sk_live_ (live), sk_sandbox_ (sandbox) or, with\n"
        "--test, sk_test_ (sandbox). It expires after api_keys.lifetime (90 days by default).",
        (
            "gateway keys create --config config/gateway.yaml --account acc_123 --label backend",
            "gateway keys create --config config/gateway.yaml --account acc_123 --test",
        ),
    )
    k.add_argument("--account", required=True, help="the account the key acts for")
    k.add_argument(
        "--environment",
        choices=("live", "sandbox"),
        default=None,
        help="which upstream its traffic reaches (default live; sandbox with --test)",
    )
    k.add_argument("--label", default="", help="a note shown by list (at most 200 characters)")
    k.add_argument(
        "--test",
        action="store_true",
        help="a sandbox key with the sk_test_ prefix (contradicts --environment live)",
    )
    k.add_argument(
        "--lifetime",
        type=_duration,
        metavar="DURATION",
        help="shorter than the default lifetime (api_keys.lifetime, at most 90 days): seconds, "
        "or with a unit (12h, 30d)",
    )
    k = command(
        ksub,
        "list",
        "list keys with their status (never the keys themselves)",
        "List key ids, accounts, environments, labels, dates and statuses (active, expired,\n"
        "revoked, rotated). Keys themselves are never shown.",
        ("gateway keys list --config config/gateway.yaml --account acc_123",),
    )
    k.add_argument("--account", help="only this account's keys (default: every account)")
    k = command(
        ksub,
        "rotate",
        "replace a key with a new one",
        "Create a new key for the same account and environment and retire the old one: at\n"
        "once, or after --grace seconds for a rotation without downtime.",
        (
            "gateway keys rotate --config config/gateway.yaml key_0123456789abcdef01234567",
            "gateway keys rotate --config config/gateway.yaml key_0123456789abcdef01234567 "
            "--grace 300",
        ),
    )
    k.add_argument("key_id", metavar="KEY_ID", help="the key to rotate (key_…)")
    k.add_argument(
        "--grace",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="how long the old key keeps working (default 0: it stops at once; at most 24h): "
        "seconds, or with a unit (5m, 1h)",
    )
    k = command(
        ksub,
        "revoke",
        "revoke a key at once",
        "Revoke a key: it and every token issued with it stop working on every replica within\n"
        "a second.",
        ("gateway keys revoke --config config/gateway.yaml key_0123456789abcdef01234567",),
    )
    k.add_argument("key_id", metavar="KEY_ID", help="the key to revoke (key_…)")
    for k in ksub.choices.values():
        k.add_argument("--config", required=True, metavar="FILE", help=CONFIG_HELP)
    keys.set_defaults(func=cmd_keys)

    rel = command(
        sub,
        "relationships",
        "grant or revoke caregiver relationships",
        "Grant or revoke the relationship that lets a caregiver (the actor) use caregiver\n"
        "tokens for a member (the subject) of an account, in the shared store. Revocation\n"
        "takes effect on every replica within a second.",
        (
            "gateway relationships grant --config config/gateway.yaml --account acc_123 "
            "--subject usr_1 --actor usr_2",
        ),
    )
    rsub = rel.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, summary in (
        ("grant", "let a caregiver act for a member"),
        ("revoke", "stop a caregiver acting for a member"),
    ):
        r = command(
            rsub,
            name,
            summary,
            f"{summary[0].upper()}{summary[1:]} of an account; prints the relationship as JSON.",
            (
                f"gateway relationships {name} --config config/gateway.yaml --account acc_123 "
                "--subject usr_1 --actor usr_2",
            ),
        )
        r.add_argument("--config", required=True, metavar="FILE", help=CONFIG_HELP)
        r.add_argument("--account", required=True, help="the account both belong to")
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
        return _fail(f"{exc.code}: {exc.message}{_why(exc)}")
