"""The gateway's long-lived parts, composed once into an immutable object graph.

:func:`build_runtime` is the one composition function: it builds the store, key service,
signing keys, the registry of credential kinds, the policy's helpers and the upstream pools into
a frozen :class:`Runtime`, complete from construction (pools open their connections on first
use, see :mod:`gateway.pools`). Handlers read the runtime through :class:`Current`, the only
mutable reference: a reload builds a new runtime and swaps that one reference in a single
synchronous step, so a request sees one configuration or the other, never a mix
(:mod:`gateway.reload`). :func:`runtime_ctx` flushes the request metrics every second
(:func:`flush_metrics`) and closes what is open at shutdown. Nothing here is module-level.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from gateway.abuse import FailureBudget
from gateway.authn.base import Dependencies
from gateway.authn.registry import Registry
from gateway.authz.decisions import Decisions
from gateway.authz.policy import Policy
from gateway.authz.rate_limits import RateLimiter
from gateway.authz.relationships import (
    HttpRelationships,
    RelationshipProvider,
    StoreRelationships,
)
from gateway.clock import Clock, SystemClock
from gateway.config import Settings, Upstream
from gateway.errors import ServiceUnavailable
from gateway.forward.proxy import Forwarder
from gateway.issue.gateway_tokens import GatewayTokens
from gateway.issue.membership import Membership
from gateway.issue.mobile import MobileTokens
from gateway.keys import watch
from gateway.keys.sealing import Sealer
from gateway.keys.service import KeyService
from gateway.keys.signing import SigningKeys
from gateway.mutate.assertion import Assertions
from gateway.mutate.headers import IdentityHeaders
from gateway.observe import logs
from gateway.observe.metrics import Metrics
from gateway.observe.tracing import Tracer, build_tracer
from gateway.pools import HelperPool, UpstreamPools
from gateway.principal import Principal
from gateway.stores.base import Store
from gateway.stores.eviction import EvictionWatch
from gateway.stores.memory import MemoryStore
from gateway.ttlcache import TTLCache

FLUSH_INTERVAL = 1.0  # seconds between flushes of the request metrics (see flush_metrics)
# At shutdown, how long the resources wait for requests still in flight on the decision
# listener once the public listener has drained (both drain at once, under one deadline).
DRAIN_GRACE = 5.0


class RequestCount:
    """How many requests are being served with one runtime (from the moment the front
    handler reads it until its answer is written): a reload retires a runtime's pools only
    once this is zero, so no request that started before a reload finds them closed."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = 0


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything a request needs, for one configuration. Immutable: a reload builds another."""

    settings: Settings
    policy: Policy
    clock: Clock
    store: Store
    keys: KeyService
    metrics: Metrics
    identity: IdentityHeaders
    tokens: GatewayTokens
    mobile: MobileTokens
    membership: Membership
    relationships: RelationshipProvider
    authenticators: Registry
    forwarder: Forwarder
    helper: HelperPool
    assertions: Assertions | None
    rate_limiter: RateLimiter | None
    failure_budget: FailureBudget | None
    tracer: Tracer
    # The environments whose credentials decisions admit and which have an upstream, read by
    # every decision: a frozenset here, not three attribute reads through the settings models.
    decided_environments: frozenset[str] = frozenset()
    max_header_bytes: int = 0  # limits.max_header_bytes, for the same reason
    requests: RequestCount = field(default_factory=RequestCount)
    decisions: Decisions = field(default_factory=Decisions)

    def upstream_for(self, principal: Principal) -> Upstream:
        name = self.settings.environments.get(principal.environment)
        if name is None:
            # SECURITY: no configured upstream for this environment: refuse rather than guess.
            raise ServiceUnavailable(
                no_upstream(principal.environment), details={"reason": "no_upstream"}
            )
        return self.settings.upstreams[name]


def no_upstream(environment: str) -> str:
    """Why a credential of ``environment`` is refused when no upstream serves it."""
    return f"No upstream is configured for the {environment} environment."


@dataclass(slots=True)
class Current:
    """The runtime requests are served with now: the one mutable reference, swapped whole by a
    reload. ``retiring`` holds the closings of pools reloads replaced, still waiting for their
    requests (finished at shutdown)."""

    runtime: Runtime
    retiring: set[asyncio.Task[None]] = field(default_factory=set)


CURRENT = web.AppKey("current", Current)
# The runtime one request is served with, read once from CURRENT when it arrives: every step of
# that request (front handler, pipeline, endpoints) uses the same one, even across a reload.
REQUEST_RUNTIME = web.RequestKey("runtime", Runtime)


def open_store(settings: Settings) -> Store:
    """The store the config names: memory, or Redis as a standalone server (``url``), a
    Sentinel-managed master or a Cluster, from the ``store`` section alone."""
    if settings.store.is_redis:
        from gateway.stores.redis import open_redis_store

        return open_redis_store(settings.store)
    return MemoryStore()


def sealer_for(settings: Settings, store: Store) -> Sealer:
    """The master key's sealer. With the memory store nothing outlives the process, so an
    ephemeral key is enough; it belongs to that store (made once), so a reload that keeps the
    store can still open the keys it holds."""
    if settings.master_key:
        return Sealer(settings.master_key)
    if isinstance(store, MemoryStore):
        return Sealer(store.ephemeral_master_key)
    return Sealer(os.urandom(32))


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    metrics: Metrics | None = None,
    helper: HelperPool | None = None,
    tracer: Tracer | None = None,
) -> Runtime:
    """Compose a runtime for ``settings``. A reload passes the running one's clock, metrics and
    helper pool, and the store and tracer it chose (the running ones when their settings are
    unchanged)."""
    clock = clock or SystemClock()
    store = store or open_store(settings)
    metrics = metrics or Metrics()
    helper = helper or HelperPool()
    keys = KeyService(store, sealer_for(settings, store), clock, settings.api_keys)
    tokens = settings.tokens
    signing = SigningKeys.from_settings(tokens)
    tracer = tracer if tracer is not None else build_tracer(settings.tracing)
    runtime = Runtime(
        settings=settings,
        policy=settings.section("policy", Policy),
        clock=clock,
        store=store,
        keys=keys,
        metrics=metrics,
        identity=IdentityHeaders(settings.headers),
        tokens=GatewayTokens(signing, tokens, clock),
        mobile=MobileTokens(store, clock, tokens.mobile_token_ttl),
        membership=Membership(clock, tokens.membership_cache_ttl, metrics),
        relationships=build_relationships(settings, store, clock, helper),
        authenticators=Registry.build(Dependencies(settings, clock, keys, store, signing, helper)),
        forwarder=Forwarder(settings, UpstreamPools(settings.upstreams), metrics, tracer),
        helper=helper,
        assertions=Assertions(signing, tokens, clock) if tokens.assertion else None,
        rate_limiter=(
            RateLimiter(store, settings.rate_limits, clock, metrics)
            if settings.rate_limits.rules
            else None
        ),
        failure_budget=(
            FailureBudget(store, settings.abuse, clock, metrics) if settings.abuse.enabled else None
        ),
        tracer=tracer,
        decided_environments=frozenset(settings.decision.environments) & set(settings.environments),
        max_header_bytes=settings.limits.max_header_bytes,
    )
    attach_metrics(runtime)
    return runtime


def build_relationships(
    settings: Settings, store: Store, clock: Clock, helper: HelperPool
) -> RelationshipProvider:
    rel = settings.relationships
    if rel.provider == "http":
        assert rel.url_template is not None  # validated with the config
        return HttpRelationships(
            rel.url_template, clock, rel.positive_ttl, rel.negative_ttl, rel.timeout, helper
        )
    return StoreRelationships(store, clock, rel.positive_ttl, rel.negative_ttl)


def attach_metrics(runtime: Runtime) -> None:
    """Bind cache and store metrics once; the hot path only calls ``inc()``/``observe()``."""
    stats = runtime.metrics.cache_stats
    runtime.keys.attach_stats(stats)
    runtime.membership.cache.attach(stats("membership"))
    runtime.relationships.attach_stats(stats)
    runtime.decisions.attach(stats("decision"))
    for entry in runtime.authenticators.kinds:
        cache = getattr(entry.authenticator, "cache", None)
        if isinstance(cache, TTLCache):
            cache.attach(stats(entry.kind.name))
    if hasattr(runtime.store, "observer"):
        observe = runtime.metrics.observe_store
        runtime.store.observer = runtime.tracer.store_observer(observe, runtime.store.name)


async def requests_done(current: Current, timeout: float = DRAIN_GRACE) -> None:
    """Wait (at most ``timeout``) until no request of the current runtime is in flight: at
    shutdown the public app's own requests are drained already, the decision listener's
    (:mod:`gateway.decision_server`) drain alongside and may end a moment later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while current.runtime.requests.active > 0 and loop.time() < deadline:
        await asyncio.sleep(0.02)


