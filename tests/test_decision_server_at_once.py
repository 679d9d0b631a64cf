"""The decision listener's answers given at once (``DecisionServer.answer_at_once``): a reused
decision whose per-request checks are settled in memory is answered from ``data_received``,
without the connection's task. The same answers as the awaited path, and nothing it would refuse
is let through: the failure budget, a caregiver's relationship and the rate limits still decide.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestServer

from gateway.decision_server import MAX_QUEUED, DecisionServer
from tests.conftest import Gateway, GatewayFactory
from tests.otlp import PATH, OtlpReceiver
from tests.support import base_url, padded
from tests.test_decision_server import (
    SCORES,
    answers,
    ask,
    exchange,
    gw,
    listener,
    own_listener,
)

__all__ = ["gw", "listener"]  # fixtures, used by name

Answer = tuple[int, dict[str, str], bytes]


async def in_turn(
    port: int, *requests: bytes, before_close: Callable[[], None] | None = None
) -> tuple[list[Answer], bool]:
    """Send each request on one connection once the previous one's answer is in; the answers,
    and whether the gateway closed the connection after the last (``before_close`` runs while
    it is still open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got: list[Answer] = []
    raw = b""
    try:
        for request in requests:
            writer.write(request)
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    return got + answers(raw), True
                raw += chunk
                try:
                    parsed = answers(raw)
                except (KeyError, ValueError, IndexError):
                    continue
                if parsed:
                    got += parsed
                    raw = b""
                    break
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.1) == b""
        except TimeoutError:
            closed = False
        if before_close is not None:
            before_close()
        return got, closed
    finally:
        writer.close()


async def gone(server: DecisionServer) -> None:
    """Until the listener has no connection left (a closed one goes at its next turn)."""
    for _ in range(100):
        if not server.connections:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a connection stayed open")


def lookups(gw: Gateway) -> dict[str, float]:
    """The decision cache's lookups by result, as /metrics shows them."""
    gw.runtime.metrics.flush()
    return {
        s.labels["result"]: s.value
        for family in gw.runtime.metrics.registry.collect()
        if family.name == "gateway_cache_lookups"
        for s in family.samples
        if s.name == "gateway_cache_lookups_total" and s.labels["cache"] == "decision"
    }


async def test_a_reused_decision_is_answered_at_once_as_the_awaited_path_answers(
    gw: Gateway, listener: DecisionServer
) -> None:
    key = await gw.key()
    asks = [ask(key, "/v1/users/usr_a/scores", f"X-Request-Id: r-{i}") for i in range(3)]
    first, _ = await in_turn(listener.port, asks[0])  # decided (awaited), then kept
    await gone(listener)
    tasks: list[object] = []

    def note_tasks() -> None:
        tasks.extend(connection._task for connection in listener.connections)

    got, closed = await in_turn(listener.port, *asks[1:], before_close=note_tasks)
    got = first + got
    assert [status for status, _, _ in got] == [200, 200, 200] and not closed
    assert [h["X-Request-Id"] for _, h, _ in got] == ["r-0", "r-1", "r-2"]
    identity = [{k: v for k, v in h.items() if k.startswith("X-Auth-")} for _, h, _ in got]
    assert identity[0]["X-Auth-Account"] == "acc_1" and identity == [identity[0]] * 3
    assert [len(body) for _, _, body in got] == [0, 0, 0]
    # Looked up once each: the first a miss (decided, awaited), the others hits used at once.
    assert lookups(gw) == {"miss": 1.0, "hit": 2.0}
    # The second connection needed no task: both its answers were given at once.
    assert tasks == [None]


