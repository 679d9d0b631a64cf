"""The same contract, run against the memory store and a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from gateway.stores.base import MobileState, Store
from gateway.stores.gcra import gcra_peek, gcra_step

NOW = 1_700_000_000.0


async def test_keys_by_digest_and_id(store: Store) -> None:
    assert await store.key_by_digest("d1") is None
    await store.put_key("key_1", "d1", b'{"a":1}')
    assert await store.key_by_digest("d1") == b'{"a":1}'
    assert await store.key_by_id("key_1") == b'{"a":1}'
    await store.put_key("key_1", "d1", b'{"a":2}')
    assert await store.key_by_digest("d1") == b'{"a":2}'
    await store.put_key("key_2", "d2", b'{"b":1}')
    assert sorted(await store.list_keys()) == [b'{"a":2}', b'{"b":1}']


async def test_keys_are_listed_per_account(store: Store) -> None:
    await store.put_key("key_a1", "da1", b"a1", "acc_a")
    await store.put_key("key_b1", "db1", b"b1", "acc_b")
    await store.put_key("key_a2", "da2", b"a2", "acc_a")
    await store.put_key("key_a1", "da1", b"a1-revoked", "acc_a")  # replaced, listed once
    assert await store.list_keys("acc_a") == [b"a1-revoked", b"a2"]
    assert await store.list_keys("acc_b") == [b"b1"]
    assert await store.list_keys("acc_none") == []
    assert sorted(await store.list_keys()) == [b"a1-revoked", b"a2", b"b1"]


@pytest.mark.parametrize("hostile", ["*", "d?", "[a-z]*", "x\r\nFLUSHALL\r\n", "k" * 10_000])
async def test_hostile_identifiers_are_just_keys(store: Store, hostile: str) -> None:
    await store.put_key("key_real", "real", b"1")
    assert await store.key_by_digest(hostile) is None
    assert await store.key_by_digest("real") == b"1"
    assert (await store.peek_mobile(hostile, NOW))[0] is MobileState.UNKNOWN


async def test_mobile_token_is_consumed_once(store: Store) -> None:
    await store.put_mobile("m1", b"rec", NOW, NOW + 300, NOW + 3600)
    assert await store.peek_mobile("m1", NOW) == (MobileState.OK, b"rec")
    assert await store.consume_mobile("m1", NOW) == (MobileState.OK, b"rec")
    assert await store.consume_mobile("m1", NOW) == (MobileState.USED, None)
    assert await store.peek_mobile("m1", NOW) == (MobileState.USED, None)
    assert await store.consume_mobile("nope", NOW) == (MobileState.UNKNOWN, None)


async def test_mobile_token_expiry_is_not_consumption(store: Store) -> None:
    await store.put_mobile("m2", b"rec", NOW, NOW + 300, NOW + 3600)
    assert await store.consume_mobile("m2", NOW + 300) == (MobileState.EXPIRED, None)
    assert await store.peek_mobile("m2", NOW + 299) == (MobileState.OK, b"rec")


async def test_concurrent_consumers_have_one_winner(store: Store) -> None:
    await store.put_mobile("race", b"rec", NOW, NOW + 300, NOW + 3600)
    results = await asyncio.gather(*(store.consume_mobile("race", NOW) for _ in range(200)))
    assert sum(1 for state, _ in results if state is MobileState.OK) == 1
    assert {state for state, _ in results} == {MobileState.OK, MobileState.USED}


async def test_relationships(store: Store) -> None:
    assert not await store.relationship_active("acc", "mem_1", "mem_2")
    await store.set_relationship("acc", "mem_1", "mem_2", True)
    assert await store.relationship_active("acc", "mem_1", "mem_2")
    assert not await store.relationship_active("acc", "mem_2", "mem_1")
    assert not await store.relationship_active("other", "mem_1", "mem_2")
    await store.set_relationship("acc", "mem_1", "mem_2", False)
    assert not await store.relationship_active("acc", "mem_1", "mem_2")


async def test_relationships_are_listed_per_account(store: Store) -> None:
    assert await store.list_relationships("acc") == []
    await store.set_relationship("acc", "mem_2", "cg_1", True)
    await store.set_relationship("acc", "mem_1", "cg_1", True)
    await store.set_relationship("acc", "mem_1", "cg_1", True)  # granted twice: listed once
    await store.set_relationship("other", "mem_1", "cg_9", True)
    assert await store.list_relationships("acc") == [("mem_1", "cg_1"), ("mem_2", "cg_1")]
    assert await store.list_relationships("other") == [("mem_1", "cg_9")]
    await store.set_relationship("acc", "mem_2", "cg_1", False)
    await store.set_relationship("acc", "mem_3", "cg_3", False)  # revoking what never was
    assert await store.list_relationships("acc") == [("mem_1", "cg_1")]
    assert await store.list_relationships("nobody") == []


async def test_the_relationship_list_agrees_with_the_checks_after_concurrent_changes(
    store: Store,
) -> None:
    """Grants and revokes racing each other: whatever order they land in, the listing names
    exactly the relationships the request path finds active."""
    changes = [
        store.set_relationship("acc", f"mem_{i % 5}", f"cg_{i % 3}", i % 4 != 0) for i in range(120)
    ]
    await asyncio.gather(*changes)
    active = {
        (f"mem_{s}", f"cg_{a}")
        for s in range(5)
        for a in range(3)
        if await store.relationship_active("acc", f"mem_{s}", f"cg_{a}")
    }
    assert active  # the control: some grants won
    assert set(await store.list_relationships("acc")) == active


async def test_rate_limit_matches_the_reference(store: Store) -> None:
    allowed = [await store.rate_limit("b", 5, 10.0, NOW) for _ in range(7)]
    assert [a for a, _, _ in allowed] == [True] * 5 + [False] * 2
    assert [r for _, r, _ in allowed[:5]] == [4, 3, 2, 1, 0]
    assert allowed[5][2] == pytest.approx(2.0, abs=0.01)
    assert (await store.rate_limit("b", 5, 10.0, NOW + 2.0))[0] is True


def test_gcra_reference() -> None:
    tat = None
    results = []
    for _ in range(3):
        ok, tat, remaining, _ = gcra_step(tat, 2, 1.0, NOW)
        results.append((ok, remaining))
    assert results == [(True, 1), (True, 0), (False, 0)]


async def test_rate_limit_peek_reads_without_spending(store: Store) -> None:
    assert await store.rate_limit_peek("p", 5, 10.0, NOW) == (True, 0.0)
    for _ in range(5):
        assert (await store.rate_limit("p", 5, 10.0, NOW))[0] is True
    for _ in range(3):  # looking, however often, spends nothing and changes nothing
        allowed, wait = await store.rate_limit_peek("p", 5, 10.0, NOW)
        assert allowed is False and wait == pytest.approx(2.0, abs=0.01)
    assert (await store.rate_limit_peek("p", 5, 10.0, NOW + 2.0))[0] is True
    for _ in range(3):
        await store.rate_limit_peek("p", 5, 10.0, NOW + 2.0)
    assert (await store.rate_limit("p", 5, 10.0, NOW + 2.0))[0] is True
    assert (await store.rate_limit("p", 5, 10.0, NOW + 2.0))[0] is False
    # Other buckets are untouched.
    assert await store.rate_limit_peek("q", 5, 10.0, NOW) == (True, 0.0)


async def test_rate_limit_peek_agrees_with_the_next_step(store: Store) -> None:
    # Requests at uneven times; before each, the peek predicts exactly what the step decides.
    now = NOW
    for i in range(40):
        now += (0.13, 0.9, 0.0, 0.41)[i % 4]
        predicted, wait = await store.rate_limit_peek("agree", 3, 2.0, now)
        allowed, _, reset = await store.rate_limit("agree", 3, 2.0, now)
        assert predicted is allowed, i
        if not allowed:
            assert wait == pytest.approx(reset, abs=0.002)


def test_gcra_peek_reference() -> None:
    tat = None
    for _ in range(2):
        assert gcra_peek(tat, 2, 1.0, NOW) == (True, 0.0)
        _, tat, _, _ = gcra_step(tat, 2, 1.0, NOW)
    allowed, wait = gcra_peek(tat, 2, 1.0, NOW)
    assert not allowed and wait == pytest.approx(0.5)
    assert gcra_peek(tat, 2, 1.0, NOW + 0.5) == (True, 0.0)


async def test_memory_policies_name_each_writable_node(store: Store) -> None:
    """A fresh redis-server has no limit (maxmemory 0) and does not evict; a Cluster answers for
    each master (``host:port``), the others for the one node they write to; memory never evicts."""
    policies = await store.memory_policies()
    assert policies is not None
    assert not any(p.evicts for p in policies)
    if store.name == "memory":
        assert policies == []
        return
    assert all(p.policy == "noeviction" and p.maxmemory == 0 for p in policies)
    nodes = [p.node for p in policies]
    if store.topology == "cluster":  # type: ignore[attr-defined]
        assert len(nodes) == 3 and all(n.startswith("127.0.0.1:") for n in nodes), nodes
    else:
        assert nodes == [""]


async def test_replace_key_writes_only_over_the_expected_record(store: Store) -> None:
    await store.put_key("key_1", "d1", b"first", "acc_1")
    assert await store.replace_key("key_1", "d1", b"other", b"second", "acc_1") is False
    assert await store.key_by_id("key_1") == b"first"
    assert await store.replace_key("key_1", "d1", b"first", b"second", "acc_1") is True
    assert await store.key_by_id("key_1") == b"second"
    assert await store.key_by_digest("d1") == b"second"
    assert await store.replace_key("key_2", "d2", b"anything", b"x") is False  # none stored
    assert await store.key_by_id("key_2") is None
