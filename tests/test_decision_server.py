"""The decision listener (``decision.listen``) on the wire: raw sockets, the real runtime.

What the shared decision tests (tests/functional/test_decision.py, run on both listeners) do
not reach: keep-alive and pipelining, HTTP/1.0, the listener's own limits (header size, idle
connections, bodies), paths outside the prefix, HEAD, upgrades, shutdown, and the config.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.config import ConfigError, Listener
from gateway.decision_server import MAX_QUEUED, DecisionServer
from gateway.runtime import build_runtime
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url, raw_http, status_of

SCORES = "/v1/users/usr_a/scores"


@pytest.fixture
async def gw(make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]) -> Gateway:
    url = base_url(upstream[1])
    limits = {"header_timeout": "300ms", "body_timeout": "300ms", "max_body_bytes": 1000}
    return await make_gateway(
        settings=make_settings(
            url, url, decision={"enabled": True, "proxy": "nginx"}, limits=limits
        )
    )


@pytest.fixture
async def listener(gw: Gateway) -> AsyncIterator[DecisionServer]:
    server = DecisionServer(gw.current, gw.runtime.settings)
    await server.start(Listener(host="127.0.0.1", port=0), None, reuse_port=False)
    yield server
    await server.close(timeout=5)


@asynccontextmanager
async def own_listener(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], **extra: Any
) -> AsyncIterator[tuple[Gateway, DecisionServer]]:
    """A gateway with decision mode and ``extra`` settings, and a decision listener for it."""
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(url, decision={"enabled": True, "proxy": "nginx"}, **extra)
    )
    server = DecisionServer(gw.current, gw.runtime.settings)
    await server.start(Listener(host="127.0.0.1", port=0), None, reuse_port=False)
    try:
        yield gw, server
    finally:
        await server.close(timeout=5)


def counted_statuses(gw: Gateway) -> set[str]:
    """The statuses ``gateway_requests_total`` counted."""
    metrics = gw.runtime.metrics
    metrics.flush()
    return {
        s.labels["status"]
        for family in metrics.registry.collect()
        if family.name == "gateway_requests"
        for s in family.samples
        if s.name == "gateway_requests_total"
    }


def ask(key: str | None, uri: str = SCORES, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET /decisions HTTP/{version}", "Host: gw", f"X-Original-URI: {uri}"]
    lines += ["X-Original-Method: GET", *extra]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a stream of answers (each with Content-Length) into (status, headers, body)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers["Content-Length"])
        out.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


async def exchange(port: int, data: bytes, *, expect: int) -> tuple[bytes, bool]:
    """Send ``data`` on one connection, read ``expect`` answers; and whether the gateway closed
    the connection after them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    raw = b""
    try:
        while len(re.findall(rb"HTTP/1\.1 \d{3} ", raw)) < expect or not _complete(raw):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                return raw, True
            raw += chunk
        try:
            # shorter than limits.header_timeout (300 ms), which closes an idle connection
            closed = await asyncio.wait_for(reader.read(1), 0.1) == b""
        except TimeoutError:
            closed = False
        return raw, closed
    finally:
        writer.close()


def _complete(raw: bytes) -> bool:
    try:
        answers(raw)
    except (KeyError, ValueError, IndexError):
        return False
    return True


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    gw: Gateway, listener: DecisionServer
) -> None:
    key = await gw.key()
    data = (
        ask(key, SCORES, "X-Request-Id: first-request")
        + ask(None, SCORES, "X-Request-Id: second-request")
        + ask(key, "/v1/users/usr_b/scores", "X-Request-Id: third-request")
    )
    raw, closed = await exchange(listener.port, data, expect=3)
    got = answers(raw)
    assert [status for status, _, _ in got] == [200, 401, 200]
    assert [h["X-Request-Id"] for _, h, _ in got] == [
        "first-request",
        "second-request",
        "third-request",
    ]
    assert got[0][1]["X-Auth-Account"] == "acc_1" and got[0][2] == b""
    assert json.loads(got[1][2])["error"] == "invalid_token"
    assert got[1][1]["WWW-Authenticate"].startswith('Bearer realm="gateway"')
    assert "X-Auth-Account" not in got[1][1]
    assert all("Date" in h for _, h, _ in got)
    assert not closed  # HTTP/1.1: kept alive
    assert gw.recorder.seen == []  # a decision never forwards


