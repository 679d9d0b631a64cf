"""A budget of failed authentications per client address, checked before any credential lookup.

Rate limits (:mod:`gateway.authz.rate_limits`) count per credential, after authentication; this
bounds what a client *without* a working credential can make the gateway do. Every 401 the
pipeline answers (a missing, malformed, unknown, revoked, expired or badly signed credential) is
counted against the client's address; a 403 is not (its credential was valid, and its own rate
limits apply). An address past its budget gets 429 ``rate_limited`` with ``Retry-After`` before
its credential is even read: no key lookup, no JWKS fetch, no store read for it, whatever it
sends. Valid credentials are never counted, and other addresses' failures never spend this
address's budget.

**The budget** is GCRA (:mod:`gateway.stores.gcra`): ``failures_per_minute`` sustained, with
``burst`` at once, one bucket per address in the store, so every replica shares it. Recording a
failure is one atomic store step (the ``rate_limit.lua`` script on Redis); the check before
authentication is one read (:meth:`~gateway.stores.base.RateLimitStore.rate_limit_peek`). To
keep the store off the path of valid traffic, each process remembers what it learnt about an
address for at most :data:`CLEAN_TTL` (an address in budget) or until its ``Retry-After`` (one
past it). Every failure is recorded in the store at once and its answer updates that memory, so
a replica learns of an exhausted budget on its first failure from that address at the latest:
across N replicas, a flood gets at most N failures beyond the budget per second, and a budget
is never spent faster than the store records it.

**The client address** is the socket's peer. Only when the peer is in ``trusted_proxies``
(configured CIDR networks) is ``X-Forwarded-For`` read: from the right, skipping addresses in
the trusted networks; the first one that is not trusted is the client (each trusted proxy
appended the address it saw; anything further left was written by the client and is ignored).
An entry that is not an IP address stops the walk at the last trusted hop. In decision mode the
peer is the front proxy: trust it, and have it send ``X-Forwarded-For``, or every client shares
the proxy's budget. IPv6 addresses are counted per ``/ipv6_prefix`` network (default /64, what
one subscriber usually holds), so rotating through one's own prefix does not buy new budgets.

**Requests at once.** The check before authentication reads; only a failure writes. So that
requests sent together cannot all pass the check before the first of them is counted, each
process lets at most ``burst`` requests of one address be between the check and the end of
their authentication at once, and one at a time once the address has failed within the last
``burst / failures_per_minute`` minutes; the others wait their turn (a valid credential
waits at most for the ones ahead of it) and are checked again when it comes. (200 bad keys
sent at once from one address were 200 failures, wave after wave.)

**When the store cannot answer**, ``on_store_error`` decides, as for rate limits: ``deny`` (503
``service_unavailable``, the default: fail closed) or ``allow`` (the request goes on to
authentication). A failure that cannot be recorded is counted in the same metric and answered
with its 401 regardless; with ``deny`` the address then gets 503 from this process for
:data:`UNRECORDED_TTL`, since its budget can no longer be kept (a full Redis refuses the
write and still answers the read: the budget was off while valid keys got 503).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from multidict import CIMultiDictProxy

from gateway.clock import Clock
from gateway.config import AbuseSettings
from gateway.errors import RateLimited, StoreUnavailable
from gateway.observe.metrics import Metrics
from gateway.slots import Slots
from gateway.stores.base import RateLimitStore
from gateway.ttlcache import TTLCache

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# How long a process trusts "this address is within its budget" without asking the store.
CLEAN_TTL = 1.0
# How long an address whose failure the store did not record gets 503 here (on_store_error:
# deny): about one failure a second per process, while the store refuses writes.
UNRECORDED_TTL = 1.0
# The local memory's value for such an address.
UNRECORDED = -1.0
# Addresses remembered per process (least recently used go first).
LOCAL_ENTRIES = 65_536
# X-Forwarded-For hops walked at most: a chain of trusted proxies is short.
MAX_HOPS = 32
UNKNOWN = "unknown"


def parse_address(text: str) -> Address | None:
    """An IP address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]:443``, ``fe80::1%eth0``), IPv4-mapped IPv6 as IPv4; ``None`` otherwise."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    text = text.partition("%")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_address(
    peer: str | None,
    forwarded_for: Sequence[str],
    trusted_proxies: Sequence[Network],
    ipv6_prefix: int = 64,
) -> str:
    """The address the budget counts for: the peer, or behind trusted proxies the right-most
    ``X-Forwarded-For`` entry not in them; an IPv6 address as its ``/ipv6_prefix`` network."""
    address = parse_address(peer) if peer else None
    if address is None:
        return UNKNOWN
    if trusted_proxies and _trusted(address, trusted_proxies):
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops[-MAX_HOPS:]):
            found = parse_address(hop)
            if found is None:
                # SECURITY: garbage where a trusted proxy should have written an address: the
                # last trusted hop stands, so a client cannot invent a fresh budget with it.
                break
            address = found
            # SECURITY: the first address a trusted proxy reports that is not itself trusted
            # is the client; entries further left were written by the client.
            if not _trusted(address, trusted_proxies):
                break
    if isinstance(address, IPv6Address):
        return str(IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)


