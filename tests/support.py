"""Real helpers for tests: free ports, a Redis server, a recording upstream, a fake clock, and
the one way a test starts a server process (:class:`OwnedProcess`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeClock:
    """A clock the test moves."""

    def __init__(self, start: float | None = None) -> None:
        self.t = start if start is not None else time.time()

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class OwnedProcess(subprocess.Popen[bytes]):
    """A server process a test starts, and then stops: exactly it and what it started.

    It leads a session and process group of its own (so an interrupt meant for pytest, or a
    signal to pytest's group, does not reach it, and its workers can be found by group), and
    carries an environment variable unique to it (``GATEWAY_TEST_PROCESS``), inherited by
    whatever it starts, even by a helper that leaves the group (Chromium's crash handler).
    :meth:`stop` signals this process by its pid, then ends anything left in its group or
    carrying its mark, and fails when something survives ``SIGKILL``. Nothing is ever signalled
    by name."""

    MARK = "GATEWAY_TEST_PROCESS"

    def __init__(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        self.mark = uuid.uuid4().hex
        child_env = dict(os.environ if env is None else env)
        child_env[self.MARK] = self.mark
        super().__init__(list(args), env=child_env, start_new_session=True, **kwargs)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the process's own graceful stop, which ends its children), SIGKILL after
        ``timeout``; then whatever it started that is still alive. Idempotent."""
        try:
            if self.poll() is None:
                self.terminate()
                try:
                    self.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
                    self.wait(10)
        finally:
            self._end_leftovers()

    def leftovers(self) -> list[int]:
        """Live processes (not zombies) in this process's group or carrying its mark."""
        mark = f"{self.MARK}={self.mark}".encode()
        found = []
        for pid, group, state in _processes():
            if state in "ZX" or pid == os.getpid():
                continue
            if group == self.pid or _environ_has(pid, mark):
                found.append(pid)
        return found

    def _end_leftovers(self) -> None:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            left = self.leftovers()
            if not left:
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self.leftovers() and time.monotonic() < deadline:
                time.sleep(0.05)
        left = self.leftovers()
        if left:
            raise RuntimeError(f"{self.args!r}: processes {left} survived SIGKILL")


def _processes() -> Iterator[tuple[int, int, str]]:
    """(pid, process group, state) of every process, from /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        yield int(entry.name), int(fields[2]), fields[0]


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # ended meanwhile, or not ours to read
        return False
    return entry in environ.split(b"\0")


class RedisServer:
    """A fresh ``redis-server`` on a free port, owned by the test session."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found: install it (Debian: apt-get install redis-server)"
            )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = binary
        self.proc: OwnedProcess | None = None
        self.start()

    def start(self) -> None:
        self.proc = OwnedProcess(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                "--enable-debug-command",
                "local",  # the fault tests use DEBUG SLEEP to make Redis slow
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.stop()


# Credentials of the Redis topologies the tests start (tests only): the gateway connects as an
# ACL user, replicas authenticate as another (so a test can cut replication off), and the
# sentinels ask for a password of their own.
STORE_USER = "gateway"
STORE_PASSWORD = "gateway-test-password"
SENTINEL_PASSWORD = "sentinel-test-password"
REPLICATION_USER = "replicator"
REPLICATION_PASSWORD = "replicator-test-password"


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found: install it (Debian: apt-get install redis-server)"
        )
    return binary


def topology_node_args(port: int, directory: Path) -> list[str]:
    """redis-server arguments shared by every data node of a topology."""
    return [
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
        *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
        *("--loglevel", "warning", "--enable-debug-command", "local"),
        # A replica syncs at once (the default waits 5 s for more replicas to join).
        *("--repl-diskless-sync-delay", "0"),
        *("--user", STORE_USER, "on", f">{STORE_PASSWORD}", "~*", "&*", "+@all"),
        *("--user", REPLICATION_USER, "on", f">{REPLICATION_PASSWORD}"),
        *("+psync", "+replconf", "+ping"),
        *("--masteruser", REPLICATION_USER, "--masterauth", REPLICATION_PASSWORD),
    ]


class RedisNode:
    """One ``redis-server`` (data node or sentinel) of a topology a test starts, owned by it."""

    def __init__(self, port: int, args: list[str]) -> None:
        self.port = port
        self._args = [redis_binary(), *args]
        self.proc: OwnedProcess | None = None

    def start(self) -> None:
        self.proc = OwnedProcess(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, alive=self.proc)
        except BaseException:
            self.stop()
            raise

    def restart(self) -> None:
        """Start again after :meth:`kill`, with the same arguments (and no data: nothing is
        persisted), as an orchestrator restarts a dead pod."""
        self.stop()
        self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, by pid: the node dies without a word to anyone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.stop()

    def command(self, *args: Any, password: str | None = None) -> Any:
        """The raw reply, as redis-cli shows it (no redis-py parsing), as the default user (or
        with ``password``)."""
        import redis

        connection: Any = redis.Connection(  # type: ignore[no-untyped-call]
            host="127.0.0.1",
            port=self.port,
            password=password,
            socket_timeout=5,
            decode_responses=True,
        )
        try:
            connection.send_command(*args)
            return connection.read_response()
        finally:
            connection.disconnect()

    def block_replication(self) -> None:
        """On a master: its replicas can no longer authenticate, and the ones connected are
        cut off. Writes from now on reach no replica (WAIT answers 0)."""
        self.command("ACL", "SETUSER", REPLICATION_USER, "off")
        self.command("CLIENT", "KILL", "USER", REPLICATION_USER)

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """On a master: until every replica has every write it took so far."""
        target = int(self.command("INFO", "replication").split("master_repl_offset:")[1].split()[0])

        def caught_up() -> bool:
            info = self.command("INFO", "replication")
            offsets = [
                int(line.split("offset=")[1].split(",")[0])
                for line in info.splitlines()
                if line.startswith("slave") and "offset=" in line
            ]
            return bool(offsets) and min(offsets) >= target

        _wait_until("replicas caught up", caught_up, timeout)

    def allow_replication(self) -> None:
        self.command("ACL", "SETUSER", REPLICATION_USER, "on")


def _wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - a node still starting or just killed
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout}s")
        time.sleep(0.05)


