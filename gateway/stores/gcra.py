"""GCRA (generic cell rate algorithm), the rate-limit arithmetic shared by both stores.

The Redis store runs the same arithmetic in ``lua/rate_limit.lua``; this module is the reference
the memory store uses and the tests compare against. :func:`gcra_peek` only reads: both stores
use it on the stored theoretical arrival time.
"""

from __future__ import annotations


def gcra_step(
    tat: float | None, limit: int, period: float, now: float
) -> tuple[bool, float, int, float]:
    """One request against a bucket whose theoretical arrival time is ``tat``.

    Returns (allowed, new_tat, remaining, reset_after): with ``limit`` requests per ``period``
    the emission interval is ``period / limit``; a request is allowed while the new TAT is no
    more than ``period`` ahead of ``now``.
    """
    interval = period / limit
    tat = max(tat if tat is not None else now, now)
    new_tat = tat + interval
    allow_at = new_tat - period
    if allow_at > now:
        return False, tat, 0, allow_at - now
    remaining = int((period - (new_tat - now)) / interval + 1e-9)
    return True, new_tat, max(remaining, 0), new_tat - now


def gcra_peek(tat: float | None, limit: int, period: float, now: float) -> tuple[bool, float]:
    """Whether one request against a bucket whose theoretical arrival time is ``tat`` would be
    allowed now, without spending it: (allowed, seconds until it would be, 0 when allowed).
    Exactly when :func:`gcra_step` would allow it."""
    interval = period / limit
    tat = max(tat if tat is not None else now, now)
    allow_at = tat + interval - period
    if allow_at > now:
        return False, allow_at - now
    return True, 0.0
