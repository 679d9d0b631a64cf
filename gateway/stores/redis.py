"""The Redis store: shared by any number of gateway replicas, on a standalone Redis (or a managed
endpoint), a Sentinel-managed master or a Redis Cluster, each through redis-py's own client
(:func:`open_redis_store`). Failover and slot routing are redis-py's; this module adds none.

Atomic decisions live in the Lua scripts beside this module (one script a decision) or in single
commands. Every key a script or a multi-key command touches shares one hash tag, so each runs in
one Cluster slot (docs/design.md, "Key schema"; ``gw:`` is the default prefix):

- API keys, all in the slot of ``{apikeys}``: ``gw:{apikeys}:id:<key id>`` (the record),
  ``gw:{apikeys}:digest:<digest>`` (→ key id), ``gw:{apikeys}:all`` and
  ``gw:{apikeys}:account:<account>`` (sets of key ids), ``gw:{apikeys}:master_key_fingerprint``;
- a mobile token: ``gw:mobile:<digest>`` (one hash);
- a rate-limit bucket: ``gw:rl:<bucket>`` (its GCRA arrival time);
- relationships, in the slot of their account: ``gw:rel:{<account>}:<subject>\x1f<actor>`` and
  the account's index ``gw:rels:{<account>}``.

Every call is bounded: ``store.timeout`` on the socket and an overall deadline per operation,
or, for the mobile-token operations on the multiplexed connection (:mod:`gateway.stores.multiplex`,
without ``min_replicas_ack``), connecting and each command's answer within ``store.timeout``
(an operation is a few such steps: a script, once more if Redis forgot it); any
exception from the client, whatever its type, becomes
:class:`~gateway.errors.StoreUnavailable`, so a decision that needs Redis fails closed (503) and
never answers 500. Reads are retried once at once where a fresh connection may help (a
connection torn down by a failover); writes are not.

With ``min_replicas_ack`` > 0 the writes that must survive a failover (a mobile token's
consumption, API keys, relationships, the master-key fingerprint) are followed by ``WAIT`` on the
same connection; fewer acknowledgements than asked is a 503, and a consumption nobody
acknowledged is undone (the token stays usable), so a token accepted once cannot be accepted
again on a promoted replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import wraps
from importlib import resources
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import orjson

import gateway.stores.redis_py  # noqa: F401  # first: redis-py without OpenTelemetry

# isort: split
import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import GatewayError, StoreUnavailable
from gateway.observe import logs
from gateway.stores.base import MemoryPolicy, MobileState
from gateway.stores.gcra import gcra_peek
from gateway.stores.multiplex import Multiplexed

if TYPE_CHECKING:
    from gateway.config.store import StoreSettings

P = ParamSpec("P")
T = TypeVar("T")
MIN_POOL_WAIT = 2.0
POOL_WAIT_FACTOR = 4
MAX_CONNECTIONS = 64
LOG_EVERY = 60.0  # seconds between two log lines about the same kind of store failure
API_KEYS_TAG = "{apikeys}"

Client = redis.Redis | RedisCluster


# A client object's repr, which redis-py's Sentinel puts in its MasterNotFoundError once per
# sentinel asked (500 characters each, its options and object addresses), before what that
# sentinel answered: only its address is kept.
_CLIENT_REPR = re.compile(
    r"<redis\.asyncio\.client\.Redis\(.*?[(,]host=([^,]+),port=(\d+),.*?\)>\)>\)> - "
)


_CLUSTER_MOVING = (AskError, ClusterDownError, TryAgainError, MovedError)


def said(exc: BaseException) -> str:
    """What redis-py said, on one line, each client named by its address only: a Sentinel that
    refused the password said so (``- auth:AuthenticationError: invalid username-password
    pair``) 2,000 characters into its message, past any cut an operator would see."""
    text = _CLIENT_REPR.sub(lambda m: f"sentinel {m[1]}:{m[2]}: ", str(exc))
    return text.splitlines()[0] if text else ""


def _lua(name: str) -> str:
    return resources.files("gateway.stores").joinpath(f"lua/{name}.lua").read_text("utf-8")


def _may_retry(exc: BaseException) -> bool:
    """Whether the same read may succeed at once on a fresh connection: the connection was torn
    down (a failover, a restarted node, the client's own reset: redis-py can then fail with an
    AttributeError), not a timeout (a second one would double the bound) nor an answer."""
    if isinstance(exc, GatewayError | TimeoutError | RedisTimeoutError):
        return False
    if isinstance(exc, ResponseError):
        return isinstance(exc, AskError | TryAgainError | ClusterDownError)
    return True


def _operation(
    *, idempotent: bool, multiplexed: bool = False
) -> Callable[
    [Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, T]]],
    Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, T]],
]:
    """A store operation: bounded, observed, failing closed (see the module's docstring).
    ``multiplexed``: when the store has a multiplexed connection, every command the operation
    sends goes there (which bounds each command itself: no timer of the operation's own)."""

    def decorate(
        fn: Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, T]],
    ) -> Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, T]]:
        operation = fn.__name__

        @wraps(fn)
        async def wrapper(self: RedisStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            ok = False
            try:
                result = await self._call(
                    operation, lambda: fn(self, *args, **kwargs), idempotent, multiplexed
                )
                ok = True
                return result
            finally:
                if self.observer is not None and not self.quiet:
                    self.observer(operation, time.perf_counter() - started, ok)

        return wrapper

    return decorate


class RedisStore:
    name = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 0.5,
        prefix: str = "gw:",
        max_connections: int = MAX_CONNECTIONS,
        client: Client | None = None,
        min_replicas_ack: int = 0,
        replica_ack_timeout: float = 0.2,
        closing: Callable[[], Awaitable[None]] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """A store on ``url`` (a standalone Redis; ``options`` for its connections: credentials,
        TLS files), or on ``client`` (built by :func:`open_redis_store` for Sentinel and
        Cluster). ``closing`` is awaited after the client is closed (the Sentinel's own
        connections)."""
        pool_wait = max(MIN_POOL_WAIT, timeout * POOL_WAIT_FACTOR)
        # The whole operation, retry included: a wait for a connection, then connecting (with
        # Sentinel, asking a sentinel first) and the command, each bounded by `timeout`.
        self._deadline = pool_wait + 2 * timeout + (replica_ack_timeout if min_replicas_ack else 0)
        if client is None:
            if url is None:
                raise ValueError("RedisStore needs a url or a client")
            # A blocking pool: past `max_connections` callers wait for a connection instead of
            # opening unbounded numbers of them. Each operation is bounded by `timeout` on the
            # socket; the wait for a free connection during a burst (1,000 concurrent requests
            # on one worker queue for ~0.5 s of Redis client work) by POOL_WAIT_FACTOR times
            # that, at least MIN_POOL_WAIT seconds. Past either: 503, never an unchecked answer.
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=pool_wait,
                **connection_options(timeout),
                **(options or {}),
            )
            client = redis.Redis(connection_pool=pool)
            self._gate: asyncio.Semaphore | None = None
            # The hot path's commands (mobile tokens) on one pipelined connection, each answered
            # within `timeout`.
            self._mux = _multiplexed(url, timeout, options or {})
        else:
            # redis-py's Sentinel and Cluster pools refuse a connection past their size rather
            # than wait for one; this gate is the wait (at most `max_connections` operations
            # at once, one connection each per node).
            self._gate = asyncio.Semaphore(max_connections)
            self._mux = None
        self._redis: Client = client
        self._closing = closing
        self._p = prefix
        self._keys = f"{prefix}{API_KEYS_TAG}:"
        self._ack = min_replicas_ack
        self._ack_ms = max(1, int(replica_ack_timeout * 1000))
        self._logged: dict[str, float] = {}
        # The store failed to answer and no operation has succeeded since; when the recovery
        # was last logged (at most once per LOG_EVERY, like each kind of failure).
        self._down = False
        self._recovery_logged = -LOG_EVERY
        # Called with (operation, seconds, ok) after every operation; set by the runtime.
        self.observer: Callable[[str, float, bool], None] | None = None
        # A candidate's failures are its caller's to report (the Store protocol's `quiet`).
        self.quiet = False
        self._put_mobile = client.register_script(_lua("put_mobile"))
        self._consume = client.register_script(_lua("consume_mobile"))
        self._unconsume = client.register_script(_lua("unconsume_mobile"))
        self._by_digest = client.register_script(_lua("key_by_digest"))
        self._list_keys = client.register_script(_lua("list_keys"))
        self._put_key = client.register_script(_lua("put_key"))
        self._claim = client.register_script(_lua("claim_fingerprint"))
        self._set_rel = client.register_script(_lua("set_relationship"))
        self._gcra = client.register_script(_lua("rate_limit"))

    @property
    def client(self) -> Client:
        return self._redis

    @property
    def topology(self) -> str:
        if isinstance(self._redis, RedisCluster):
            return "cluster"
        if isinstance(self._redis.connection_pool, SentinelConnectionPool):
            return "sentinel"
        return "standalone"

    # -- the frame of every operation ------------------------------------------------------
    async def _call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        idempotent: bool,
        multiplexed: bool,
    ) -> T:
        try:
            if multiplexed and self._mux is not None and self._ack == 0:
                # Bounded without a timer of its own: connecting and each command on the
                # multiplexed connection carry their own bounds (Multiplexed). With
                # acknowledgements, a consumption's WAIT goes through redis-py's pool instead.
                result = await self._attempt(call, idempotent)
            else:
                async with asyncio.timeout(self._deadline), self._slot():
                    result = await self._attempt(call, idempotent)
            if self._down:
                self._recovered(operation)
            return result
        except GatewayError as exc:
            if exc.details.get("reason") == "not_replicated":
                self._log(
                    operation,
                    "not_replicated",
                    f"fewer than {self._ack} replica(s) acknowledged the write within "
                    f"{self._ack_ms} ms",
                )
            raise
        except Exception as exc:
            self._down = not self.quiet  # a candidate's recovery is not news either
            self._log(operation, type(exc).__name__, said(exc)[:300])
            # SECURITY: whatever the client raised (redis-py can fail with AttributeError while
            # a failover tears a connection down), the decision fails closed: 503, never 500.
            raise StoreUnavailable(details={"store": "redis"}) from exc

    @staticmethod
    async def _attempt(call: Callable[[], Awaitable[T]], idempotent: bool) -> T:
        try:
            return await call()
        except Exception as exc:
            if not (idempotent and _may_retry(exc)):
                raise
            return await call()  # a fresh connection: redis-py dropped the broken one

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._gate is None:
            yield
            return
        async with self._gate:
            yield

    def _log(self, operation: str, kind: str, error: str) -> None:
        """One warning per kind of failure a minute: what failed and how (never a value);
        none while the store is ``quiet`` (a candidate, whose caller reports its failure)."""
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY) < LOG_EVERY:
            return
        self._logged[kind] = now
        logs.event(
            # The store answered, and too few replicas confirmed the write: not an outage.
            "store write not confirmed by enough replicas; such writes get 503 until they are"
            if kind == "not_replicated"
            else "store unavailable; requests that need it get 503 until it answers",
            logging.WARNING,
            operation=operation,
            topology=self.topology,
            exc_type=kind,
            error=error,
        )

    def _recovered(self, operation: str) -> None:
        """The first operation to succeed after the store failed to answer says so, at most
        once a minute (a store failing one call in a hundred would otherwise log twice for
        each failure)."""
        self._down = False
        now = time.monotonic()
        if now - self._recovery_logged >= LOG_EVERY:
            self._recovery_logged = now
            logs.event("store available again", operation=operation, topology=self.topology)

    async def _script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run ``script``: on the multiplexed connection when there is one (by its digest,
        sent whole once when the server does not know it), else through redis-py."""
        if self._mux is None:
            return await script(keys=keys, args=args)
        call = ["EVALSHA", script.sha, len(keys), *keys, *args]
        try:
            return await self._mux.execute(*call)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        call[:2] = ["EVAL", script.script]  # the server's script cache was emptied
        return await self._mux.execute(*call)

    async def _acked(
        self, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> tuple[Any, int]:
        """Run ``script`` and, when replicas must acknowledge, ``WAIT`` on the same connection
        (one round trip): (the script's answer, replicas that hold its writes). Never on the
        multiplexed connection: Redis holds a connection's later commands while its ``WAIT``
        blocks, so every request's commands would queue behind each acknowledgement."""
        if self._ack == 0:
            return await self._script(script, keys, args), 0
        if isinstance(self._redis, RedisCluster):
            return await self._acked_on_cluster(self._redis, script, keys, args)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.eval(script.script, len(keys), *keys, *args)  # type: ignore[arg-type]
            pipe.execute_command("WAIT", self._ack, self._ack_ms)
            result, acked = await pipe.execute()
        return result, int(acked)

    async def _acked_on_cluster(
        self, cluster: RedisCluster, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> tuple[Any, int]:
        # Both commands go to the node that owns the slot, in one pipeline on one connection
        # (WAIT counts the acknowledgements of the writes of its own connection). Redirections
        # are not followed: a script MOVED elsewhere did not run, and is refused.
        await cluster.initialize()
        node = cast(ClusterNode, cluster.get_node_from_key(keys[0]))
        pipe = cluster.pipeline()
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args, target_nodes=node)
        pipe.execute_command("WAIT", self._ack, self._ack_ms, target_nodes=node)
        try:
            result, acked = await pipe.execute(raise_on_error=False, allow_redirections=False)
        except RedisConnectionError:
            await cluster.aclose()  # the next command learns the cluster's layout again
            raise
        for answer in (result, acked):
            if isinstance(answer, AskError | ClusterDownError | TryAgainError):
                await cluster.aclose()  # the slot moved (a failover): learn the layout again
            if isinstance(answer, Exception):
                raise answer
        return result, int(acked)

    def _replicated(self, acked: int, **more: Any) -> None:
        """Raise ``not_replicated`` (``more`` in its details) unless enough replicas acked."""
        if acked < self._ack:
            raise StoreUnavailable(
                details={"store": "redis", "reason": "not_replicated", **more},
            )

    # -- lifecycle -------------------------------------------------------------------------
    @_operation(idempotent=True)
    async def ping(self) -> None:
        if isinstance(self._redis, RedisCluster):
            # Ready when every slot's master answers (a master that died and has no successor
            # yet leaves part of the keys unreachable).
            await self._redis.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)
        else:
            await self._redis.ping()

    @_operation(idempotent=True)
    async def memory_policies(self) -> list[MemoryPolicy] | None:
        try:
            if isinstance(self._redis, RedisCluster):
                # Replicas follow their master's deletions (replica-ignore-maxmemory).
                found: Any = await self._redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
            else:
                found = await self._redis.info("memory")
        except ResponseError as exc:
            # The store failing every command (a database index the server does not have) or a
            # cluster moving its slots: taken for a refusal, the call counted as answered.
            if "DB index" in str(exc) or isinstance(exc, _CLUSTER_MOVING):
                raise
            return None  # refused (an ACL, a renamed command, a proxy without INFO)
        if "maxmemory_policy" in found:  # one node's own answer
            nodes = {"": found}
        elif isinstance(self._redis, RedisCluster):  # each node's, by name
            nodes = found
        else:
            return None  # a server that does not say (not every Redis-compatible one does)
        policies = []
        for node, info in sorted(nodes.items()):
            if not isinstance(info, dict) or "maxmemory_policy" not in info:
                return None
            limit, policy = int(info["maxmemory"]), str(info["maxmemory_policy"])
            policies.append(MemoryPolicy(node, limit, policy))
        return policies

    async def close(self) -> None:
        if self._mux is not None:
            await self._mux.close()
        await self._redis.aclose()
        if isinstance(self._redis, redis.Redis):
            await self._redis.connection_pool.disconnect()
        if self._closing is not None:
            await self._closing()

    # -- the key schema of earlier versions ------------------------------------------------
    async def upgrade_schema(self) -> int:
        """Move what a gateway before the hash-tagged key schema wrote (``<prefix>key:<id>``,
        ``<prefix>keydigest:<digest>``, ``<prefix>keys``, ``<prefix>master_key_fingerprint``,
        ``<prefix>rel:<account>␟<subject>␟<actor>``, ``<prefix>rels:<account>``) to today's
        names, then delete the old ones; return how many records moved. Two reads when there
        is nothing to move; idempotent, and safe to run from several processes at once."""
        old_ids, old_fingerprint = f"{self._p}keys", f"{self._p}master_key_fingerprint"
        try:
            async with asyncio.timeout(max(60.0, self._deadline)):
                if not (
                    await self._redis.exists(old_ids) or await self._redis.exists(old_fingerprint)
                ):
                    return 0
                return await self._upgrade(old_ids, old_fingerprint)
        except GatewayError:
            raise
        except Exception as exc:
            self._log("upgrade_schema", type(exc).__name__, str(exc)[:300])
            raise StoreUnavailable(details={"store": "redis"}) from exc

    async def _upgrade(self, old_ids: str, old_fingerprint: str) -> int:
        moved = 0
        for raw in sorted(cast("set[bytes]", await self._redis.smembers(old_ids))):
            key_id = raw.decode()
            blob = cast("bytes | None", await self._redis.get(f"{self._p}key:{key_id}"))
            if blob is not None:
                record = orjson.loads(blob)
                keys = [
                    f"{self._keys}id:{key_id}",
                    f"{self._keys}digest:{record['digest']}",
                    f"{self._keys}all",
                    f"{self._keys}account:{record['account']}",
                ]
                self._replicated((await self._acked(self._put_key, keys, [key_id, blob]))[1])
                await self._redis.delete(f"{self._p}keydigest:{record['digest']}")
                moved += 1
            await self._redis.delete(f"{self._p}key:{key_id}")
            await self._redis.srem(old_ids, raw)
        fingerprint = await self._redis.get(old_fingerprint)
        if isinstance(fingerprint, bytes):
            key = f"{self._keys}master_key_fingerprint"
            self._replicated((await self._acked(self._claim, [key], [fingerprint]))[1])
            moved += 1
        # Relationships: the old names have no hash tag ('{'); the scan runs once, here.
        async for name in self._redis.scan_iter(match=f"{self._p}rel:*", count=1000):
            rest = cast(bytes, name)[len(self._p) + 4 :].decode()
            if rest.startswith("{") or rest.count("\x1f") != 2:
                continue
            account, subject, actor = rest.split("\x1f")
            rel = [self._rel(account, subject, actor), self._rels(account)]
            self._replicated(
                (await self._acked(self._set_rel, rel, ["1", f"{subject}\x1f{actor}"]))[1]
            )
            await self._redis.delete(name)
            moved += 1
        async for name in self._redis.scan_iter(match=f"{self._p}rels:*", count=1000):
            if not cast(bytes, name)[len(self._p) + 5 :].startswith(b"{"):
                await self._redis.delete(name)
        await self._redis.delete(old_fingerprint)
        logs.event(
            "store: records moved to the hash-tagged key schema", logging.WARNING, moved=moved
        )
        return moved

    # -- API keys --------------------------------------------------------------------------
    @_operation(idempotent=False)
    async def put_key(
        self, key_id: str, digest: str, blob: bytes, account: str | None = None
    ) -> None:
        _, acked = await self._acked(
            self._put_key, self._key_names(key_id, digest, account), [key_id, blob]
        )
        # SECURITY: a revocation no replica holds could be undone by a failover: not confirmed.
        self._replicated(acked)

    @_operation(idempotent=False)
    async def replace_key(
        self, key_id: str, digest: str, expected: bytes, blob: bytes, account: str | None = None
    ) -> bool:
        written, acked = await self._acked(
            self._put_key, self._key_names(key_id, digest, account), [key_id, blob, expected]
        )
        self._replicated(acked, written=bool(written))
        return bool(written)

    def _key_names(self, key_id: str, digest: str, account: str | None) -> list[str]:
        """put_key.lua's keys: the record, the digest's index entry, every key id, and the
        account's key ids (when there is an account)."""
        keys = [f"{self._keys}id:{key_id}", f"{self._keys}digest:{digest}", f"{self._keys}all"]
        if account is not None:
            keys.append(f"{self._keys}account:{account}")
        return keys

    @_operation(idempotent=True)
    async def key_by_digest(self, digest: str) -> bytes | None:
        found: Any = await self._by_digest(
            keys=[f"{self._keys}digest:{digest}"], args=[f"{self._keys}id:"]
        )
        return found if isinstance(found, bytes) else None

    @_operation(idempotent=True)
    async def key_by_id(self, key_id: str) -> bytes | None:
        return cast("bytes | None", await self._redis.get(f"{self._keys}id:{key_id}"))

    @_operation(idempotent=True)
    async def list_keys(self, account: str | None = None) -> list[bytes]:
        index = f"{self._keys}all" if account is None else f"{self._keys}account:{account}"
        found = await self._list_keys(keys=[index], args=[f"{self._keys}id:"])
        return list(cast("list[bytes]", found))

    @_operation(idempotent=True)
    async def master_fingerprint(self) -> str | None:
        found = await self._redis.get(f"{self._keys}master_key_fingerprint")
        return found.decode("ascii") if isinstance(found, bytes) else None

    @_operation(idempotent=False)
    async def claim_master_fingerprint(self, fingerprint: str) -> str:
        recorded, acked = await self._acked(
            self._claim, [f"{self._keys}master_key_fingerprint"], [fingerprint]
        )
        self._replicated(acked)
        return cast("bytes", recorded).decode("ascii")

    # -- mobile tokens ---------------------------------------------------------------------
    def _mobile(self, digest: str) -> str:
        return f"{self._p}mobile:{digest}"

    @_operation(idempotent=False, multiplexed=True)
    async def put_mobile(
        self, digest: str, blob: bytes, now: float, expires_at: float, retain_until: float
    ) -> None:
        # Not acknowledged by replicas: a token lost with its master is unknown (401) on the
        # promoted replica, which fails closed.
        await self._script(
            self._put_mobile,
            [self._mobile(digest)],
            [int(expires_at * 1000), blob, max(1, int((retain_until - now) * 1000))],
        )

    @_operation(idempotent=True, multiplexed=True)
    async def peek_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        key = self._mobile(digest)
        fields = cast(
            "list[bytes | None]",
            await self._mux.execute("HMGET", key, "state", "exp", "blob")
            if self._mux is not None
            else await self._redis.hmget(key, ["state", "exp", "blob"]),
        )
        state, exp, blob = fields
        if state is None:
            return MobileState.UNKNOWN, None
        if state == b"used":
            return MobileState.USED, None
        if exp is None or int(exp) <= int(now * 1000):
            return MobileState.EXPIRED, None
        return MobileState.OK, blob

    @_operation(idempotent=False, multiplexed=True)
    async def consume_mobile(self, digest: str, now: float) -> tuple[MobileState, bytes | None]:
        key, claim = self._mobile(digest), secrets.token_hex(16)
        result, acked = await self._acked(self._consume, [key], [int(now * 1000), claim])
        state = MobileState(result[0].decode())
        if state is not MobileState.OK:
            return state, None
        blob = cast(bytes, result[1])
        if acked < self._ack:
            # SECURITY: no replica holds this consumption, so a failover could lose it and
            # accept the token again: it is not accepted here (503) and, while this master
            # lives, made usable again for the client's retry.
            with contextlib.suppress(Exception):
                await self._script(self._unconsume, [key], [claim, blob])
            self._replicated(acked)
        return state, blob

    # -- relationships ---------------------------------------------------------------------
    def _rel(self, account: str, subject: str, actor: str) -> str:
        # Identifiers are validated before they get here; the separator cannot occur in them,
        # nor can '{' or '}' (the account is the hash tag shared with the account's index).
        return f"{self._p}rel:{{{account}}}:{subject}\x1f{actor}"

    def _rels(self, account: str) -> str:
        return f"{self._p}rels:{{{account}}}"

    @_operation(idempotent=False)
    async def set_relationship(self, account: str, subject: str, actor: str, active: bool) -> None:
        # The relationship and the account's index of relationships change in one script, so
        # list_relationships never shows a relationship that is not active (nor misses one
        # granted through this method).
        _, acked = await self._acked(
            self._set_rel,
            [self._rel(account, subject, actor), self._rels(account)],
            ["1" if active else "0", f"{subject}\x1f{actor}"],
        )
        # SECURITY: a revoked relationship no replica holds could be restored by a failover.
        self._replicated(acked)

    @_operation(idempotent=True)
    async def relationship_active(self, account: str, subject: str, actor: str) -> bool:
        return bool(await self._redis.exists(self._rel(account, subject, actor)))

    @_operation(idempotent=True)
    async def list_relationships(self, account: str) -> list[tuple[str, str]]:
        members = cast("set[bytes]", await self._redis.smembers(self._rels(account)))
        pairs = (m.decode().split("\x1f", 1) for m in members)
        return sorted((subject, actor) for subject, actor in pairs)

    # -- rate limits -----------------------------------------------------------------------
    @_operation(idempotent=False)
    async def rate_limit(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, int, float]:
        allowed, remaining, reset_ms = await self._gcra(
            keys=[f"{self._p}rl:{bucket}"], args=[limit, int(period * 1000), int(now * 1000)]
        )
        return bool(allowed), int(remaining), int(reset_ms) / 1000.0

    @_operation(idempotent=True)
    async def rate_limit_peek(
        self, bucket: str, limit: int, period: float, now: float
    ) -> tuple[bool, float]:
        # One read; rate_limit.lua keeps the bucket's TAT (ms) under this key, expiring it
        # once the bucket is full again. The arithmetic is the reference's, in milliseconds.
        raw = await self._redis.get(f"{self._p}rl:{bucket}")
        tat = float(raw) if raw is not None else None
        allowed, wait_ms = gcra_peek(tat, limit, int(period * 1000), int(now * 1000))
        return allowed, wait_ms / 1000.0


