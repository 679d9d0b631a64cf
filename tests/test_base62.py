"""Random base62 text (``gateway.base62``): length, alphabet, no bias, the CSPRNG's bytes."""

from __future__ import annotations

import collections
import secrets
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.base62 import ALPHABET, random_base62


@given(st.integers(min_value=0, max_value=300))
def test_any_length_is_that_many_base62_characters(length: int) -> None:
    text = random_base62(length)
    assert len(text) == length and set(text) <= set(ALPHABET)


def _feed(monkeypatch: pytest.MonkeyPatch, draws: list[bytes]) -> list[int]:
    """Replace the CSPRNG with ``draws``, in order; the sizes asked for are returned."""
    asked: list[int] = []
    source: Iterator[bytes] = iter(draws)

    def token_bytes(n: int) -> bytes:
        asked.append(n)
        return next(source)[:n]

    monkeypatch.setattr(secrets, "token_bytes", token_bytes)
    return asked


def test_each_kept_byte_is_its_value_modulo_62(monkeypatch: pytest.MonkeyPatch) -> None:
    _feed(monkeypatch, [bytes(range(0, 248, 5))])
    assert random_base62(50) == "".join(ALPHABET[b % 62] for b in range(0, 248, 5))


def test_bytes_from_248_up_are_dropped_not_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    # SECURITY (modulo bias): were 248-255 folded onto symbols 0-7, those symbols would be 25 %
    # likelier than the others. A draw of nothing but such bytes gives no character at all,
    # and the text is made of the next draw's bytes.
    asked = _feed(monkeypatch, [bytes(range(248, 256)) * 8, bytes(range(62, 124)) * 2])
    assert random_base62(43) == ALPHABET[:43]
    assert asked == [51, 51]


def test_a_short_draw_is_topped_up_with_another(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _feed(monkeypatch, [bytes([255, 1, 255, 2]) + bytes(47), bytes([3, 4, 5])])
    text = random_base62(43)
    assert text == "bc" + "a" * 41  # 2 dropped: 49 kept of 51, enough
    assert asked == [51]
    asked = _feed(monkeypatch, [bytes([250] * 45) + bytes([7] * 6), bytes([9] * 50)])
    assert random_base62(43) == "h" * 6 + "j" * 37
    assert asked == [51, 45]


def test_the_symbols_are_equally_likely() -> None:
    # 248,000 characters: about 4,000 of each symbol, a standard deviation of about 63. A
    # folded byte range (the bias above) would put 8 symbols near 5,000; allowed is ±8 %.
    counts = collections.Counter("".join(random_base62(1000) for _ in range(248)))
    assert set(counts) == set(ALPHABET)
    expected = 248_000 / 62
    assert all(abs(n - expected) < 0.08 * expected for n in counts.values()), counts
