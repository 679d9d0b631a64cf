"""The Redis store: shared by any number of gateway replicas.

Atomic decisions live in the Lua scripts beside this module (one script a decision) or in single
commands. Every call is bounded by the configured socket timeout; any Redis failure becomes
:class:`~gateway.errors.StoreUnavailable`, so a decision that needs Redis fails closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from functools import wraps
from importlib import resources
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.stores.base import MobileState
from gateway.stores.gcra import gcra_peek

P = ParamSpec("P")
T = TypeVar("T")
MIN_POOL_WAIT = 2.0
POOL_WAIT_FACTOR = 4


def _lua(name: str) -> str:
    return resources.files("gateway.stores").joinpath(f"lua/{name}.lua").read_text("utf-8")


def _fail_closed(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    operation = fn.__name__

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        observer = getattr(args[0], "observer", None)
        started = time.perf_counter()
        ok = False
        try:
            result = await fn(*args, **kwargs)
            ok = True
            return result
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(details={"store": "redis"}) from exc
        finally:
            if observer is not None:
                observer(operation, time.perf_counter() - started, ok)

    return wrapper


class RedisStore:
    name = "redis"

    def __init__(
        self, url: str, *, timeout: float = 0.5, prefix: str = "gw:", max_connections: int = 64
    ) -> None:
        # A blocking pool: past `max_connections` callers wait for a connection instead of
        # opening unbounded numbers of them. Each operation is bounded by `timeout` on the
        # socket; the wait for a free connection during a burst (1,000 concurrent requests on
        # one worker queue for ~0.5 s of Redis client work) by POOL_WAIT_FACTOR times that,
        # at least MIN_POOL_WAIT seconds. Past either: 503, never an unchecked answer.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=max(MIN_POOL_WAIT, timeout * POOL_WAIT_FACTOR),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            retry_on_timeout=False,
        )
        self._redis: redis.Redis = redis.Redis(connection_pool=pool)
        self._p = prefix
        # Called with (operation, seconds, ok) after every operation; set by the runtime.
        self.observer: Callable[[str, float, bool], None] | None = None
        self._put_mobile = self._redis.register_script(_lua("put_mobile"))
        self._consume = self._redis.register_script(_lua("consume_mobile"))
        self._by_digest = self._redis.register_script(_lua("key_by_digest"))
        self._gcra = self._redis.register_script(_lua("rate_limit"))

    @property
    def client(self) -> redis.Redis:
        return self._redis

    @_fail_closed
    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    # -- API keys --------------------------------------------------------------------------
    @_fail_closed
    async def put_key(self, key_id: str, digest: str, blob: bytes) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self._p}key:{key_id}", blob)
            pipe.set(f"{self._p}keydigest:{digest}", key_id)
            pipe.sadd(f"{self._p}keys", key_id)
            await pipe.execute()

    @_fail_closed
    async def key_by_digest(self, digest: str) -> bytes | None:
        found: Any = await self._by_digest(
            keys=[f"{self._p}keydigest:{digest}"], args=[f"{self._p}key:"]
        )
        return found if isinstance(found, bytes) else None

    @_fail_closed
    async def key_by_id(self, key_id: str) -> bytes | None:
        return cast("bytes | None", await self._redis.get(f"{self._p}key:{key_id}"))

    @_fail_closed
    async def list_keys(self) -> list[bytes]:
        ids = sorted(cast("set[bytes]", await self._redis.smembers(f"{self._p}keys")))
        if not ids:
            return []
        blobs: list[bytes | None] = await self._redis.mget(  # type: ignore[assignment]
            [f"{self._p}key:{i.decode()}" for i in ids]
        )
        return [b for b in blobs if b is not None]

    @_fail_closed
    async def master_fingerprint(self) -> str | None:
        found = await self._redis.get(f"{self._p}master_key_fingerprint")
        return found.decode("ascii") if isinstance(found, bytes) else None

    @_fail_closed
    async def claim_master_fingerprint(self, fingerprint: str) -> str:
        key = f"{self._p}master_key_fingerprint"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, fingerprint, nx=True)
            pipe.get(key)
            _, recorded = await pipe.execute()
        return cast("bytes", recorded).decode("ascii")

    # -- mobile tokens ---------------------------------------------------------------------
    @_fail_closed
    async def put_mobile(
        self, digest: str, blob: bytes, now: float, expires_at: float, retain_until: float
    ) -> None:
        await self._put_mobile(
            keys=[f"{self._p}mobile:{digest}"],
            args=[int(expires_at * 1000), blob, max(1, int((retain_until - now) * 1000))],
        )

    @_fail_closed
    async def peek_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        fields = cast(
            "list[bytes | None]",
            await self._redis.hmget(f"{self._p}mobile:{digest}", ["state", "exp", "blob"]),
        )
        state, exp, blob = fields
        if state is None:
            return MobileState.UNKNOWN, None
        if state == b"used":
            return MobileState.USED, None
        if exp is None or int(exp) <= int(now * 1000):
            return MobileState.EXPIRED, None
        return MobileState.OK, blob

    @_fail_closed
    async def consume_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        result: list[bytes] = await self._consume(
            keys=[f"{self._p}mobile:{digest}"], args=[int(now * 1000)]
        )
        state = MobileState(result[0].decode())
        return state, (result[1] if state is MobileState.OK else None)

    # -- relationships ---------------------------------------------------------------------
    def _rel(self, account: str, subject: str, actor: str) -> str:
        # Identifiers are validated before they get here; the separator cannot occur in them.
        return f"{self._p}rel:{account}\x1f{subject}\x1f{actor}"

    @_fail_closed
    async def set_relationship(self, account: str, subject: str, actor: str, active: bool) -> None:
        # The relationship and the account's index of relationships change in one MULTI, so
        # list_relationships never shows a relationship that is not active (nor misses one
        # granted through this method).
        member = f"{subject}\x1f{actor}"
        async with self._redis.pipeline(transaction=True) as pipe:
            if active:
                pipe.set(self._rel(account, subject, actor), b"1")
                pipe.sadd(f"{self._p}rels:{account}", member)
            else:
                pipe.delete(self._rel(account, subject, actor))
                pipe.srem(f"{self._p}rels:{account}", member)
            await pipe.execute()

    @_fail_closed
    async def relationship_active(self, account: str, subject: str, actor: str) -> bool:
        return bool(await self._redis.exists(self._rel(account, subject, actor)))

    @_fail_closed
    async def list_relationships(self, account: str) -> list[tuple[str, str]]:
        members = cast("set[bytes]", await self._redis.smembers(f"{self._p}rels:{account}"))
        pairs = (m.decode().split("\x1f", 1) for m in members)
        return sorted((subject, actor) for subject, actor in pairs)

    # -- rate limits -----------------------------------------------------------------------
    @_fail_closed
    async def rate_limit(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, int, float]:
        allowed, remaining, reset_ms = await self._gcra(
            keys=[f"{self._p}rl:{bucket}"], args=[limit, int(period * 1000), int(now * 1000)]
        )
        return bool(allowed), int(remaining), int(reset_ms) / 1000.0

    @_fail_closed
    async def rate_limit_peek(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, float]:
        # One read; rate_limit.lua keeps the bucket's TAT (ms) under this key, expiring it
        # once the bucket is full again. The arithmetic is the reference's, in milliseconds.
        raw = await self._redis.get(f"{self._p}rl:{bucket}")
        tat = float(raw) if raw is not None else None
        allowed, wait_ms = gcra_peek(tat, limit, int(period * 1000), int(now * 1000))
        return allowed, wait_ms / 1000.0


def open_store(url: str, *, timeout: float, prefix: str) -> RedisStore:
    return RedisStore(url, timeout=timeout, prefix=prefix)
