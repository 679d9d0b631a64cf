"""One Redis connection shared by every concurrent operation of a worker, commands pipelined.

redis-py's asyncio client checks a connection out of its pool for each command and bounds
each write and each read with a timer task of its own: about 100 µs of CPU per command on the
benchmark machine, a third of a mobile-token pair. Here the commands of concurrent requests are
written, in the order they are asked, to one connection (the writes of one loop iteration go
out in one ``write``), and one reader hands the answers back in that same order (Redis answers
a connection's commands in order). The answer to a command is parsed by hiredis, the C parser
redis-py uses too.

Failure handling (the store's contract, :mod:`gateway.stores.redis`, is unchanged):

- a connection that breaks fails every command waiting on it (``ConnectionError``: the store
  answers 503) and the next command opens a new one;
- a command not answered within ``deadline`` of being asked fails, with every command asked
  after it, and closes the connection (``TimeoutError``: the store answers 503). One timer per
  connection enforces this, set for the oldest unanswered command, instead of a timer per
  command (``asyncio.timeout`` costs about 6 µs a use under uvloop, the store's own operation);
- a command the caller stops waiting for (cancelled) closes the connection: its answer may
  never come, and nothing asked after it may wait behind it;
- an error answer (``ResponseError``) fails that command only.

Used for a standalone Redis reached over plain TCP (``store.url: redis://…``, with a username
and password when given); TLS, Sentinel and Cluster keep redis-py's clients, which handle their
handshakes and failovers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis

import gateway.stores.redis_py  # noqa: F401  # first: redis-py without OpenTelemetry

# isort: split
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int | float


def pack(args: Sequence[Arg]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = repr(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: Multiplexed) -> None:
        self._owner = owner
        self._reader = hiredis.Reader(replyError=ResponseError)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._owner.pending
        while (reply := self._reader.gets()) is not False:
            if not pending:  # an answer nobody asked for: the stream cannot be trusted
                self._owner.broken(RedisConnectionError("unexpected reply"))
                return
            _, waiter = pending.popleft()
            if waiter.done():
                continue
            if isinstance(reply, ResponseError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.broken(RedisConnectionError(f"connection lost: {exc or 'closed'}"))


class Multiplexed:
    """Commands to one standalone Redis over one shared connection (see the module docstring).
    ``connect_timeout`` bounds opening it, ``deadline`` every command (from when it is asked
    to its answer)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 0.5,
        deadline: float = 3.0,
    ) -> None:
        self._host, self._port, self._db = host, port, db
        self._username, self._password = username, password
        self._connect_timeout = connect_timeout
        self._deadline = deadline
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._buffer: list[bytes] = []
        # (deadline, waiter) of each command asked and not answered, in the order asked.
        self.pending: deque[tuple[float, asyncio.Future[Any]]] = deque()

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its answer (``ResponseError`` for an error answer)."""
        if self._transport is None:
            await self._connect()
        return await self._send(pack(args))

    async def _send(self, command: bytes) -> Any:
        return await self._wait(self._queue(command))

    def _queue(self, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self._deadline
        self.pending.append((deadline, waiter))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        if not self._buffer:
            loop.call_soon(self._flush)
        self._buffer.append(command)
        return waiter

    async def _wait(self, waiter: asyncio.Future[Any]) -> Any:
        try:
            return await waiter
        except asyncio.CancelledError:
            # Its answer may never come: nothing asked after it may wait behind it.
            self.broken(RedisConnectionError("a command was abandoned"))
            raise

    def _expire(self) -> None:
        """The timer: fail everything once the oldest unanswered command is past its deadline,
        else wait for that command's deadline (commands are answered, and their deadlines
        fall, in the order they were asked)."""
        self._timer = None
        if not self.pending:
            return
        deadline = self.pending[0][0]
        loop = asyncio.get_running_loop()
        if deadline <= loop.time():
            # SECURITY: a Redis that stops answering fails every waiting decision closed
            # (503) within the deadline; none waits on it unbounded.
            self.broken(RedisTimeoutError(f"no answer within {self._deadline:g} s"))
            return
        self._timer = loop.call_at(deadline, self._expire)

    def _flush(self) -> None:
        data, self._buffer = b"".join(self._buffer), []
        if self._transport is None or self._transport.is_closing():
            self.broken(RedisConnectionError("not connected"))
            return
        self._transport.write(data)

    async def _connect(self) -> None:
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            if self._transport is None:
                raise RedisConnectionError("could not connect")
            return
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), self._host, self._port
                )
                self._transport = transport
                setup = []
                if self._password is not None:
                    auth = (self._username, self._password) if self._username else (self._password,)
                    setup.append(pack(("AUTH", *auth)))
                if self._db:
                    setup.append(pack(("SELECT", self._db)))
                # Queued together, before any command another request queues once the
                # connection is up: every later command runs authenticated, in the right
                # database (a SELECT sent only after AUTH's answer let one in between).
                for waiter in [self._queue(command) for command in setup]:
                    await self._wait(waiter)
        except (OSError, TimeoutError) as exc:
            self.broken(RedisConnectionError(f"cannot connect: {exc}"))
            raise RedisConnectionError(f"cannot connect to {self._host}:{self._port}") from exc
        except BaseException as exc:
            self.broken(RedisConnectionError(f"cannot connect: {type(exc).__name__}"))
            raise
        finally:
            self._connecting.set_result(None)
            self._connecting = None

    def broken(self, error: Exception) -> None:
        """Close the connection and fail every command still waiting on it."""
        transport, self._transport = self._transport, None
        self._buffer = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self.pending = self.pending, deque()
        for _, waiter in pending:
            if not waiter.done():
                waiter.set_exception(error)
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        self.broken(RedisConnectionError("closed"))
