"""HTTP/1.1 answers written as bytes, for the decision listener (:mod:`gateway.decision_server`).

aiohttp's ``web.Response`` builds a header multidict, a writer and a payload object for every
answer; a forward-auth answer is a status line, a few headers and at most a small JSON body, so
the decision listener writes it with one ``transport.write`` of what :func:`answer` returns.
The contract is aiohttp's: ``Date`` on every answer, ``Content-Length`` always (no chunked
answers), ``Connection: close`` when the connection ends after it (``Connection: keep-alive``
for an HTTP/1.0 client that asked to keep it), and no header that could split the answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

_REASONS = {status.value: status.phrase for status in HTTPStatus}


class InvalidHeader(ValueError):
    """A header name or value that would end the header line early (CR, LF or NUL)."""


class _HttpDate:
    """The ``Date`` header's value (RFC 9110 §6.6.1), formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
        return self._value


http_date = _HttpDate()


def _clean(text: str) -> str:
    # SECURITY: a CR or LF inside a header would let its value start a header (or a body) of
    # its own: response splitting. Identity values come from verified credentials and the
    # policy, but the answer is checked here, where it is written, like aiohttp's writer does.
    if "\r" in text or "\n" in text or "\x00" in text:
        raise InvalidHeader("header carries a line break")
    return text


def answer(
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    *,
    keep_alive: bool = True,
    http10: bool = False,
    block: bytes = b"",
) -> bytes:
    """The whole answer: status line, headers, blank line, body. ``block``: header lines
    already encoded and checked (:class:`HeaderBlocks`), written before ``headers``. Raises
    :class:`InvalidHeader` (nothing written) for a header that would split it."""
    head = _heads(status, len(body), keep_alive, http10)
    rest = [f"{_clean(name)}: {_clean(value)}\r\n" for name, value in headers]
    rest.append("\r\n")
    return head + block + "".join(rest).encode() + body


def allowed(block: bytes, name: str, value: str, *, keep_alive: bool, http10: bool) -> bytes:
    """``answer(200, [(name, value)], keep_alive=…, http10=…, block=block)``, the same bytes,
    for an allowed decision whose only header besides its identity block is one more (the
    request id): without the list and the join the general case needs."""
    line = f"{_clean(name)}: {_clean(value)}\r\n\r\n".encode()
    return _heads(200, 0, keep_alive, http10) + block + line


class _Heads:
    """The status line, ``Date``, ``Content-Length`` and ``Connection`` of an answer, encoded
    once a second for the answers without a body (an allowed decision's, nearly all)."""

    __slots__ = ("_date", "_heads")

    def __init__(self) -> None:
        self._date = ""
        self._heads: dict[tuple[int, bool, bool], bytes] = {}

    def __call__(self, status: int, length: int, keep_alive: bool, http10: bool) -> bytes:
        date = http_date()
        if date != self._date:  # a new second: the heads kept carry the old Date
            self._heads.clear()
            self._date = date
        key = (status, keep_alive, http10)
        if length == 0 and (head := self._heads.get(key)) is not None:
            return head
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Date: {date}",
            f"Content-Length: {length}",
        ]
        if not keep_alive:
            lines.append("Connection: close")
        elif http10:
            lines.append("Connection: keep-alive")
        lines.append("")
        head = "\r\n".join(lines).encode()
        if length == 0:
            self._heads[key] = head
        return head


_heads = _Heads()


class HeaderBlocks:
    """Header lines encoded and checked once per distinct set (the identity headers of one
    principal, say) and reused: bounded, emptied when full."""

    __slots__ = ("_blocks", "_size")

    def __init__(self, size: int = 10_000) -> None:
        self._blocks: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._size = size

    def __call__(self, headers: tuple[tuple[str, str], ...]) -> bytes:
        block = self._blocks.get(headers)
        if block is None:
            block = "".join(f"{_clean(n)}: {_clean(v)}\r\n" for n, v in headers).encode()
            if len(self._blocks) >= self._size:
                self._blocks.clear()
            self._blocks[headers] = block
        return block
