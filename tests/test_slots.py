"""Per-key slots (gateway.slots): at most the limit hold one, the others wait in line, a
cancelled waiter neither keeps nor loses a slot, and nothing is kept for idle keys."""

from __future__ import annotations

import asyncio

from gateway.slots import Slots


async def test_past_the_limit_requests_wait_in_line_and_are_told_they_waited() -> None:
    limits = {"a": 2}
    slots = Slots(lambda key: limits[key])
    assert await slots.acquire("a") is False
    assert await slots.acquire("a") is False
    order: list[int] = []

    async def third(i: int) -> None:
        assert await slots.acquire("a") is True
        order.append(i)

    waiting = [asyncio.ensure_future(third(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == []
    limits["a"] = 1  # narrowed while they wait: one at a time from now on
    slots.release("a")
    await asyncio.sleep(0)
    assert order == []  # one still holds a slot, and the limit is one
    slots.release("a")
    await asyncio.sleep(0)
    assert order == [0]
    slots.release("a")
    await asyncio.sleep(0)
    assert order == [0, 1]
    slots.release("a")
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2]
    slots.release("a")
    assert len(slots) == 0  # nothing kept for a key nobody holds


async def test_a_cancelled_waiter_passes_on_a_slot_handed_to_it() -> None:
    slots = Slots(lambda _: 1)
    await slots.acquire("a")
    first = asyncio.ensure_future(slots.acquire("a"))
    second = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)
    slots.release("a")  # handed to `first`...
    first.cancel()  # ...which is cancelled before it runs: `second` gets it
    await asyncio.sleep(0)
    assert first.cancelled()
    assert await second is True
    slots.release("a")
    assert len(slots) == 0


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    slots = Slots(lambda _: 1)
    await slots.acquire("a")
    waiter = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    slots.release("a")
    assert len(slots) == 0
    assert await slots.acquire("b") is False  # keys are independent
    assert await slots.acquire("a") is False


async def test_a_waiter_cancelled_after_its_entry_was_replaced_leaves_the_new_one() -> None:
    """B waits and is cancelled; before B's task runs again, A's release hands nothing to it
    (it is cancelled), the key's entry is dropped, and C and D make a new one. B used to
    delete that new entry on its way out: D then waited for ever, and later requests got
    slots past the limit."""
    slots = Slots(lambda _: 1)
    await slots.acquire("a")  # A
    b = asyncio.ensure_future(slots.acquire("a"))
    await asyncio.sleep(0)

    async def c_then_release() -> None:
        slots.release("a")  # A is done
        await slots.acquire("a")  # C
        await asyncio.sleep(0.05)
        slots.release("a")

    c = asyncio.ensure_future(c_then_release())
    d = asyncio.ensure_future(slots.acquire("a"))
    b.cancel()  # its wake-up runs after C's and D's first steps
    await asyncio.sleep(0.01)
    assert b.cancelled()  # the cancellation stands (no KeyError in its place)
    await c
    assert await asyncio.wait_for(d, 2) is True  # D got C's slot
    slots.release("a")
    assert len(slots) == 0
