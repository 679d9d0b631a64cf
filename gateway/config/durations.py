"""Durations as people write and read them: ``500ms``, ``30s``, ``5m``, ``24h``, ``90d``.

A config file gives a duration with its unit and the code reads seconds; an error about a
duration shows it with a unit again (``must be at most 1h, got 2h``), never a bare number of
seconds the operator did not write. :class:`Seconds` marks a parsed duration while it is
validated, so the one place that words bound errors (:mod:`gateway.config.errors`) knows to
show units; the settings themselves hold plain floats.
"""

from __future__ import annotations


class Seconds(float):
    """A number of seconds parsed from a duration, until validation turns it into a float."""

    __slots__ = ()


def format_duration(seconds: float) -> str:
    """``7776000`` → ``90d``, ``0.5`` → ``500ms``: the largest unit that divides evenly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    if seconds == 0:
        return "0s"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"
