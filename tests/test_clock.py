"""gateway/clock.py: the times tokens and answers show."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import rfc3339


def test_rfc3339_is_the_token_docs_format() -> None:
    assert rfc3339(1736938800.9) == "2025-01-15T11:00:00Z"  # whole seconds, truncated


@given(st.floats(min_value=0, max_value=253402300799, allow_nan=False))
def test_rfc3339_agrees_with_datetime(epoch: float) -> None:
    expected = datetime.fromtimestamp(int(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rfc3339(epoch) == expected
