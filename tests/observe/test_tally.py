"""The tallies' flush against prometheus_client itself: what a flush exports must be what the
same observations made with ``inc()``/``observe()`` export. A histogram flush writes to the
child's ``_buckets`` and ``_sum`` (prometheus_client internals): these tests fail if an upgrade
changes them, in the single-process value class and in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observe.tally import CounterTally, HistogramTally

BOUNDS = (0.001, 0.01, 0.1, 1.0)
# Below, on and between bounds, above the largest (+Inf only), on the largest; one label set
# seen twice, one once.
OBSERVED = [
    ("a", 0.0005),
    ("a", 0.001),
    ("b", 0.01),
    ("a", 0.05),
    ("a", 7.5),
    ("b", 1.0),
    ("a", 0.001),
]


Sample = tuple[str, tuple[tuple[str, str], ...], float]


def parse(text: str, prefix: str = "") -> list[Sample]:
    """The samples of the families named ``prefix…``, without the prefix, sorted, but the
    ``_created`` timestamps (which differ between two registries)."""
    return sorted(
        (s.name.removeprefix(prefix), tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        if family.name.startswith(prefix)
        for s in family.samples
        if not s.name.endswith("_created")
    )


def samples(registry: CollectorRegistry) -> list[Sample]:
    return parse(generate_latest(registry).decode())


def metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    counter = Counter("t_lookups", "Lookups.", ["cache"], registry=registry)
    histogram = Histogram("t_seconds", "Seconds.", ["op"], buckets=BOUNDS, registry=registry)
    return counter, histogram


def test_a_flush_exports_what_direct_calls_export() -> None:
    tallied, direct = CollectorRegistry(), CollectorRegistry()
    counter, histogram = metrics(tallied)
    counts, observations = CounterTally(counter), HistogramTally(histogram, BOUNDS)
    direct_counter, direct_histogram = metrics(direct)
    for op, seconds in OBSERVED:
        observations[(op,)].observe(seconds)
        direct_histogram.labels(op).observe(seconds)
        counts[(op,)].inc()
        direct_counter.labels(op).inc()
    counts[("a",)].n += 2
    direct_counter.labels("a").inc(2)
    counts.flush()
    observations.flush()
    assert samples(tallied) == samples(direct)
    # A second flush adds nothing; new counts add to the flushed ones.
    counts.flush()
    observations.flush()
    assert samples(tallied) == samples(direct)
    observations[("b",)].observe(0.5)
    direct_histogram.labels("b").observe(0.5)
    observations.flush()
    assert samples(tallied) == samples(direct)


def test_bounds_that_are_not_the_histograms_are_refused() -> None:
    _, histogram = metrics(CollectorRegistry())
    with pytest.raises(ValueError, match="bounds"):
        HistogramTally(histogram, BOUNDS[:-1])[("a",)].observe(0.1)


# Counted in one process whose values are files, read by another, as a supervisor reads them.
MULTIPROCESS = """
from prometheus_client import Counter, Histogram
from gateway.observe.tally import CounterTally, HistogramTally

BOUNDS, OBSERVED = {bounds!r}, {observed!r}
values = {{}}
for prefix in ("tallied", "direct"):
    values[prefix] = (
        Counter(prefix + "_lookups", "Lookups.", ["cache"]),
        Histogram(prefix + "_seconds", "Seconds.", ["op"], buckets=BOUNDS),
    )
counts = CounterTally(values["tallied"][0])
observations = HistogramTally(values["tallied"][1], BOUNDS)
for op, seconds in OBSERVED:
    observations[(op,)].observe(seconds)
    counts[(op,)].inc()
    values["direct"][1].labels(op).observe(seconds)
    values["direct"][0].labels(op).inc()
counts.flush()
observations.flush()
observations.flush()
"""


READ = """
import sys
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_a_flush_exports_what_direct_calls_export_in_multiprocess_mode(tmp_path: Path) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    script = MULTIPROCESS.format(bounds=BOUNDS, observed=OBSERVED)
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", script], env=environment, check=True, timeout=60)
    assert list(directory.glob("*.db"))  # the values were written to files, not to memory
    read = subprocess.run(
        [sys.executable, "-c", READ],
        env=environment,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    tallied, direct = parse(read, "tallied_"), parse(read, "direct_")
    assert len(tallied) == len(BOUNDS) * 2 + 8  # two label sets: buckets, +Inf, sum, count; counts
    assert tallied == direct