async def test_answers_at_once_and_awaited_keep_the_order_of_pipelined_requests(
    gw: Gateway, listener: DecisionServer
) -> None:
    key, other = await gw.key(), await gw.key()
    await in_turn(listener.port, ask(key))  # key's decision is kept; other's is not
    data = (
        ask(key, "/v1/users/usr_a/scores", "X-Request-Id: at-once")
        + ask(other, "/v1/users/usr_a/scores", "X-Request-Id: decided")
        + ask(key, "/v1/users/usr_a/scores", "X-Request-Id: after")
        + ask(None, "/v1/users/usr_a/scores", "X-Request-Id: refused")
    )
    raw, closed = await exchange(listener.port, data, expect=4)
    got = answers(raw)
    assert [(s, h["X-Request-Id"]) for s, h, _ in got] == [
        (200, "at-once"),
        (200, "decided"),
        (200, "after"),
        (401, "refused"),
    ]
    assert not closed


async def test_connection_close_on_an_answer_at_once_closes_after_it(
    gw: Gateway, listener: DecisionServer
) -> None:
    key = await gw.key()
    got, closed = await in_turn(
        listener.port, ask(key), ask(key, "/v1/users/usr_a/scores", "Connection: close")
    )
    assert [status for status, _, _ in got] == [200, 200]
    assert got[1][1]["Connection"] == "close" and closed
    assert lookups(gw) == {"miss": 1.0, "hit": 1.0}


@pytest.fixture
async def budgeted(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> AsyncIterator[tuple[Gateway, DecisionServer]]:
    """A decision listener whose gateway budgets failed authentications (2 at once)."""
    abuse = {"enabled": True, "burst": 2, "failures_per_minute": 1}
    async with own_listener(make_gateway, upstream, abuse=abuse) as (gw, server):
        yield gw, server


async def test_an_address_known_within_its_budget_gets_reused_decisions_at_once(
    budgeted: tuple[Gateway, DecisionServer],
) -> None:
    gw, server = budgeted
    key = await gw.key()
    await in_turn(server.port, ask(key))  # decided; the address now known within budget
    await gone(server)
    tasks: list[object] = []

    def note_tasks() -> None:
        tasks.extend(connection._task for connection in server.connections)

    got, _ = await in_turn(server.port, ask(key), ask(key), before_close=note_tasks)
    assert [status for status, _, _ in got] == [200, 200]
    assert tasks == [None]


async def test_an_address_past_its_budget_is_refused_for_a_reused_decision_too(
    budgeted: tuple[Gateway, DecisionServer],
) -> None:
    gw, server = budgeted
    key = await gw.key()
    got, _ = await in_turn(
        server.port, ask(key), ask(key), ask("sk_live_nope"), ask("sk_live_nope"), ask(key)
    )
    assert [status for status, _, _ in got] == [200, 200, 401, 401, 429]
    assert json.loads(got[4][2])["details"]["reason"] == "failed_authentications"


def caregiver_token(key: str, key_id: str, now: float) -> str:
    claims = {"sub": "mem_1", "act": "mem_2", "iat": int(now), "exp": int(now) + 600, "scopes": []}
    return jwt.encode(claims, key.encode(), algorithm="HS256", headers={"kid": key_id})


async def test_a_revoked_caregiver_is_refused_while_the_decision_is_still_kept(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    relationships = {"positive_ttl": "100ms"}
    async with own_listener(make_gateway, upstream, relationships=relationships) as (gw, server):
        store = gw.runtime.store
        await store.set_relationship("acc_1", "mem_1", "mem_2", True)
        key, record = await gw.runtime.keys.create("acc_1", "live")
        token = caregiver_token(key, record.key_id, gw.clock.now())
        scores = ask(token, "/v1/users/mem_1/scores")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            got = []
            for step in ("granted", "again", "revoked"):
                if step == "revoked":
                    await store.set_relationship("acc_1", "mem_1", "mem_2", False)
                    # Past the relationship's 100 ms cache, within the decision's 1 s.
                    gw.clock.advance(0.5)
                writer.write(scores)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                got.append((int(head.split()[1]), body))
        finally:
            writer.close()
    assert [status for status, _ in got] == [200, 200, 403]
    assert json.loads(got[2][1])["details"]["reason"] == "relationship_inactive"
    assert lookups(gw)["hit"] == 2.0  # the refused one was a reused decision


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "in-turn"])
async def test_rate_limits_count_reused_decisions_and_refusals_carry_their_headers(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], pipelined: bool
) -> None:
    """Pipelined (one write: all on the task) or in turn (the later ones reused decisions the
    shortcut leaves to the task, as the rule's group is limited), every request is counted."""
    limits = {"rules": [{"group": "default", "per": "credential", "limit": 2, "period": "10s"}]}
    async with own_listener(make_gateway, upstream, rate_limits=limits) as (gw, server):
        key = await gw.key()
        if pipelined:
            raw, _ = await exchange(server.port, ask(key) * 3, expect=3)
            got = answers(raw)
        else:
            got, _ = await in_turn(server.port, ask(key), ask(key), ask(key))
    assert [status for status, _, _ in got] == [200, 200, 429]
    assert [h["RateLimit-Remaining"] for _, h, _ in got] == ["1", "0", "0"]
    assert got[2][1]["RateLimit-Limit"] == "2" and int(got[2][1]["Retry-After"]) > 0
    assert json.loads(got[2][2])["error"] == "rate_limited"


