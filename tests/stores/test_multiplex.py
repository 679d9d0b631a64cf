"""The pipelined connection of the hot path (gateway/stores/multiplex.py), against a real
redis-server: every answer reaches the command that asked for it, and a broken, slow or
abandoned connection fails the commands on it instead of mixing up their answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import StoreUnavailable
from gateway.stores.base import MobileState
from gateway.stores.multiplex import Multiplexed, pack
from gateway.stores.redis import RedisStore


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def mux_for(redis_url: str, **kw: object) -> Multiplexed:
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    return Multiplexed(parts.hostname, parts.port, **kw)  # type: ignore[arg-type]


def test_pack_is_resp() -> None:
    assert pack(("SET", b"k\r\n", 10, 1.5)) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n10\r\n$3\r\n1.5\r\n"
    )


async def test_concurrent_commands_each_get_their_own_answer(redis_url: str) -> None:
    mux = mux_for(redis_url)
    prefix = uuid.uuid4().hex
    values = [f"{prefix}-{i}" for i in range(300)]
    answers = await asyncio.gather(*(mux.execute("ECHO", v) for v in values))
    assert answers == [v.encode() for v in values]
    await mux.close()


async def test_an_error_answer_fails_only_its_command(redis_url: str) -> None:
    mux = mux_for(redis_url)
    key = uuid.uuid4().hex
    answers = await asyncio.gather(  # written together, answered in order
        mux.execute("SET", key, "x"),
        mux.execute("HGET", key, "f"),
        mux.execute("GET", key),
        return_exceptions=True,
    )
    assert answers[0] == b"OK" and answers[2] == b"x"
    assert isinstance(answers[1], ResponseError) and "WRONGTYPE" in str(answers[1])
    with pytest.raises(ResponseError):
        await mux.execute("HGET", key, "f")
    assert await mux.execute("GET", key) == b"x"
    await mux.close()


async def test_an_abandoned_command_does_not_hold_up_the_next(redis_url: str) -> None:
    mux = mux_for(redis_url)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await mux.execute("BLPOP", uuid.uuid4().hex, 5)  # would answer in 5 s
    async with asyncio.timeout(1.0):  # not behind the abandoned one: on a new connection
        assert await mux.execute("PING") == b"PONG"
    await mux.close()


async def test_a_killed_connection_fails_what_waits_and_the_next_command_reconnects(
    redis_url: str, admin: redis.Redis
) -> None:
    mux = mux_for(redis_url)
    name = f"mux-{uuid.uuid4().hex[:8]}"
    assert await mux.execute("CLIENT", "SETNAME", name) == b"OK"
    waiting = asyncio.ensure_future(mux.execute("BLPOP", uuid.uuid4().hex, 5))
    await asyncio.sleep(0.1)
    clients = await admin.client_list()
    (victim,) = [c for c in clients if c["name"] == name]
    await admin.client_kill_filter(_id=victim["id"])
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, 2)
    assert await mux.execute("PING") == b"PONG"
    await mux.close()


async def test_credentials_and_database(redis_url: str, admin: redis.Redis) -> None:
    user, password = f"mux{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys="*", commands=["+@all"]
    )
    key = uuid.uuid4().hex
    mux = mux_for(redis_url, username=user, password=password, db=3)
    assert await mux.execute("SET", key, "in-3") == b"OK"
    assert await admin.get(key) is None  # db 0
    in_three = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    assert await in_three.get(key) == b"in-3"
    await in_three.aclose()
    await mux.close()
    wrong = mux_for(redis_url, username=user, password="wrong")
    with pytest.raises(ResponseError):
        await wrong.execute("PING")
    await admin.acl_deluser(user)


async def test_commands_asked_while_connecting_run_authenticated_in_the_right_database(
    redis_url: str, admin: redis.Redis
) -> None:
    user, password = f"mux{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys="*", commands=["+@all"]
    )
    mux = mux_for(redis_url, username=user, password=password, db=3)
    prefix = uuid.uuid4().hex

    async def later(i: int) -> None:
        for _ in range(i):  # each a loop iteration later: some land while AUTH is answered
            await asyncio.sleep(0)
        assert await mux.execute("SET", f"{prefix}-{i}", "x") == b"OK"

    await asyncio.gather(*(later(i) for i in range(40)))
    in_three = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    assert await in_three.exists(*(f"{prefix}-{i}" for i in range(40))) == 40
    assert await admin.exists(*(f"{prefix}-{i}" for i in range(40))) == 0  # none in db 0
    await in_three.aclose()
    await mux.close()
    await admin.acl_deluser(user)


async def test_the_store_survives_an_emptied_script_cache(
    redis_url: str, admin: redis.Redis
) -> None:
    store = RedisStore(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await admin.script_flush()
    await store.put_mobile("d1", b"{}", 1000.0, 2000.0, 3000.0)
    await admin.script_flush()
    assert await store.consume_mobile("d1", 1500.0) == (MobileState.OK, b"{}")
    assert await store.consume_mobile("d1", 1500.0) == (MobileState.USED, None)
    await store.close()


async def test_an_unanswered_command_fails_at_its_deadline_with_those_behind_it(
    redis_url: str,
) -> None:
    mux = mux_for(redis_url, deadline=0.3)
    stuck = asyncio.ensure_future(mux.execute("BLPOP", uuid.uuid4().hex, 5))  # answers in 5 s
    await asyncio.sleep(0)
    behind = asyncio.ensure_future(mux.execute("PING"))
    async with asyncio.timeout(3):  # failed by the deadline, not by Redis's five seconds
        for waiting in (stuck, behind):
            with pytest.raises(RedisTimeoutError):
                await waiting
    assert await mux.execute("PING") == b"PONG"  # on a new connection
    await mux.close()


async def test_the_deadline_counts_from_when_each_command_is_asked(redis_url: str) -> None:
    mux = mux_for(redis_url, deadline=0.3)
    loop = asyncio.get_running_loop()
    assert await mux.execute("PING") == b"PONG"  # arms the timer for 0.3 s from now
    await asyncio.sleep(0.2)
    asked = loop.time()
    stuck = asyncio.ensure_future(mux.execute("BLPOP", uuid.uuid4().hex, 5))
    async with asyncio.timeout(3):  # the timer, finding the PING answered, moved on to it
        with pytest.raises(RedisTimeoutError):
            await stuck
    assert loop.time() - asked >= 0.3  # not failed by the PING's earlier deadline
    await mux.close()


async def test_commands_answered_in_time_never_trip_the_deadline(redis_url: str) -> None:
    mux = mux_for(redis_url, deadline=0.3)
    loop = asyncio.get_running_loop()
    end, sent = loop.time() + 0.8, 0
    while loop.time() < end:  # always a command in flight when the timer fires: it moves on
        assert await mux.execute("ECHO", str(sent)) == str(sent).encode()
        sent += 1
    await mux.close()


async def test_acknowledged_consumptions_do_not_queue_behind_each_others_wait(
    redis_url: str,
) -> None:
    # A standalone Redis with no replica and min_replicas_ack 1: every WAIT runs its whole
    # 200 ms. Were they on the one shared connection, Redis would hold each behind the one
    # before (8 x 200 ms, past the 500 ms bound: timeouts, and tokens used up for nothing).
    store = RedisStore(
        redis_url, prefix=f"t{uuid.uuid4().hex[:8]}:", min_replicas_ack=1, replica_ack_timeout=0.2
    )
    digests = [uuid.uuid4().hex for _ in range(8)]
    for digest in digests:
        await store.put_mobile(digest, b"{}", 1000.0, 2000.0, 3000.0)
    outcomes = await asyncio.gather(
        *(store.consume_mobile(d, 1500.0) for d in digests), return_exceptions=True
    )
    for outcome in outcomes:
        assert isinstance(outcome, StoreUnavailable), outcome
        assert outcome.details["reason"] == "not_replicated"  # not a timeout
    for digest in digests:  # each consumption undone: the client's retry can still use it
        assert await store.peek_mobile(digest, 1500.0) == (MobileState.OK, b"{}")
    await store.close()
