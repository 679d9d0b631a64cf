"""Prometheus metrics, on a registry of the app's own (never the global one).

Label values are bounded: the policy's route id (or ``unmatched``), the method from a fixed set,
the credential kind, the status code, fixed outcome and reason codes. Never a raw path, a user
id or a token.

The metrics every request touches (requests, durations, authentication decisions, upstream and
store durations, cache lookups) are counted in plain Python numbers (:mod:`gateway.observe.tally`)
and reach prometheus_client only in :meth:`Metrics.flush`: whoever reads the registry (a scrape,
a test) flushes first. The rarer metrics are prometheus_client's own, read as they are.
"""

from __future__ import annotations

import platform
from typing import NamedTuple, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway import __version__
from gateway.observe.tally import CounterTally, HistogramTally


class Incrementable(Protocol):
    def inc(self, amount: int = 1) -> None: ...


class CacheStats(NamedTuple):
    """Pending counts bound once per cache, so a lookup costs one ``inc()`` of an ``int``."""

    hit: Incrementable
    miss: Incrementable


# Fine enough to see sub-millisecond authentication.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route policy, method, credential kind and status.",
            ["route", "method", "credential", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to response headers, by route policy.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth = Counter(
            "gateway_auth_decisions",
            "Authentication and authorization "
            "decisions, by credential kind, outcome and reason code.",
            ["credential", "outcome", "reason"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds",
            "Time spent in the upstream, by upstream.",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream failures, by upstream and error code.",
            ["upstream", "error"],
            registry=r,
        )
        self.tokens_issued = Counter(
            "gateway_tokens_issued", "Tokens issued, by kind.", ["kind"], registry=r
        )
        self.mobile_consumed = Counter(
            "gateway_mobile_token_consumptions",
            "Mobile-token consumption attempts, by result.",
            ["result"],
            registry=r,
        )
        self.store_duration = Histogram(
            "gateway_store_operation_duration_seconds",
            "Store operations, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "gateway_store_errors",
            "Store operations that failed, by operation.",
            ["operation"],
            registry=r,
        )
        self.store_alarms = Counter(
            "gateway_store_alarms",
            "The store lost its data (data_lost) or is claimed by another master key "
            "(master_key_mismatch): see gateway.keys.watch.",
            ["alarm"],
            registry=r,
        )
        for alarm in ("data_lost", "master_key_mismatch"):  # at 0 from the start, so that
            self.store_alarms.labels(alarm)  # the first one is an increase Prometheus sees
        self.master_key_mismatch = Gauge(
            "gateway_store_master_key_mismatch",
            "1 while the store's master-key fingerprint is another key's (this process creates "
            "no key then), else 0.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_evicting = Gauge(
            "gateway_store_evicting",
            "1 while a store node may evict keys when full (maxmemory with a policy other "
            "than noeviction), else 0: see gateway.stores.eviction.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.cache = Counter(
            "gateway_cache_lookups",
            "Verification cache lookups, by cache and result.",
            ["cache", "result"],
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited",
            "Requests refused by a rate limit, by route group.",
            ["group"],
            registry=r,
        )
        self.rate_limit_store_failures = Counter(
            "gateway_rate_limit_store_failures",
            "Rate-limit checks the store could not answer, by the policy applied.",
            ["policy"],
            registry=r,
        )
        self.abuse_refused = Counter(
            "gateway_abuse_refused",
            "Requests refused with 429 before any credential lookup: their client address had "
            "spent its budget of failed authentications.",
            registry=r,
        )
        self.abuse_failures = Counter(
            "gateway_abuse_failures",
            "Failed authentications (401s) counted against their client address.",
            registry=r,
        )
        self.abuse_store_failures = Counter(
            "gateway_abuse_store_failures",
            "Failed-authentication budget checks or counts the store could not answer, by the "
            "policy applied.",
            ["policy"],
            registry=r,
        )
        self.reloads = Counter(
            "gateway_config_reloads",
            "Configuration reloads, by result.",
            ["result"],
            registry=r,
        )
        for result in ("ok", "error"):  # at 0 from the start: see store_alarms
            self.reloads.labels(result)
        self.build = Gauge(
            "gateway_build_info",
            "Build information.",
            ["version", "python"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build.labels(__version__, platform.python_version()).set(1)
        # Pending counts by label set, for the metrics touched on every request (see flush).
        self._requests = CounterTally(self.requests)
        self._durations = HistogramTally(self.duration, LATENCY_BUCKETS)
        self._upstream_durations = HistogramTally(self.upstream_duration, LATENCY_BUCKETS)
        self._auth = CounterTally(self.auth)
        self._store_durations = HistogramTally(self.store_duration, LATENCY_BUCKETS)
        self._cache = CounterTally(self.cache)
        self._tokens_issued = CounterTally(self.tokens_issued)
        self._mobile_consumed = CounterTally(self.mobile_consumed)
        self._tallies: tuple[CounterTally | HistogramTally, ...] = (
            self._requests,
            self._durations,
            self._upstream_durations,
            self._auth,
            self._store_durations,
            self._cache,
            self._tokens_issued,
            self._mobile_consumed,
        )

    def flush(self) -> None:
        """Add what was counted since the last flush to the prometheus_client metrics, and
        start counting from zero. Call it on the event loop's thread (where everything is
        counted) before reading the registry: the admin ``/metrics`` handler does, and the
        runtime flushes every second and at shutdown, so that a supervisor reading its workers'
        multiprocess files is at most a second behind. Cheap: one pass over the label sets seen
        so far, skipping those with nothing pending."""
        for tally in self._tallies:
            tally.flush()

    def cache_stats(self, name: str) -> CacheStats:
        """The hit and miss counts of one cache. Asking again for the same name (a reload
        rebuilds the caches) gives the same counts, so nothing counted is left behind."""
        return CacheStats(self._cache[name, "hit"], self._cache[name, "miss"])

    def observe_store(self, operation: str, seconds: float, ok: bool) -> None:
        self._store_durations[(operation,)].observe(seconds)
        if not ok:
            self.store_errors.labels(operation).inc()

    def request_done(
        self, route: str, method: str, credential: str, status: int, seconds: float
    ) -> None:
        """Count one answered request and its duration."""
        # SECURITY: the method is folded to the fixed set before it becomes a label (and a key
        # of the pending counts, kept for the process's lifetime), so a client inventing
        # methods cannot grow either.
        self._requests[route, self.method_label(method), credential, str(status)].n += 1
        self._durations[(route,)].observe(seconds)

    def upstream_done(self, upstream: str, seconds: float) -> None:
        self._upstream_durations[(upstream,)].observe(seconds)

    def auth_decision(self, credential: str, outcome: str, reason: str) -> None:
        self._auth[credential, outcome, reason].n += 1

    def token_issued(self, kind: str) -> None:
        """Count one token issued (``user_token``, ``mobile_token``, ``sdk_session``)."""
        self._tokens_issued[(kind,)].n += 1

    def mobile_consumption(self, result: str) -> None:
        """Count one attempt to use a mobile token up, by result (``ok`` or the refusal's
        reason, one of the fixed set the mobile-token kind raises)."""
        self._mobile_consumed[(result,)].n += 1

    def method_label(self, method: str) -> str:
        return method if method in KNOWN_METHODS else "OTHER"