class SentinelTopology:
    """One master, one replica and three sentinels on 127.0.0.1, started and stopped by the
    tests (``redis-server --sentinel``). The sentinels fail over after ``down_after`` ms."""

    MASTER = "mymaster"

    def __init__(self, down_after: int = 1000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-sentinel-"))
        master_port, replica_port = free_port(), free_port()
        self.data = [
            RedisNode(master_port, topology_node_args(master_port, self.dir)),
            RedisNode(
                replica_port,
                [
                    *topology_node_args(replica_port, self.dir),
                    *("--replicaof", "127.0.0.1", str(master_port)),
                ],
            ),
        ]
        self.sentinels = []
        for _ in range(3):
            port = free_port()
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\nloglevel warning\n"
                f"requirepass {SENTINEL_PASSWORD}\n"
                f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {self.MASTER} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {self.MASTER} {down_after}\n"
                f"sentinel failover-timeout {self.MASTER} 10000\n"
            )
            self.sentinels.append(RedisNode(port, [str(conf), "--sentinel"]))
        try:
            for node in (*self.data, *self.sentinels):
                node.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def store_section(self, **extra: Any) -> dict[str, Any]:
        """The gateway's ``store`` section for this topology."""
        return {
            "sentinel": {
                "master": self.MASTER,
                "nodes": [f"127.0.0.1:{s.port}" for s in self.sentinels],
                "password": SENTINEL_PASSWORD,
            },
            "username": STORE_USER,
            "password": STORE_PASSWORD,
            **extra,
        }

    def _ask(self, *args: Any) -> Any:
        for sentinel in self.sentinels:
            if sentinel.alive:
                try:
                    return sentinel.command("SENTINEL", *args, password=SENTINEL_PASSWORD)
                except Exception:  # noqa: S112 - ask the next one
                    continue
        raise RuntimeError("no sentinel answers")

    @property
    def master(self) -> RedisNode:
        """The data node the sentinels name master now."""
        _, port = self._ask("GET-MASTER-ADDR-BY-NAME", self.MASTER)
        return next(node for node in self.data if node.port == int(port))

    def _state(self, sentinel: RedisNode) -> dict[str, str]:
        """``SENTINEL MASTER``'s fields, as one sentinel sees the master."""
        flat = sentinel.command("SENTINEL", "MASTER", self.MASTER, password=SENTINEL_PASSWORD)
        # A map (RESP3) or a flat list of pairs (RESP2).
        pairs = zip(flat[::2], flat[1::2], strict=True) if isinstance(flat, list) else ()
        return flat if isinstance(flat, dict) else dict(pairs)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Every sentinel knows the master, the replica and the two other sentinels, and the
        replica is in sync: a failover can happen."""

        def ready() -> bool:
            for sentinel in self.sentinels:
                state = self._state(sentinel)
                if state["num-slaves"] != "1" or state["num-other-sentinels"] != "2":
                    return False
            replica = next(node for node in self.data if node is not self.master)
            return "master_link_status:up" in replica.command("INFO", "replication")

        _wait_until("sentinel topology ready", ready, timeout)

    def block_replication(self) -> None:
        """Writes to the master from now on reach no replica."""
        self.master.block_replication()

    def restore_replication(self) -> None:
        for node in self.data:
            node.allow_replication()
        self.wait_ready()

    def wait_promoted(self, old: RedisNode, timeout: float = 30.0) -> RedisNode:
        """Until every sentinel names the same other master than ``old`` and it acts as one.
        Every sentinel, not one: a sentinel still holding the old configuration, seeing ``old``
        restarted (empty) and the promoted node claiming to be master, turns the promoted node
        back into a replica of ``old``, which then replaces its data with nothing."""

        def promoted() -> bool:
            named = {
                int(
                    sentinel.command(
                        "SENTINEL",
                        "GET-MASTER-ADDR-BY-NAME",
                        self.MASTER,
                        password=SENTINEL_PASSWORD,
                    )[1]
                )
                for sentinel in self.sentinels
                if sentinel.alive
            }
            if len(named) != 1 or old.port in named:
                return False
            # And the failover over everywhere, with one configuration: a sentinel still in it
            # (or on an older epoch) can take the restarted, empty node for the master.
            states = [self._state(sentinel) for sentinel in self.sentinels if sentinel.alive]
            if any("failover_in_progress" in st["flags"] for st in states):
                return False
            if len({st["config-epoch"] for st in states}) != 1:
                return False
            new = next(node for node in self.data if node.port in named)
            return bool(new.command("ROLE")[0] == "master")

        _wait_until("sentinel failover", promoted, timeout)
        return self.master

    def stop(self) -> None:
        for node in (*self.sentinels, *self.data):
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClusterTopology:
    """A Redis Cluster of three masters with one replica each on 127.0.0.1
    (``redis-server --cluster-enabled yes`` and ``redis-cli --cluster create``), started and
    stopped by the tests. A master is failed over ``node_timeout`` ms after it stops answering."""

    def __init__(self, masters: int = 3, node_timeout: int = 1000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-cluster-"))
        self.nodes = []
        try:
            for _ in range(masters * 2):
                self.nodes.append(self._started_node(node_timeout))
            cli = shutil.which("redis-cli")
            if cli is None:
                raise RuntimeError("redis-cli not found (Debian: apt-get install redis-tools)")
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    *("--cluster-replicas", "1", "--cluster-yes"),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def _started_node(self, node_timeout: int, attempts: int = 3) -> RedisNode:
        """A started cluster node on two free ports. A port found free can be taken before
        the node binds it (an outgoing connection's ephemeral port): then two new ones."""
        for attempt in range(attempts):
            port = free_port()
            node = RedisNode(
                port,
                [
                    *topology_node_args(port, self.dir),
                    *("--cluster-enabled", "yes", "--cluster-port", str(free_port())),
                    *("--cluster-config-file", f"nodes-{port}.conf"),
                    *("--cluster-node-timeout", str(node_timeout)),
                ],
            )
            try:
                node.start()
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                continue
            return node
        raise AssertionError("unreachable")

    def store_section(self, **extra: Any) -> dict[str, Any]:
        """The gateway's ``store`` section for this topology (two seed nodes)."""
        return {
            "cluster": {"nodes": [f"127.0.0.1:{node.port}" for node in self.nodes[:2]]},
            "username": STORE_USER,
            "password": STORE_PASSWORD,
            **extra,
        }

    def _any(self) -> RedisNode:
        return next(node for node in self.nodes if node.alive)

    def slots_of(self, node: RedisNode) -> list[tuple[int, int]]:
        """The slot ranges ``node`` serves as master now."""
        return [
            (int(low), int(high))
            for low, high, master, *_ in self._any().command("CLUSTER", "SLOTS")
            if int(master[1]) == node.port
        ]

    def master_of(self, key: str) -> RedisNode:
        """The master serving ``key``'s slot now."""
        slot = int(self._any().command("CLUSTER", "KEYSLOT", key))
        for low, high, master, *_ in self._any().command("CLUSTER", "SLOTS"):
            if int(low) <= slot <= int(high):
                return next(node for node in self.nodes if node.port == int(master[1]))
        raise RuntimeError(f"slot {slot} is not served")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every live node reports the cluster ok, and every master has a replica in sync."""

        def ready() -> bool:
            live = [node for node in self.nodes if node.alive]
            if not all("cluster_state:ok" in n.command("CLUSTER", "INFO") for n in live):
                return False
            infos = [node.command("INFO", "replication") for node in live]
            masters = sum("role:master" in info for info in infos)
            in_sync = sum("master_link_status:up" in info for info in infos)
            return in_sync >= masters

        _wait_until("cluster ready", ready, timeout)

    def masters(self) -> list[RedisNode]:
        return [
            node
            for node in self.nodes
            if node.alive and "role:master" in node.command("INFO", "replication")
        ]

    def block_replication(self) -> None:
        """Writes to any master from now on reach no replica."""
        for node in self.masters():
            node.block_replication()

    def restore_replication(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.allow_replication()
        self.wait_ready()

    def wait_promoted(self, key: str, old: RedisNode, timeout: float = 30.0) -> RedisNode:
        """Until another node serves ``key``'s slot as master and the cluster is ok."""

        def promoted() -> bool:
            new = self.master_of(key)
            live = [node for node in self.nodes if node.alive]
            return new is not old and all(
                "cluster_state:ok" in n.command("CLUSTER", "INFO") for n in live
            )

        _wait_until("cluster failover", promoted, timeout)
        return self.master_of(key)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for_port(
    port: int, timeout: float = 15.0, alive: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something listens on ``port``; ``alive``: the process that should, whose exit
    (a port it could not bind) ends the wait at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the process for 127.0.0.1:{port} exited ({alive.returncode})")
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, list[str]]
    body_size: int


@dataclass
class Recorder:
    """A real upstream that records what reached it and answers with JSON."""

    seen: list[Seen] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**4)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
        headers: dict[str, list[str]] = {}
        for k, v in request.headers.items():
            headers.setdefault(k.lower(), []).append(v)
        self.seen.append(Seen(request.method, request.raw_path, headers, size))
        if "slow" in request.query:
            await asyncio.sleep(float(request.query["slow"]))
        if "bytes" in request.query:
            return await self._stream(request, int(request.query["bytes"]))
        response = web.json_response({"path": request.raw_path, "received": size})
        response.headers["Connection"] = "X-Upstream-Secret"
        response.headers["X-Upstream-Secret"] = "hop"
        response.headers["Keep-Alive"] = "timeout=5"
        return response

    async def _stream(self, request: web.Request, total: int) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * (1 << 16)
        sent = 0
        while sent < total:
            part = chunk[: min(len(chunk), total - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response

    @property
    def last(self) -> Seen:
        return self.seen[-1]


def gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return values["VmRSS"], values["VmHWM"]


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


@dataclass
class GatewayProcess:
    """``gateway serve`` in a child process."""

    config: Path
    port: int
    admin_port: int
    proc: OwnedProcess | None = None
    log: Path | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log = self.config.with_suffix(f".{self.port}.log")
        with self.log.open("wb") as out:
            self.proc = OwnedProcess(
                gateway_command("serve", "--config", str(self.config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        try:
            wait_for_port(self.port)
            wait_for_port(self.admin_port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """The supervisor drains its workers on SIGTERM (up to 15 s here); whatever is left of
        its process group after that is ended too."""
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.stop(timeout=15)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""


def iter_lines(text: str) -> Iterator[str]:
    return (line for line in text.splitlines() if line.strip())


async def raw_http(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the peer closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks: list[bytes] = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return b"".join(chunks)


def padded(request_line: str, headers: list[str], size: int) -> bytes:
    """A request whose header lines (``Name: value\\r\\n`` each) come to exactly ``size``
    bytes, ``X-Padding-<n>`` headers of at most 4,000 bytes each making up the difference."""
    lines = [request_line, *headers]
    left = size - sum(len(line) + 2 for line in headers)
    while left:
        name = f"X-Padding-{len(lines)}: "
        value = "p" * min(4000, left - len(name) - 2)
        if left - len(name) - 2 - len(value) < len(name) + 3:  # the last one takes the rest
            value = "p" * (left - len(name) - 2)
        lines.append(name + value)
        left -= len(name) + len(value) + 2
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0


MASTER_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # tests only
ADMIN_TOKEN = "test-admin-token-0123456789"


def write_config(
    directory: Path,
    upstream: str,
    *,
    store: str | dict[str, Any] = "memory",
    name: str = "gateway",
    extra: dict[str, Any] | None = None,
) -> GatewayProcess:
    """A config file for ``gateway serve`` on free ports. ``store`` is a URL, or a ``store``
    section (a topology's :meth:`~SentinelTopology.store_section`)."""
    import yaml

    port, admin_port = free_port(), free_port()
    section = store if isinstance(store, dict) else {"url": store}
    document: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port, "token": ADMIN_TOKEN},
        "store": {**section, "prefix": f"{name}:"} if store != "memory" else "memory",
        "master_key": MASTER_KEY,
        "upstreams": {"live": {"url": upstream}, "sandbox": {"url": upstream}},
        "tokens": signing_config(),
        "log_level": "INFO",
    }
    document.update(extra or {})
    path = directory / f"{name}-{port}.yaml"
    path.write_text(yaml.safe_dump(document))
    return GatewayProcess(path, port, admin_port)


@functools.cache
def signing_key_files() -> dict[str, Path]:
    """RS256, ES256 and EdDSA keys, as PEM files (kid → path)."""
    from gateway.keys.signing import generate_private_key, private_pem

    directory = Path(tempfile.mkdtemp(prefix="gw-keys-"))
    files = {}
    for kid, alg in (("rs1", "RS256"), ("es1", "ES256"), ("rs2", "RS256"), ("ed1", "EdDSA")):
        path = directory / f"{kid}.pem"
        path.write_bytes(private_pem(generate_private_key(alg)))
        files[kid] = path
    return files


def signing_config(active: str = "rs1", kids: tuple[str, ...] = ("rs1", "es1")) -> dict[str, Any]:
    files = signing_key_files()
    algs = {"rs1": "RS256", "es1": "ES256", "rs2": "RS256", "ed1": "EdDSA"}
    return {
        "signing_keys": [
            {"kid": kid, "file": str(files[kid]), "algorithm": algs[kid]} for kid in kids
        ],
        "active_kid": active,
    }


def require_binary(name: str, package: str) -> str:
    """The path of a system binary a test needs. Missing: a skip on a developer's machine, a
    failure in CI (where .ci/run installs it), so CI never passes by skipping."""
    import pytest

    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        message = f"{name} not found: install it (Debian: apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class ThreadedUpstream:
    """A recording upstream on its own event loop in a thread, so that it can outlive one
    test's event loop (module-scoped fixtures)."""

    def __init__(self) -> None:
        import threading

        self.recorder = Recorder()
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.recorder.app(), access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def admin_create_key(proc: GatewayProcess, account: str, environment: str = "live") -> str:
    """Create a key through a running gateway's admin API (synchronously)."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{proc.admin_port}/admin/keys",
        method="POST",
        data=json.dumps({"account": account, "environment": environment}).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        key: str = json.loads(response.read())["key"]
    return key


def base_url(server: Any) -> str:
    """The root URL of a test server (aiohttp's ``TestServer``), without a trailing slash: what
    a config's ``upstreams.*.url`` or ``jwks_url`` base takes."""
    return str(server.make_url("")).rstrip("/")


@contextlib.asynccontextmanager
async def served_as_in_production(settings: Any) -> AsyncIterator[tuple[int, Any]]:
    """The gateway app served by gateway.protocol.GatewayRunner, as gateway/server.py does
    (aiohttp's TestServer turns handler_cancellation on; production leaves it off)."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.protocol import GatewayRunner
    from gateway.runtime import Current, build_runtime, close_resources
    from gateway.stores.memory import MemoryStore

    current = Current(build_runtime(settings, store=MemoryStore()))
    runner = GatewayRunner(create_app(current), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield port, current
    finally:
        await runner.cleanup()
        await close_resources(current)


@contextlib.asynccontextmanager
async def redis_asleep(port: int, seconds: float) -> AsyncIterator[threading.Thread]:
    """Redis stuck in ``DEBUG SLEEP`` (sent from a thread) for ``seconds`` from the block's
    start; the block's end waits until it answers again. Yields the sleeping thread."""
    client = redis.Redis(port=port)
    sleeper = threading.Thread(
        target=lambda: client.execute_command("DEBUG", "SLEEP", str(seconds))  # type: ignore[no-untyped-call]
    )
    sleeper.start()
    await asyncio.sleep(0.1)
    try:
        yield sleeper
    finally:
        sleeper.join()
        client.close()
