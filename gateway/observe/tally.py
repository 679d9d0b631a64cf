"""Per-request counts kept as plain Python numbers, moved into prometheus_client by a flush.

prometheus_client takes a lock and runs its checks on every ``inc()`` and ``observe()``, and a
histogram's ``observe()`` walks its buckets in a Python loop: several microseconds per request
for the handful of metrics every request touches. Here a count is an ``int`` attribute and an
observation is one :func:`bisect.bisect_left` plus two additions, with no lock. The pending
amounts reach the prometheus_client children only in :meth:`CounterTally.flush` and
:meth:`HistogramTally.flush`, which :meth:`gateway.observe.metrics.Metrics.flush` calls before
every scrape served in-process and every second (:mod:`gateway.runtime`).

Contract: counting and flushing happen on one thread, the event loop's (no lock: an increment
racing a flush on another thread could be lost). Label values are bounded by the callers (see
:mod:`gateway.observe.metrics`): each label set seen keeps one pending object for the process's
lifetime.

A histogram flush adds to the child's ``_buckets`` (one value per bucket, not cumulative) and
``_sum``, prometheus_client's internals: it has no public call that adds many observations at
once. Those values have ``inc(amount)`` in the single-process value class and in multiprocess
mode (``MmapedValue``) alike. ``tests/observe/test_tally.py`` exports a flushed histogram next to
one fed by ``observe()``; it fails if an upgrade changes these internals.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Histogram


class Count:
    """A counter child's pending increments. ``inc()`` is the interface the caches call; the
    request path adds to ``n`` directly."""

    __slots__ = ("child", "n")

    def __init__(self, child: Counter) -> None:
        self.child = child
        self.n = 0

    def inc(self, amount: int = 1) -> None:
        self.n += amount


class Observations:
    """A histogram child's pending observations: one count per bucket (the last is ``+Inf``)
    and their sum. The count of observations is the sum of the buckets, as in Prometheus."""

    __slots__ = ("bounds", "buckets", "child", "sum")

    def __init__(self, child: Histogram, bounds: Sequence[float]) -> None:
        self.child = child
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Buckets are ``le`` (≤) bounds: bisect_left puts a value equal to a bound in that
        # bound's bucket, and one above the largest in the last (``+Inf``).
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.sum += value


class CounterTally(dict[tuple[str, ...], Count]):
    """A counter's pending increments by label set. ``tally[labels]`` creates the label set's
    :class:`Count` (and binds the prometheus_client child, so the series is exported, at zero,
    from its first use) the first time; afterwards it is a plain dict lookup."""

    __slots__ = ("_metric",)

    def __init__(self, metric: Counter) -> None:
        super().__init__()
        self._metric = metric

    def __missing__(self, labels: tuple[str, ...]) -> Count:
        count = self[labels] = Count(self._metric.labels(*labels))
        return count

    def flush(self) -> None:
        for count in self.values():
            n = count.n
            if n:
                count.n = 0
                count.child.inc(n)


class HistogramTally(dict[tuple[str, ...], Observations]):
    """A histogram's pending observations by label set, as :class:`CounterTally`."""

    __slots__ = ("_bounds", "_metric")

    def __init__(self, metric: Histogram, bounds: Sequence[float]) -> None:
        super().__init__()
        self._metric = metric
        self._bounds = tuple(float(b) for b in bounds)

    def __missing__(self, labels: tuple[str, ...]) -> Observations:
        child = self._metric.labels(*labels)
        if len(getattr(child, "_buckets", ())) != len(self._bounds) + 1:
            raise ValueError("the tally's bounds are not the histogram's buckets")
        observations = self[labels] = Observations(child, self._bounds)
        return observations

    def flush(self) -> None:
        for observations in self.values():
            pending = observations.buckets
            if not any(pending):
                continue
            total, observations.sum = observations.sum, 0.0
            observations.buckets = [0] * len(pending)
            child: Any = observations.child  # prometheus_client internals, see the module doc
            values = child._buckets
            for i, n in enumerate(pending):
                if n:
                    values[i].inc(n)
            child._sum.inc(total)