def _multiplexed(url: str, timeout: float, options: dict[str, Any]) -> Multiplexed | None:
    """The pipelined connection for a standalone Redis over plain TCP; None for TLS and Unix
    sockets (redis-py's own connections handle those)."""
    parsed = parse_url(url)
    if "connection_class" in parsed or any(k.startswith("ssl") for k in options):
        return None
    return Multiplexed(
        str(parsed.get("host", "localhost")),
        int(parsed.get("port", 6379)),
        db=int(parsed.get("db", 0) or 0),
        username=options.get("username", parsed.get("username")),
        password=options.get("password", parsed.get("password")),
        connect_timeout=timeout,
        deadline=timeout,
    )


def connection_options(timeout: float) -> dict[str, Any]:
    """What every connection to a Redis node gets: bounded by ``timeout``, no retries of its
    own (the store decides what is retried), a health check on connections idle for 30 s."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 0),
    }


def _tls_options(settings: StoreSettings) -> dict[str, Any]:
    tls = settings.tls
    if tls is None:
        return {}
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": tls.check_hostname,
    }
    if tls.ca_file is not None:
        options["ssl_ca_certs"] = str(tls.ca_file)
    if tls.cert_file is not None and tls.key_file is not None:
        options["ssl_certfile"] = str(tls.cert_file)
        options["ssl_keyfile"] = str(tls.key_file)
    return options


def open_redis_store(settings: StoreSettings) -> RedisStore:
    """The store for a ``store`` section naming Redis: ``url``, ``sentinel`` or ``cluster``."""
    timeout = settings.timeout
    common: dict[str, Any] = {
        "timeout": timeout,
        "prefix": settings.prefix,
        "min_replicas_ack": settings.replicas_ack,
        "replica_ack_timeout": settings.replica_ack_timeout,
    }
    credentials = _present(username=settings.username, password=settings.password)
    tls = _tls_options(settings)
    ssl = {"ssl": True, **tls} if settings.tls is not None else {}
    if settings.sentinel is not None:
        sentinel = settings.sentinel
        manager = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
            list(sentinel.nodes),
            sentinel_kwargs={
                **connection_options(timeout),
                **_present(username=sentinel.username, password=sentinel.password),
                **ssl,
            },
        )
        master = manager.master_for(
            sentinel.master,
            db=sentinel.db,
            max_connections=MAX_CONNECTIONS,
            **connection_options(timeout),
            **credentials,
            **ssl,
        )
        return RedisStore(client=master, closing=manager.aclose, **common)
    if settings.cluster is not None:
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.cluster.nodes],
            max_connections=MAX_CONNECTIONS,
            **connection_options(timeout),
            **credentials,
            **ssl,
        )
        return RedisStore(client=cluster, **common)
    # With `url`, the scheme decides TLS (rediss://); the section adds its files.
    return RedisStore(settings.url, options={**credentials, **tls}, **common)


def _present(**values: str | None) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
