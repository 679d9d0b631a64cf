"""The gateway's long-lived parts, built in one place and torn down in reverse.

:func:`runtime_ctx` is the public app's ``cleanup_ctx``: it opens the store and one pooled
client session per upstream, builds the key service, the signing keys and the explicit registry of
authenticators, and closes everything on shutdown. Nothing here is module-level.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, fields

import aiohttp
from aiohttp import web

from gateway.abuse import FailureBudget
from gateway.authn.base import Dependencies
from gateway.authn.registry import Registry
from gateway.authz.rate_limits import RateLimiter
from gateway.authz.relationships import (
    HttpRelationships,
    RelationshipProvider,
    StoreRelationships,
)
from gateway.clock import Clock, SystemClock
from gateway.config import Settings, Upstream
from gateway.errors import ServiceUnavailable
from gateway.forward.proxy import Forwarder, open_session
from gateway.issue.gateway_tokens import GatewayTokens
from gateway.issue.membership import Membership
from gateway.issue.mobile import MobileTokens
from gateway.keys.sealing import Sealer
from gateway.keys.service import KeyService
from gateway.keys.signing import SigningKeys
from gateway.mutate.assertion import Assertions
from gateway.mutate.headers import IdentityHeaders
from gateway.observe.metrics import Metrics
from gateway.principal import Principal
from gateway.stores.base import Store
from gateway.stores.memory import MemoryStore
from gateway.ttlcache import TTLCache

Handler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]


@dataclass
class Runtime:
    settings: Settings
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
    sessions: dict[str, aiohttp.ClientSession] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)
    forwarder: Forwarder | None = None
    helper_session: aiohttp.ClientSession | None = None
    assertions: Assertions | None = None
    rate_limiter: RateLimiter | None = None
    # Closings of pools that reloads replaced, still waiting for their requests; shared by every
    # generation of the runtime so that shutdown can finish them (see gateway.reload).
    retiring: set[asyncio.Task[None]] = field(default_factory=set)
    failure_budget: FailureBudget | None = None

    def replace_with(self, new: Runtime) -> Runtime:
        """Take over everything of ``new`` in one synchronous step (atomic for the event loop:
        a request sees either the old configuration or the new one, never a mix). Returns a
        runtime holding the old parts, for closing once in-flight requests are done."""
        old = Runtime(**{f.name: getattr(self, f.name) for f in fields(self)})
        for f in fields(self):
            setattr(self, f.name, getattr(new, f.name))
        return old

    def upstream_for(self, principal: Principal) -> Upstream:
        name = self.settings.environments.get(principal.environment)
        if name is None:
            # SECURITY: no configured upstream for this environment: refuse rather than guess.
            raise ServiceUnavailable(
                f"No upstream is configured for the {principal.environment} environment.",
                details={"reason": "no_upstream"},
            )
        return self.settings.upstreams[name]


RUNTIME = web.AppKey("runtime", Runtime)


def open_store(settings: Settings) -> Store:
    if settings.store.is_redis:
        from gateway.stores.redis import RedisStore

        return RedisStore(
            settings.store.url, timeout=settings.store.timeout, prefix=settings.store.prefix
        )
    return MemoryStore()


def sealer_for(settings: Settings) -> Sealer:
    # With the memory store nothing outlives the process, so an ephemeral master key is enough.
    return Sealer(settings.master_key or os.urandom(32))


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
    metrics: Metrics | None = None,
) -> Runtime:
    clock = clock or SystemClock()
    store = store or open_store(settings)
    keys = KeyService(store, sealer_for(settings), clock, settings.api_keys)
    tokens = settings.tokens
    signing = SigningKeys.from_settings(tokens)
    runtime = Runtime(
        settings=settings,
        clock=clock,
        store=store,
        keys=keys,
        metrics=metrics or Metrics(),
        identity=IdentityHeaders(settings.headers),
        tokens=GatewayTokens(signing, tokens, clock),
        mobile=MobileTokens(store, clock, tokens.mobile_token_ttl),
        membership=Membership(clock, tokens.membership_cache_ttl),
        relationships=build_relationships(settings, store, clock),
        authenticators=Registry.build(Dependencies(settings, clock, keys, store, signing)),
    )
    if settings.rate_limits.rules:
        runtime.rate_limiter = RateLimiter(store, settings.rate_limits, clock, runtime.metrics)
    if settings.abuse.enabled:
        runtime.failure_budget = FailureBudget(store, settings.abuse, clock, runtime.metrics)
    if tokens.assertion:
        runtime.assertions = Assertions(runtime.tokens.keys, tokens, clock)
    attach_metrics(runtime)
    # Imported here: the endpoints read the runtime from the app, so they import this module.
    from gateway.issue.endpoints import HANDLERS

    runtime.handlers = dict(HANDLERS)
    return runtime


def build_relationships(settings: Settings, store: Store, clock: Clock) -> RelationshipProvider:
    rel = settings.relationships
    if rel.provider == "http":
        assert rel.url_template is not None  # validated with the config
        return HttpRelationships(
            rel.url_template, clock, rel.positive_ttl, rel.negative_ttl, rel.timeout
        )
    return StoreRelationships(store, clock, rel.positive_ttl, rel.negative_ttl)


def attach_metrics(runtime: Runtime) -> None:
    """Bind cache and store metrics once; the hot path only calls ``inc()``/``observe()``."""
    stats = runtime.metrics.cache_stats
    runtime.keys.attach_stats(stats)
    runtime.membership.cache.attach(stats("membership"))
    runtime.relationships.attach_stats(stats)
    for entry in runtime.authenticators.kinds:
        cache = getattr(entry.authenticator, "cache", None)
        if isinstance(cache, TTLCache):
            cache.attach(stats(entry.kind.name))
    if hasattr(runtime.store, "observer"):
        runtime.store.observer = runtime.metrics.observe_store


async def open_resources(
    runtime: Runtime, *, helper_session: aiohttp.ClientSession | None = None
) -> None:
    """Open the connection pools: one per upstream, and one for identity providers and the
    relationship service (``helper_session``, when given, is kept instead: it has no settings of
    its own, so a reload reuses the running one rather than open and later close another)."""
    runtime.sessions = {name: open_session(u) for name, u in runtime.settings.upstreams.items()}
    runtime.forwarder = Forwarder(runtime.settings, runtime.sessions, runtime.metrics)
    runtime.helper_session = helper_session or aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar()
    )
    runtime.authenticators.use_session(runtime.helper_session)
    if isinstance(runtime.relationships, HttpRelationships):
        runtime.relationships.session = runtime.helper_session


async def close_resources(runtime: Runtime, *, close_store: bool = True) -> None:
    """At shutdown (requests drained): close at once the pools reloads replaced (their
    closings stop waiting), then this runtime's pools and, unless told otherwise, its store."""
    for task in runtime.retiring:
        task.cancel()
    await asyncio.gather(*runtime.retiring, return_exceptions=True)
    if runtime.helper_session is not None:
        await runtime.helper_session.close()
    for session in runtime.sessions.values():
        await session.close()
    if close_store:
        await runtime.store.close()


def runtime_ctx(runtime: Runtime) -> Callable[[web.Application], AsyncIterator[None]]:
    """The public app's ``cleanup_ctx``: pools opened at start-up, closed at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await open_resources(runtime)
        try:
            yield
        finally:
            await close_resources(runtime)

    return ctx