@pytest.mark.parametrize(
    ("extra", "kept", "connection"),
    [((), False, "close"), (("Connection: keep-alive",), True, "keep-alive")],
)
async def test_http10_closes_unless_asked_to_keep_alive(
    gw: Gateway, listener: DecisionServer, extra: tuple[str, ...], kept: bool, connection: str
) -> None:
    key = await gw.key()
    raw, closed = await exchange(listener.port, ask(key, SCORES, *extra, version="1.0"), expect=1)
    status, headers, _ = answers(raw)[0]
    assert status == 200 and headers["Connection"] == connection
    assert closed is not kept


async def test_connection_close_is_honoured(gw: Gateway, listener: DecisionServer) -> None:
    key = await gw.key()
    raw, closed = await exchange(listener.port, ask(key, SCORES, "Connection: close"), expect=1)
    assert answers(raw)[0][1]["Connection"] == "close" and closed


async def test_paths_outside_the_prefix_are_404_before_any_credential_is_read(
    gw: Gateway, listener: DecisionServer
) -> None:
    key = await gw.key()
    for target in (SCORES, "/decisionsX", "/", "/.well-known/jwks.json"):
        raw = await raw_http(
            listener.port,
            f"GET {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        status, _, body = answers(raw)[0]
        assert (status, json.loads(body)["error"]) == (404, "not_found"), target
    assert gw.recorder.seen == []


async def test_headers_over_the_limit_are_431(gw: Gateway, listener: DecisionServer) -> None:
    key = await gw.key()
    big = "X-Padding: " + "a" * gw.runtime.settings.limits.max_header_bytes
    raw, _ = await exchange(listener.port, ask(key, SCORES, big), expect=1)
    status, _, body = answers(raw)[0]
    assert (status, json.loads(body)["error"]) == (431, "headers_too_large")


async def test_bytes_the_parser_refuses_get_the_json_400_then_the_connection_closes(
    gw: Gateway, listener: DecisionServer, log_lines: Any
) -> None:
    key = await gw.key()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(ask(key))
    assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
    bad = f"GET /decisions HTTP/1.1\r\nAuth(orization: Bearer {key}\r\n\r\n".encode()
    writer.write(bad + ask(key))
    raw = await asyncio.wait_for(reader.read(), 5)  # until the gateway closes
    writer.close()
    got = answers(raw)
    assert [status for status, _, _ in got] == [400]  # what followed is never read
    assert json.loads(got[0][2])["details"]["reason"] == "malformed_http"
    assert got[0][1]["Connection"] == "close" and key.encode() not in raw
    assert key not in log_lines.getvalue() and key[8:20] not in log_lines.getvalue()
    assert "request refused by the HTTP parser" in log_lines.getvalue()


async def test_a_body_is_read_and_dropped(gw: Gateway, listener: DecisionServer) -> None:
    key = await gw.key()
    head = ask(key).removesuffix(b"\r\n\r\n")
    with_body = head + b"\r\nContent-Length: 5\r\n\r\nhello"
    chunked = head + b"\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    raw, closed = await exchange(listener.port, with_body + chunked + ask(key), expect=3)
    assert [status for status, _, _ in answers(raw)] == [200, 200, 200] and not closed
    assert gw.recorder.seen == []


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_body_over_the_limit_is_413_and_closes(
    gw: Gateway, listener: DecisionServer, framing: str
) -> None:
    key = await gw.key()
    head = ask(key).removesuffix(b"\r\n\r\n")
    body = b"a" * 1500  # limits.max_body_bytes is 1000 here
    if framing == "length":
        data = head + b"\r\nContent-Length: 1500\r\n\r\n" + body
    else:
        data = head + b"\r\nTransfer-Encoding: chunked\r\n\r\n5dc\r\n" + body + b"\r\n0\r\n\r\n"
    raw, closed = await exchange(listener.port, data + ask(key), expect=1)
    got = answers(raw)
    assert [(s, json.loads(b)["error"]) for s, _, b in got] == [(413, "payload_too_large")]
    assert got[0][1]["Connection"] == "close" and closed


async def test_a_body_announced_over_the_limit_is_413_on_the_public_listener_too(
    gw: Gateway,
) -> None:
    """The two listeners answer alike: 413 before the decision, not the decision's 200/403."""
    key = await gw.key()
    head = ask(key).removesuffix(b"\r\n\r\n")
    raw = await raw_http(gw.port, head + b"\r\nContent-Length: 1500\r\n\r\n" + b"a" * 1500)
    assert status_of(raw) == 413, raw[:200]
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"] == "payload_too_large"


async def test_expect_100_continue_is_answered_before_the_body(
    gw: Gateway, listener: DecisionServer
) -> None:
    key = await gw.key()
    head = ask(key).removesuffix(b"\r\n\r\n") + b"\r\nContent-Length: 3\r\nExpect: 100-continue"
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(head + b"\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"abc")
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert status_of(final) == 200


async def test_a_body_that_stalls_is_408_and_closes(gw: Gateway, listener: DecisionServer) -> None:
    key = await gw.key()
    head = ask(key).removesuffix(b"\r\n\r\n") + b"\r\nContent-Length: 10\r\n\r\nabc"
    raw, closed = await exchange(listener.port, head, expect=1)  # 7 bytes never come
    status, _, body = answers(raw)[0]
    assert (status, json.loads(body)["error"]) == (408, "request_timeout") and closed


async def test_an_idle_or_slow_connection_is_closed(gw: Gateway, listener: DecisionServer) -> None:
    """``limits.header_timeout`` (300 ms here): no complete headers that long after opening, or
    after the previous answer, and the connection is closed."""
    key = await gw.key()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(ask(key))
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert status_of(first) == 200
    writer.write(b"GET /decisions HTTP/1.1\r\nHost: gw\r\n")  # and never the rest
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
    writer.close()


async def test_head_gets_the_headers_of_the_answer_without_its_body(
    gw: Gateway, listener: DecisionServer
) -> None:
    raw = await raw_http(
        listener.port,
        b"HEAD /decisions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        b"X-Original-Method: GET\r\nX-Original-URI: /v1/users/usr_a/scores\r\n\r\n",
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == 401 and body == b""
    assert int(re.findall(rb"Content-Length: (\d+)", head)[0]) > 0


async def test_an_upgrade_request_is_answered_then_the_connection_closes(
    gw: Gateway, listener: DecisionServer
) -> None:
    key = await gw.key()
    upgrade = ask(key, SCORES, "Connection: Upgrade", "Upgrade: websocket")
    raw, closed = await exchange(listener.port, upgrade + ask(key), expect=1)
    got = answers(raw)
    assert [status for status, _, _ in got] == [200] and got[0][1]["Connection"] == "close"
    assert closed


async def test_decisions_are_counted_like_the_public_listeners(
    gw: Gateway, listener: DecisionServer
) -> None:
    key = await gw.key()
    await exchange(listener.port, ask(key) + ask(None), expect=2)
    metrics = gw.runtime.metrics
    metrics.flush()
    samples = {
        (s.labels["status"], s.labels["credential"]): s.value
        for family in metrics.registry.collect()
        if family.name == "gateway_requests"
        for s in family.samples
        if s.name == "gateway_requests_total"
    }
    assert samples.get(("200", "api_key")) == 1 and samples.get(("401", "none")) == 1, samples


async def test_close_ends_idle_connections_and_refuses_new_ones(gw: Gateway) -> None:
    server = DecisionServer(gw.current, gw.runtime.settings)
    await server.start(Listener(host="127.0.0.1", port=0), None, reuse_port=False)
    port = server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ask(await gw.key()))
    assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
    await server.close(timeout=5)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the idle connection was closed
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    assert not server.connections


@pytest.mark.parametrize(
    ("decision", "error"),
    [
        (
            {"listen": {"port": 9001}},
            "decision.listen: a decision listener needs decision.enabled: true",
        ),
        (
            {"enabled": True, "proxy": "nginx", "listen": {"port": 8080}},
            "decision.listen.port: port 8080 is already listen.port",
        ),
        (
            {"enabled": True, "proxy": "nginx", "listen": {"port": 9090}},
            "decision.listen.port: port 9090 is already admin.port",
        ),
        (
            {"enabled": True},
            "decision.proxy: is required with decision.enabled: the front proxy that asks, one "
            "of nginx, ingress-nginx, traefik, envoy",
        ),
        (
            {"enabled": True, "proxy": "haproxy"},
            "decision.proxy: 'haproxy' is not one of nginx, ingress-nginx, traefik, envoy",
        ),
    ],
)
def test_config_errors_name_the_field(decision: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings("http://127.0.0.1:1", decision=decision)
    assert str(raised.value).startswith(error), str(raised.value)


async def test_many_pipelined_requests_in_one_write_are_all_answered_in_order(
    gw: Gateway, listener: DecisionServer
) -> None:
    """More requests than the parser holds unanswered (MAX_QUEUED): the rest stay bytes until
    answers drain, then are parsed; none is lost, none answered out of order."""
    key = await gw.key()
    count = 3 * MAX_QUEUED + 5
    data = b"".join(ask(key, SCORES, f"X-Request-Id: request-{i}") for i in range(count))
    raw, closed = await exchange(listener.port, data, expect=count)
    got = answers(raw)
    assert [h["X-Request-Id"] for _, h, _ in got] == [f"request-{i}" for i in range(count)]
    assert {status for status, _, _ in got} == {200} and not closed


async def test_a_refused_request_with_a_body_keeps_the_connection_in_step(
    gw: Gateway, listener: DecisionServer
) -> None:
    """A 404 (or 431) answered for a request with a body: the body is read first, so the next
    request on the connection is parsed as a request, never from the body's bytes."""
    key = await gw.key()
    smuggled = ask(key, "/v1/users/usr_b/scores", "X-Request-Id: smuggled")
    outside = (
        f"POST /elsewhere HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(smuggled)}\r\n\r\n"
    ).encode() + smuggled
    raw, closed = await exchange(listener.port, outside + ask(key), expect=2)
    got = answers(raw)
    assert [status for status, _, _ in got] == [404, 200] and not closed
    assert all(h.get("X-Request-Id") != "smuggled" for _, h, _ in got)


async def test_a_connection_lost_mid_body_ends_its_request_at_once(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], log_lines: io.StringIO
) -> None:
    """And it is the client's doing, counted and logged as the public listener's 400
    ``body_incomplete``: never a 500 with an error line (it fed the 5xx panel and alerts)."""
    async with own_listener(make_gateway, upstream, limits={"body_timeout": "60s"}) as (
        gw,
        server,
    ):
        head = ask(await gw.key()).removesuffix(b"\r\n\r\n") + b"\r\nContent-Length: 1000\r\n\r\n"
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(head + b"only part of it")
        await writer.drain()
        for _ in range(100):  # the request is being answered, waiting for its body
            if gw.runtime.requests.active:
                break
            await asyncio.sleep(0.01)
        assert gw.runtime.requests.active == 1
        writer.close()
        for _ in range(200):  # well within 2 s, not the 60 s body timeout
            if not gw.runtime.requests.active and not server.connections:
                break
            await asyncio.sleep(0.01)
        assert gw.runtime.requests.active == 0 and not server.connections
        assert counted_statuses(gw) == {"400"}
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines
    access = [line for line in lines if line["msg"] == "access"]
    assert [(line["status"], line["error"]) for line in access] == [(400, "invalid_request")]


async def test_a_reload_does_not_move_the_prefix_a_listener_routes_by(
    gw: Gateway, listener: DecisionServer, upstream: tuple[Any, TestServer]
) -> None:
    """The prefix and the front proxy are read when a listener starts (a reload that changes
    them warns that it needs a restart): decisions are asked as before, at the old prefix in
    the old proxy's headers, on the public listener and the decision listener alike."""
    key = await gw.key()
    url = base_url(upstream[1])
    moved = make_settings(url, url, decision={"enabled": True, "proxy": "envoy", "prefix": "/auth"})
    gw.current.runtime = build_runtime(moved, clock=gw.clock, store=gw.runtime.store)
    asked = {"X-Original-Method": "GET", "X-Original-URI": SCORES, "Authorization": f"Bearer {key}"}
    public = await gw.client.get("/decisions", headers=asked)
    assert public.status == 200 and public.headers["X-Auth-Account"] == "acc_1"
    lines = "".join(f"{name}: {value}\r\n" for name, value in asked.items())
    raw = await raw_http(
        listener.port,
        f"GET /decisions HTTP/1.1\r\nHost: gw\r\n{lines}Connection: close\r\n\r\n".encode(),
    )
    status, headers, _ = answers(raw)[0]
    assert status == 200 and headers["X-Auth-Account"] == "acc_1"


async def test_a_reload_applies_the_size_limits_the_listener_checks(
    gw: Gateway, listener: DecisionServer, upstream: tuple[Any, TestServer]
) -> None:
    """The header and body sizes are checked with the current config, as on the public
    listener (they used to stay what the listener started with, with no warning)."""
    key = await gw.key()
    padding = "X-Padding: " + "a" * 3000
    with_body = ask(key, SCORES, "Content-Length: 800") + b"b" * 800
    for request in (ask(key, SCORES, padding), with_body):
        fits, _ = await exchange(listener.port, request, expect=1)
        assert answers(fits)[0][0] == 200
    url = base_url(upstream[1])
    limits = {"header_timeout": "300ms", "body_timeout": "300ms"}
    tighter = make_settings(
        url,
        url,
        decision={"enabled": True, "proxy": "nginx"},
        limits={**limits, "max_header_bytes": 2048, "max_body_bytes": 500},
    )
    gw.current.runtime = build_runtime(tighter, clock=gw.clock, store=gw.runtime.store)
    raw, _ = await exchange(listener.port, ask(key, SCORES, padding), expect=1)
    status, _, answer = answers(raw)[0]
    assert (status, json.loads(answer)["details"]["limit"]) == (431, 2048)
    raw, _ = await exchange(listener.port, with_body, expect=1)
    status, _, answer = answers(raw)[0]
    assert (status, json.loads(answer)["details"]["limit"]) == (413, 500)


async def test_the_parser_holds_a_bounded_number_of_unanswered_requests(
    gw: Gateway, listener: DecisionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While answers wait (held back here), a write of many tiny pipelined requests is parsed
    only up to MAX_QUEUED requests; the rest stays bytes until answers drain: a client cannot
    make one connection hold thousands of parsed requests."""
    key = await gw.key()
    gate = asyncio.Event()
    answer = listener.answer

    async def held(*args: Any) -> tuple[bytes, bool]:
        await gate.wait()
        return await answer(*args)

    monkeypatch.setattr(listener, "answer", held)
    count = 10 * MAX_QUEUED
    data = b"".join(ask(key, SCORES, f"X-Request-Id: request-{i}") for i in range(count))
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(0.2)  # everything sent has arrived and been parsed as far as it goes
    (connection,) = listener.connections
    held_back = len(connection._queue)
    gate.set()
    raw = b""
    while raw.count(b"HTTP/1.1 200 ") < count:
        raw += await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    assert 0 < held_back <= MAX_QUEUED
    assert [h["X-Request-Id"] for _, h, _ in answers(raw)] == [f"request-{i}" for i in range(count)]


async def test_a_connection_idle_after_a_slow_answer_is_still_closed(
    gw: Gateway, listener: DecisionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle check finds the connection busy (an answer slower than header_timeout, 300 ms
    here), waits, and still closes it once it has been idle that long after the answer."""
    key = await gw.key()
    answer = listener.answer

    async def slow(*args: Any) -> tuple[bytes, bool]:
        await asyncio.sleep(0.5)
        return await answer(*args)

    monkeypatch.setattr(listener, "answer", slow)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(ask(key))
    assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, idle after the answer
    writer.close()


async def test_the_idle_time_counts_from_the_last_answer(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    """``header_timeout`` (1 s here) counts from the previous answer, not from the opening: a
    keep-alive connection that asks again 0.6 s after an answer, 1.3 s after it opened, is
    answered."""
    async with own_listener(make_gateway, upstream, limits={"header_timeout": "1s"}) as (
        gw,
        server,
    ):
        key = await gw.key()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0.7)
        writer.write(ask(key))
        assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
        await asyncio.sleep(0.6)
        writer.write(ask(key))
        assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
        writer.close()


async def test_a_client_that_never_reads_its_answers_is_cut_off(
    gw: Gateway, listener: DecisionServer
) -> None:
    """Requests keep coming, answers are never read: once the answers back up (the socket's
    buffers full), the gateway waits ``header_timeout`` (300 ms here) for the client to read,
    then cuts the connection, rather than holding it and its queued requests forever."""
    key = await gw.key()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, limit=1024)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    burst = ask(key) * 50

    async def flood() -> None:
        for _ in range(20_000):
            writer.write(burst)
            await writer.drain()

    with pytest.raises(ConnectionError):
        await asyncio.wait_for(flood(), 30)
    writer.close()
    assert len(reader._buffer) > 0  # type: ignore[attr-defined]  # answers it never read


def test_an_identity_block_is_kept_per_principal_object_and_renderer(gw: Gateway) -> None:
    """A reused decision's principal finds its encoded identity headers again (the same bytes
    object); an equal principal object of its own, or another renderer (a reload's), gets them
    rendered for it; the kept blocks are bounded."""
    from dataclasses import replace

    from gateway import decision_server
    from gateway.mutate.headers import IdentityHeaders
    from gateway.principal import Principal
    from tests.kinds import K

    server = DecisionServer(gw.current, gw.runtime.settings)
    runtime = gw.runtime
    principal = Principal("acc_1", K.USER_TOKEN, "live", "usr_a", user="usr_a")
    block = server._identity_block(runtime, principal)
    assert b"X-Auth-Account: acc_1\r\n" in block and b"X-Auth-User: usr_a\r\n" in block
    assert server._identity_block(runtime, principal) is block
    twin = replace(principal)
    assert twin == principal and twin is not principal
    assert server._identity_block(runtime, twin) == block
    names = runtime.settings.headers.model_copy(update={"account": "X-Other-Account"})
    reloaded = replace(runtime, identity=IdentityHeaders(names))
    assert b"X-Other-Account: acc_1\r\n" in server._identity_block(reloaded, principal)
    for i in range(decision_server.MAX_BLOCKS + 1):
        server._identity_block(runtime, replace(principal, token_id=str(i)))
    assert len(server._blocks) <= decision_server.MAX_BLOCKS


async def test_a_decision_cut_off_at_shutdown_is_logged_as_such(
    gw: Gateway, log_lines: Any
) -> None:
    """A decision still running when :meth:`DecisionServer.close` runs out of time (here: its
    body never comes) is cut off: its access line says so (status 499, error ``shutdown``),
    as the public listener's, and the metrics count no 500 for it."""
    server = DecisionServer(gw.current, gw.runtime.settings)
    await server.start(Listener(host="127.0.0.1", port=0), None, reuse_port=False)
    key = await gw.key()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(ask(key).removesuffix(b"\r\n\r\n") + b"\r\nContent-Length: 10\r\n\r\nabc")
    await writer.drain()
    await asyncio.sleep(0.05)  # the body is being waited for (body_timeout: 300 ms)
    await server.close(timeout=0.05)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # no answer: cut off
    writer.close()
    access = [
        line
        for line in map(json.loads, log_lines.getvalue().splitlines())
        if line["logger"] == "gateway.access"
    ]
    assert [(line["status"], line["error"]) for line in access] == [(499, "shutdown")]
    assert counted_statuses(gw) == {"499"}
