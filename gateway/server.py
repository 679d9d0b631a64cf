"""Running the gateway: listeners, signals, graceful drain.

One process (``workers: 1``) serves the public and admin listeners. With ``workers: N`` a
supervisor (:mod:`gateway.workers`) serves the admin listener and runs N worker processes that
share the public port (``SO_REUSEPORT``). SIGHUP reloads the config; SIGTERM and SIGINT stop
accepting connections, drain in-flight requests for up to ``SHUTDOWN_TIMEOUT`` and close pools.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.app import create_admin_app, create_app
from gateway.config import ConfigError, Listener, Settings
from gateway.decision_server import DecisionServer
from gateway.hangup import EarlyHangup
from gateway.observe import logs
from gateway.protocol import GatewayRunner
from gateway.reload import reload
from gateway.runtime import Current, Runtime, build_runtime, close_resources
from gateway.tls import BoundedSite, TlsContexts, listeners

SHUTDOWN_TIMEOUT = 30.0
SUPERVISOR_CHECK = 1.0  # seconds between a worker's looks at its parent


async def run(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    on_ready: Callable[[Runtime], Awaitable[None]] | None = None,
    public: bool = True,
    admin: bool = True,
    metrics_registry: CollectorRegistry | None = None,
    on_signal: Callable[[signal.Signals], None] | None = None,
    share_port: bool = False,
    app_factory: Callable[[Current], web.Application] = create_app,
    supervisor: int | None = None,
    early: EarlyHangup | None = None,
    draining: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT. ``public``/``admin`` choose the listeners (a worker serves
    only the public one, a supervisor only the admin one). ``share_port`` binds the public
    listener with ``SO_REUSEPORT``, for the workers of one supervisor only: without it, a port
    another process (another gateway included) holds is an error. ``app_factory`` builds the
    public app from the current runtime (the demo wraps :func:`~gateway.app.create_app` to add
    a middleware of its own). ``supervisor``: the pid of the supervisor that started this
    worker; once it is no longer this process's parent (killed, crashed), the worker stops as
    on SIGTERM. ``draining``: awaited once SIGTERM or SIGINT came, before the listeners stop
    (a supervisor's: its workers' drain). ``early``: a SIGHUP that came while the process
    started is a reload as soon as the handler is installed. A listener that cannot be bound
    raises
    :class:`~gateway.config.ConfigError` naming the field, the address and the reason
    (``listen.port: cannot listen on 0.0.0.0:8080: address already in use; …``)."""
    current = Current(runtime or build_runtime(settings))
    tls = TlsContexts()
    runners: list[web.AppRunner] = []
    if public:
        runners.append(
            GatewayRunner(
                app_factory(current),
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                access_log=None,
                handle_signals=False,
            )
        )
    if admin:
        runners.append(
            GatewayRunner(
                create_admin_app(
                    current, metrics_registry, None if public else _listeners(settings)
                ),
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                access_log=None,
                handle_signals=False,
            )
        )
    for runner in runners:
        await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()
    # One reload at a time, in the order the signals came: two at once would each retire the
    # runtime it started from, and the one finishing last would win with whatever file it read.
    reloading = asyncio.Lock()

    def hangup() -> None:
        if on_signal is not None:
            on_signal(signal.SIGHUP)
        if settings.source is not None:
            task = loop.create_task(_reload(current, settings, tls, reloading))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    def terminate(sig: signal.Signals) -> None:
        if on_signal is not None:
            on_signal(sig)
        stop.set()

    decisions: DecisionServer | None = None
    following: asyncio.Task[None] | None = None
    loop.add_signal_handler(signal.SIGHUP, hangup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate, sig)
    if early is not None and early.seen:
        # SECURITY: the file may have changed since this process read it; every other process
        # reloaded it.
        hangup()
    listening = False
    try:
        if public:
            await _bind(
                BoundedSite(
                    runners[0],
                    settings.listen.host,
                    settings.listen.port,
                    ssl_context=tls.context("listen", settings.listen),
                    reuse_port=share_port,
                    handshake_timeout=settings.limits.header_timeout,
                ).start(),
                "listen",
                settings.listen,
            )
        if public and settings.decision.listen is not None:
            decisions = DecisionServer(current, settings)
            await _bind(
                decisions.start(
                    settings.decision.listen,
                    tls.context("decision.listen", settings.decision.listen),
                    reuse_port=share_port,
                ),
                "decision.listen",
                settings.decision.listen,
            )
        if admin:
            await _bind(
                BoundedSite(
                    runners[-1],
                    settings.admin.host,
                    settings.admin.port,
                    ssl_context=tls.context("admin", settings.admin),
                    handshake_timeout=settings.limits.header_timeout,
                ).start(),
                "admin",
                settings.admin,
            )
        listening = True
        logs.event(
            "listening",
            public=f"{settings.listen.host}:{settings.listen.port}" if public else None,
            admin=f"{settings.admin.host}:{settings.admin.port}" if admin else None,
            decision=decisions.address if decisions is not None else None,
            store=current.runtime.store.name,
            pid=os.getpid(),
        )
        settle_heap()
        if supervisor is not None:
            following = loop.create_task(_follow(supervisor, stop))
        if on_ready is not None:
            await on_ready(current.runtime)
        await stop.wait()
        logs.event("stopping: draining in-flight requests", timeout_s=SHUTDOWN_TIMEOUT)
        if draining is not None:
            await draining()
    finally:
        # Every listener stops accepting and drains at once, each for at most SHUTDOWN_TIMEOUT
        # (one after the other, an admin request held open would delay the public drain past
        # the grace period). The public app's cleanup closes the runtime's resources once no
        # request of either public listener is in flight (gateway.runtime.runtime_ctx).
        if following is not None:
            following.cancel()
        closing = [runner.cleanup() for runner in runners]
        if decisions is not None:
            closing.append(decisions.close(SHUTDOWN_TIMEOUT))
        await asyncio.gather(*closing)
        if not public:  # the public app's cleanup_ctx closes them otherwise
            await close_resources(current)
        if listening:  # a process that never listened says why on stderr (the caller), only
            logs.event("stopped")


