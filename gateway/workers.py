"""``workers: N``: a supervisor and N worker processes sharing the public port.

Each worker is ``gateway serve --worker`` and serves the public listener with ``SO_REUSEPORT``
(the kernel spreads connections over them). The supervisor serves the admin listener: health,
readiness, the admin API, and ``/metrics`` aggregated over all workers with prometheus_client's
multiprocess mode (each process writes its samples to a shared directory). It forwards SIGHUP
(reload) and SIGTERM (drain) to the workers and restarts a worker that dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Settings
from gateway.observe import logs

if TYPE_CHECKING:
    from gateway.hangup import EarlyHangup

RESTART_DELAY = 1.0


def supervise(config_path: Path, settings: Settings, early: EarlyHangup | None = None) -> int:
    directory = tempfile.mkdtemp(prefix="gateway-metrics-")
    # prometheus_client picks its multiprocess value store when first imported, so the
    # directory is set before anything imports it, here and (inherited) in every worker.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        from gateway.server import install_event_loop_policy

        install_event_loop_policy()
        asyncio.run(_supervise(config_path, settings, early))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


async def _supervise(config_path: Path, settings: Settings, early: EarlyHangup | None) -> None:
    from prometheus_client import CollectorRegistry, multiprocess

    from gateway.server import SHUTDOWN_TIMEOUT, run

    check_public_port(settings)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    command = [
        *(sys.executable, "-m", "gateway", "serve", "--config", str(config_path)),
        *("--supervisor", str(os.getpid()), "--worker"),
    ]
    # Worker i (1 to N) is started with its index, which its log lines carry; a restarted
    # worker keeps the index of the one it replaces. Each stops once this process is gone.
    workers = [spawn([*command, str(i + 1)]) for i in range(settings.workers)]
    stopping = False

    def forward(sig: signal.Signals) -> None:
        nonlocal stopping
        stopping = stopping or sig != signal.SIGHUP
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(sig)

    async def watch() -> None:
        while not stopping:
            await asyncio.sleep(0.5)
            for i, worker in enumerate(workers):
                if worker.poll() is not None and not stopping:
                    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
                    # A worker only exits on its own when something went wrong (a crash, the
                    # OOM killer's SIGKILL: code -9): a warning, not an info line.
                    logs.event(
                        "worker exited; restarting",
                        logging.WARNING,
                        index=i + 1,
                        pid=worker.pid,
                        code=worker.returncode,
                    )
                    await asyncio.sleep(RESTART_DELAY)
                    workers[i] = spawn([*command, str(i + 1)])

    async def workers_stopped() -> None:
        """Every worker has drained and exited (SIGKILL past the grace period and 5 s)."""
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_TIMEOUT + 5
        for worker in workers:
            remaining = max(0.1, deadline - asyncio.get_running_loop().time())
            try:
                await asyncio.to_thread(worker.wait, remaining)
            except subprocess.TimeoutExpired:
                worker.kill()

    watcher = asyncio.create_task(watch())
    try:
        # The admin listener (health, metrics) stays up while the workers drain: it used to
        # close at once, and the supervisor said "stopped" while workers still served.
        await run(
            settings,
            public=False,
            admin=True,
            metrics_registry=registry,
            on_signal=forward,
            early=early,
            draining=workers_stopped,
        )
    finally:
        stopping = True
        watcher.cancel()
        forward(signal.SIGTERM)
        await workers_stopped()


def spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a worker with SIGHUP ignored until it installs its own handler (once serving): a
    reload forwarded while it is still starting would otherwise end it (SIGHUP's default), and
    it reads the config as it starts anyway. An ignored signal stays ignored across exec."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return subprocess.Popen(command)  # noqa: S603
    finally:
        signal.signal(signal.SIGHUP, previous)


def check_public_port(settings: Settings) -> None:
    """Before starting workers: the public port (and the decision listener's) must be free,
    else :class:`~gateway.config.ConfigError` in one line, as a single process reports it,
    instead of workers failing and being restarted forever.

    Free, not merely shareable. The workers bind with ``SO_REUSEPORT``, which the
    kernel grants any process of the same user that sets it too: a check that allowed a port
    held by such sockets let a second gateway (another config, another store) join the first
    one's port and take a share of its traffic, keys it does not know answered 401 at random.
    A worker restarted later joins its siblings without this check."""
    _check_port("listen", settings.listen.host, settings.listen.port)
    if settings.decision.listen is not None:
        listener = settings.decision.listen
        _check_port("decision.listen", listener.host, listener.port)


def _check_port(field: str, host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR, as aiohttp binds: a port whose connections linger in TIME_WAIT is
            # free; one that anything listens on (with SO_REUSEPORT or not) is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # SECURITY: bound without SO_REUSEPORT, so another gateway's workers cannot share.
            probe.bind(infos[0][4])
    except OSError as exc:
        from gateway.server import listen_error

        raise listen_error(field, host, port, exc) from None