@pytest.mark.parametrize(
    "uncached",
    [
        pytest.param(set(), id="all-at-once"),
        # other's decision is made on the task, then kept
        pytest.param({5, MAX_QUEUED + 7}, id="some-on-the-task"),
    ],
)
async def test_more_pipelined_requests_than_the_parser_holds_are_all_answered(
    gw: Gateway, listener: DecisionServer, uncached: set[int]
) -> None:
    """The parser stops at MAX_QUEUED unanswered requests and holds the rest of the read; when
    the ones it gave were answered at once (all of them, or some and the task the rest), what
    it held is parsed and answered too, without the client sending another byte."""
    key, other = await gw.key(), await gw.key()
    await in_turn(listener.port, ask(key))  # key's decision is kept
    count = 3 * MAX_QUEUED + 5
    data = b"".join(
        ask(other if i in uncached else key, SCORES, f"X-Request-Id: r-{i}") for i in range(count)
    )
    raw, closed = await exchange(listener.port, data, expect=count)
    got = answers(raw)
    assert [h["X-Request-Id"] for _, h, _ in got] == [f"r-{i}" for i in range(count)]
    assert {status for status, _, _ in got} == {200} and not closed


async def test_with_tracing_on_reused_decisions_are_traced_step_by_step(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], aiohttp_server: Any
) -> None:
    """Tracing sends every request down the awaited path: a reused decision's trace has its
    authentication and authorization steps as the first decision's has, each request its own
    root span."""
    receiver = OtlpReceiver()
    collector: TestServer = await aiohttp_server(receiver.app())
    tracing = {"enabled": True, "endpoint": base_url(collector) + PATH}
    async with own_listener(make_gateway, upstream, tracing=tracing) as (gw, server):
        key = await gw.key()
        asks = [ask(key, SCORES, f"X-Request-Id: t-{i}") for i in range(3)]
        got, _ = await in_turn(server.port, *asks)
        assert [status for status, _, _ in got] == [200, 200, 200]
        assert await asyncio.to_thread(gw.runtime.tracer.flush, 30)
    requests = [s for s in receiver.spans if "gateway.request_id" in s.attributes]
    assert sorted(str(s.attributes["gateway.request_id"]) for s in requests) == [
        "t-0",
        "t-1",
        "t-2",
    ]
    assert [s.parent_span_id for s in requests] == ["", "", ""]
    assert len({s.trace_id for s in requests}) == 3
    for root in requests:
        steps = sorted(s.name for s in receiver.children(root))
        assert steps == ["gateway.authenticate", "gateway.authorize"], steps


