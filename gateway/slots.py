"""At most so many holders per key at once, the others waiting in line: the failure budget's
bound on the requests of one client address whose authentication is under way.

A key's entry exists only while someone holds or waits for one of its slots, so memory follows
what is in flight, not how many keys were ever seen. The limit is the caller's at each
:meth:`Slots.acquire` and :meth:`Slots.release` (it may change while requests wait: the
failure budget narrows it to one once an address has failed).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class _Entry:
    __slots__ = ("held", "waiting")

    def __init__(self) -> None:
        self.held = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class Slots:
    """Per-key slots. ``limit(key)`` is how many may hold one at once (at least 1)."""

    def __init__(self, limit: Callable[[str], int]) -> None:
        self._limit = limit
        self._entries: dict[str, _Entry] = {}

    async def acquire(self, key: str) -> bool:
        """Hold a slot of ``key``; True when this had to wait for it (what the holders before
        it did may have changed the caller's verdict: ask again)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        if entry.held < self._limit(key) and not entry.waiting:
            entry.held += 1
            return False
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry.waiting.append(turn)
        try:
            await turn  # a release hands its slot over (``held`` already counts it)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(key)  # handed over as this waiter was cancelled: pass it on
            else:
                if turn in entry.waiting:
                    entry.waiting.remove(turn)
                self._drop_if_idle(key, entry)
            raise
        return True

    def release(self, key: str) -> None:
        """Give back a slot of ``key``: to the first waiter while the limit allows."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.held -= 1
        limit = self._limit(key)
        while entry.waiting and entry.held < limit:
            turn = entry.waiting.popleft()
            if not turn.done():
                entry.held += 1
                turn.set_result(None)
        self._drop_if_idle(key, entry)

    def _drop_if_idle(self, key: str, entry: _Entry) -> None:
        # Only this very entry: a cancelled waiter may come back to one that was dropped and
        # replaced by a new one for the same key meanwhile.
        if entry.held <= 0 and not entry.waiting and self._entries.get(key) is entry:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