class FailureBudget:
    """The per-address budget of failed authentications, shared through the store."""

    def __init__(
        self, store: RateLimitStore, settings: AbuseSettings, clock: Clock, metrics: Metrics
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        # GCRA with `limit` requests per `period` allows `limit` at once and then one every
        # period / limit: the burst, then failures_per_minute.
        self._limit = settings.burst
        self._interval = 60.0 / settings.failures_per_minute
        self._period = self._interval * settings.burst
        # Per address: 0.0 while known to be within budget, UNRECORDED while its failures
        # cannot be recorded, else the time it is allowed again.
        self._local: TTLCache[str, float] = TTLCache(LOCAL_ENTRIES)
        # Addresses that failed within the last period: their requests go one at a time.
        self._failing: TTLCache[str, bool] = TTLCache(LOCAL_ENTRIES)
        self._slots = Slots(self._concurrency)

    def _concurrency(self, client: str) -> int:
        failing = self._failing.get(client, self._clock.now(), count=False)
        return 1 if failing else self._limit

    def client_of(self, peer: str | None, headers: CIMultiDictProxy[str]) -> str:
        forwarded = headers.getall("X-Forwarded-For", []) if self._settings.trusted_proxies else []
        return client_address(
            peer, forwarded, self._settings.trusted_proxies, self._settings.ipv6_prefix
        )

    @staticmethod
    def _bucket(client: str) -> str:
        # Hashed: bounded length, and nothing a client sends ever shapes a store key.
        return "abuse:" + hashlib.sha256(client.encode()).hexdigest()[:32]

    def _refuse(self, wait: float) -> RateLimited:
        self._metrics.abuse_refused.inc()
        retry = max(1, math.ceil(wait))
        return RateLimited(
            "Too many failed authentications from this address. Retry later.",
            details={"reason": "failed_authentications", "retry_after": retry},
            headers={"Retry-After": str(retry)},
        )

    def known_within(self, peer: str | None, headers: CIMultiDictProxy[str]) -> bool:
        """Whether this process knows the client's address to be within its budget now (what
        :meth:`check` would pass without asking the store). False is no verdict: ask
        :meth:`check`."""
        return self._local.get(self.client_of(peer, headers), self._clock.now()) == 0.0

    async def check(self, peer: str | None, headers: CIMultiDictProxy[str]) -> str:
        """Raise 429 when the client's address has spent its budget (503 when the store cannot
        say and ``on_store_error`` is ``deny``); otherwise return the address, holding one of
        its slots (module docstring): :meth:`failed` counts a failure, :meth:`settled` gives
        the slot back, once the authentication is over either way. Reads no credential."""
        client = self.client_of(peer, headers)
        await self._within(client)
        # SECURITY: requests of one address sent at once wait their turn here, and are checked
        # again when it comes, so they cannot all pass before the first failure is counted.
        if await self._slots.acquire(client):
            try:
                await self._within(client)
            except BaseException:
                self._slots.release(client)
                raise
        return client

    def settled(self, client: str) -> None:
        """The authentication that :meth:`check` let through is over (its failure, if any,
        counted): the next request of that address may go."""
        self._slots.release(client)

    async def _within(self, client: str) -> None:
        now = self._clock.now()
        known = self._local.get(client, now)
        if known is not None:
            if known == UNRECORDED:
                raise StoreUnavailable(details={"store": "redis"})
            if known > now:
                raise self._refuse(known - now)
            return
        try:
            allowed, wait = await self._store.rate_limit_peek(
                self._bucket(client), self._limit, self._period, now
            )
        except StoreUnavailable:
            self._metrics.abuse_store_failures.labels(self._settings.on_store_error).inc()
            if self._settings.on_store_error == "allow":
                return
            raise
        if not allowed:
            self._local.put(client, now + wait, now + wait)
            # SECURITY: past its budget, the address is refused before its credential is read.
            raise self._refuse(wait)
        self._local.put(client, 0.0, now + CLEAN_TTL)

    async def failed(self, client: str) -> None:
        """Count one failed authentication against ``client``, in one atomic store step. Never
        raises: the request's own 401 is the answer either way."""
        now = self._clock.now()
        self._failing.put(client, True, now + self._period)
        try:
            allowed, remaining, reset = await self._store.rate_limit(
                self._bucket(client), self._limit, self._period, now
            )
        except StoreUnavailable:
            self._metrics.abuse_store_failures.labels(self._settings.on_store_error).inc()
            if self._settings.on_store_error == "deny":
                # SECURITY: a budget the store cannot spend is no bound: fail closed for this
                # address here rather than let it fail without limit.
                self._local.put(client, UNRECORDED, now + UNRECORDED_TTL)
            return
        self._metrics.abuse_failures.inc()
        if not allowed:
            # Another replica (or a concurrent request) spent the rest: `reset` is the wait.
            self._local.put(client, now + reset, now + reset)
        elif remaining == 0:
            # This failure spent the last of the burst: the next is allowed one emission
            # interval after the bucket's TAT stops being a full period ahead.
            wait = max(0.0, reset - self._period + self._interval)
            if wait > 0:
                self._local.put(client, now + wait, now + wait)