async def close_resources(current: Current) -> None:
    """At shutdown (requests drained): close at once the pools reloads replaced (their
    closings stop waiting), then the current runtime's pools, the helper pool and the store,
    and last the tracer (every span ended so far is exported, its thread joined). The request
    metrics are flushed at the very end, so that what was counted up to then is exported (in
    multiprocess mode, written to this process's files for the supervisor)."""
    runtime = current.runtime
    try:
        for task in current.retiring:
            task.cancel()
        await asyncio.gather(*current.retiring, return_exceptions=True)
        await runtime.forwarder.pools.close()
        await runtime.helper.close()
        await runtime.store.close()
        await runtime.tracer.close()
    finally:
        runtime.metrics.flush()


async def flush_metrics(current: Current, interval: float = FLUSH_INTERVAL) -> None:
    """Flush the request metrics every ``interval`` seconds, until cancelled. A scrape served
    by this process flushes by itself; this is for whoever reads the values otherwise: with
    ``workers: N`` the supervisor exports what its workers wrote to their multiprocess files,
    so its scrape is at most ``interval`` behind. Reloads keep the metrics object, so
    flushing the current runtime's covers the runtimes it replaced too. A failing flush (a
    bug) is logged, every time, and the next one tried."""
    while True:
        await asyncio.sleep(interval)
        try:
            current.runtime.metrics.flush()
        except Exception as exc:  # a broken flush must not end the flushing
            logs.event("metrics flush failed", logging.ERROR, error=repr(exc))