async def slow_reader(listener: DecisionServer, key: str) -> tuple[asyncio.StreamWriter, Any]:
    """A connection whose key's decision is kept (answers to it now given at once), with small
    socket buffers on both ends, whose client reads nothing more; its writer and the
    listener's side of it."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the window is agreed
    client.setblocking(False)
    await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", listener.port))
    reader, writer = await asyncio.open_connection(sock=client)
    writer.write(ask(key))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    (connection,) = listener.connections
    assert connection.transport is not None
    server_socket = connection.transport.get_extra_info("socket")
    server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reader._transport.pause_reading()  # type: ignore[attr-defined]  # read nothing more
    return writer, connection


async def test_a_client_that_stops_reading_its_answers_is_cut_off_once_idle(
    gw: Gateway, listener: DecisionServer
) -> None:
    """Answers pile up unread (below the point where the connection stops taking requests),
    then the client sends nothing more: once idle for ``header_timeout`` (300 ms here) the
    connection is cut, not closed politely, which would wait for the client to read them."""
    key = await gw.key()
    writer, connection = await slow_reader(listener, key)
    for _ in range(150):  # about 40 KiB of answers: under the 64 KiB that pauses writing
        writer.write(ask(key))
        await asyncio.sleep(0.002)
    assert connection.transport is not None
    assert connection.transport.get_write_buffer_size() > 0  # answers the client has not read
    for _ in range(300):
        if not listener.connections:
            break
        await asyncio.sleep(0.01)
    assert not listener.connections
    writer.close()


async def test_answers_held_for_a_client_that_does_not_read_stay_bounded(
    gw: Gateway, listener: DecisionServer
) -> None:
    """Thousands of tiny pipelined requests, each answerable at once, from a client that reads
    nothing: the answers the gateway holds unwritten stay near the transport's high-water mark
    (64 KiB) plus MAX_QUEUED answers, however much one read brought."""
    key = await gw.key()
    writer, connection = await slow_reader(listener, key)
    transport = connection.transport
    assert transport is not None
    answer_size = 400  # more than one answer's bytes (about 300)
    writer.write(ask(key) * 3000)
    held = 0
    for _ in range(50):
        await asyncio.sleep(0.01)
        held = max(held, transport.get_write_buffer_size())
    assert 0 < held <= 64 * 1024 + (MAX_QUEUED + 1) * answer_size, held
    writer.close()


async def test_a_reused_decision_for_an_environment_with_no_upstream_is_still_503(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    """The decision is kept before the upstream is looked for: asked again, the shortcut must
    leave it to the awaited path, which refuses it again (no identity for the proxy to copy)."""
    async with own_listener(make_gateway, upstream) as (gw, server):  # a live upstream only
        sandbox, _ = await gw.runtime.keys.create("acc_1", "sandbox")
        got, _ = await in_turn(server.port, ask(sandbox), ask(sandbox))
    assert [status for status, _, _ in got] == [503, 503]
    assert [json.loads(body)["details"]["reason"] for _, _, body in got] == ["no_upstream"] * 2
    assert all("X-Auth-Account" not in headers for _, headers, _ in got)


async def test_header_bytes_at_the_limit_pass_and_one_more_is_431_on_both_paths(
    gw: Gateway, listener: DecisionServer
) -> None:
    """``limits.max_header_bytes`` to the byte: a first (awaited) decision and a reused one
    (answered at once) with headers of exactly the limit are allowed; one byte more is 431."""
    key, other = await gw.key(), await gw.key()
    limit = gw.runtime.settings.limits.max_header_bytes
    target = "GET /decisions HTTP/1.1"

    def at(size: int, token: str) -> bytes:
        headers = ["Host: gw", f"X-Original-URI: {SCORES}", "X-Original-Method: GET"]
        return padded(target, [*headers, f"Authorization: Bearer {token}"], size)

    got, _ = await in_turn(
        listener.port, at(limit, other), ask(key), at(limit, key), at(limit + 1, key)
    )
    assert [status for status, _, _ in got] == [200, 200, 200, 431]
    assert json.loads(got[3][2])["error"] == "headers_too_large"