def _listeners(settings: Settings) -> dict[str, tuple[str, int]]:
    """The listeners a supervisor's workers serve (all but the admin one), as a client on this
    host reaches them."""
    # A wildcard address (every interface) is reached on the loopback.
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
    return {
        field: (local.get(lst.host, lst.host), lst.port)
        for field, lst in listeners(settings)
        if field != "admin"
    }


async def _follow(supervisor: int, stop: asyncio.Event) -> None:
    """A worker's watch on its supervisor. Without it, workers outlived a supervisor killed
    with SIGKILL (ppid 1), kept the public port and served with nobody to reload, restart or
    stop them, and a new supervisor's workers would have shared the port with them."""
    while os.getppid() == supervisor:
        await asyncio.sleep(SUPERVISOR_CHECK)
    logs.event("the supervisor is gone; stopping", logging.WARNING, supervisor=supervisor)
    stop.set()


async def _bind(starting: Awaitable[None], field: str, listener: Listener) -> None:
    try:
        await starting
    except OSError as exc:
        raise listen_error(field, listener.host, listener.port, exc) from None


def listen_error(field: str, host: str, port: int, exc: OSError) -> ConfigError:
    """Why a listener could not bind, naming the field to change: the port when it is taken
    (or needs privileges), the host when no interface has that address or the name does not
    resolve (both were said as a port in use, "unknown error -2")."""
    where = f"cannot listen on {host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"{field}.host", f"{where}: the host name does not resolve")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{field}.host", f"{where}: no interface of this machine has it")
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"{field}.port", f"{where}: permission denied (ports below 1024 need privileges)"
        )
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ConfigError(
        f"{field}.port",
        f"{where}: {reason[:1].lower()}{reason[1:]}; "
        "stop what holds it (another gateway?) or choose another port",
    )


async def _reload(
    current: Current, settings: Settings, tls: TlsContexts, reloading: asyncio.Lock
) -> None:
    assert settings.source is not None
    async with reloading:
        if await reload(current, settings.source, started=settings):
            tls.reload(current.runtime.settings)


def settle_heap() -> None:
    """Once listening: move everything allocated at start-up (modules, config, policy trie,
    keys) out of the collector's sight with ``gc.freeze()``, and collect the young generation
    less often. Caches of verified credentials keep many objects alive; with the default
    thresholds the cyclic collector cost about 8 µs per request under load (measured with
    ``gc.callbacks``). Reference counting still frees almost everything at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