async def watch_store(current: Current) -> None:
    """Look at the current runtime's store every :data:`gateway.keys.watch.INTERVAL` seconds
    for a loss of its data or a claim by another master key (:mod:`gateway.keys.watch`), until
    cancelled. A failing look (a bug) is logged, every time, and the next one tried."""
    metrics = current.runtime.metrics  # reloads keep the metrics
    alarms = watch.StoreWatch(metrics.store_alarms, metrics.master_key_mismatch)
    evictions = EvictionWatch(metrics.store_evicting)
    task = asyncio.current_task()
    while True:  # the first look at once: a loss right after the start is one too
        runtime = current.runtime
        try:
            await alarms.look(runtime.store, runtime.keys.sealer)
            await evictions.look(runtime.store)
        except Exception as exc:  # a broken look must not end the watch
            logs.event("store watch failed", logging.ERROR, error=repr(exc))
        if task is not None and task.cancelling():
            # Python 3.11's asyncio.wait_for (redis-py connects with it) returns the result
            # of a call that finished as the task was cancelled, and drops the cancellation:
            # the watch would sleep on and the shutdown wait for it forever.
            raise asyncio.CancelledError
        await asyncio.sleep(watch.INTERVAL)


def runtime_ctx(current: Current) -> Callable[[web.Application], AsyncIterator[None]]:
    """The public app's ``cleanup_ctx``: while the app runs, the request metrics are flushed
    every second and the store is watched; whatever is open is closed at shutdown (those two
    tasks first)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(flush_metrics(current)), loop.create_task(watch_store(current))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await requests_done(current)
            await close_resources(current)

    return ctx
