"""Faults, bounded in time and on loopback only: Redis stopped or slow, upstreams that refuse,
reset or stall, clients that stall, and a concurrency cap that sheds instead of queueing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest

from gateway.stores.redis import RedisStore
from tests.conftest import GatewayFactory, make_settings
from tests.support import RedisServer, base_url, free_port, redis_asleep, status_of

SCORES = "/v1/users/usr_a/scores"


def url_of(server: TestServer) -> str:
    return base_url(server)


class RawUpstream:
    """A TCP server that misbehaves on purpose: ``reset`` closes before any response,
    ``truncate`` promises 1000 bytes and sends 100."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.accepted = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.settimeout(2)
            try:
                conn.recv(65536)
                if self.mode == "truncate":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n" + b"x" * 100
                    )
                    time.sleep(0.05)
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._sock.close()


@pytest.mark.parametrize("mode", ["reset"])
async def test_upstream_resetting_before_headers_is_502(
    make_gateway: GatewayFactory, mode: str
) -> None:
    raw = RawUpstream(mode)
    try:
        gw = await make_gateway(settings=make_settings(f"http://127.0.0.1:{raw.port}"))
        key = await gw.key()
        response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 502
        assert (await response.json())["error"] == "upstream_unavailable"
    finally:
        raw.close()


async def test_upstream_resetting_mid_body_aborts_the_client(make_gateway: GatewayFactory) -> None:
    raw = RawUpstream("truncate")
    try:
        gw = await make_gateway(settings=make_settings(f"http://127.0.0.1:{raw.port}"))
        key = await gw.key()
        response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 200  # the headers had been sent on already
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()  # never a clean, complete-looking short body
    finally:
        raw.close()


async def test_broken_pooled_connections_are_dropped(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    from tests.support import Recorder

    port = free_port()
    first = Recorder()
    server = await aiohttp_server(first.app(), port=port)
    gw = await make_gateway(settings=make_settings(f"http://127.0.0.1:{port}"))
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    assert (await gw.client.get(SCORES, headers=auth)).status == 200
    await server.close()  # every pooled connection to it is now dead
    second = Recorder()
    await aiohttp_server(second.app(), port=port)
    for _ in range(3):
        assert (await gw.client.get(SCORES, headers=auth)).status == 200
    assert len(second.seen) == 3


async def test_concurrency_cap_sheds_fast(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    gw = await make_gateway(
        settings=make_settings(
            "http://unused", upstreams={"live": {"url": url_of(upstream[1]), "max_in_flight": 2}}
        )
    )
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}

    async def call(path: str) -> int:
        response = await gw.client.get(path, headers=auth)
        await response.read()
        return response.status

    slow = [asyncio.create_task(call(SCORES + "?slow=2")) for _ in range(2)]
    while len(upstream[0].seen) < 2:  # both slow requests are at the upstream
        await asyncio.sleep(0.01)
    shed = await asyncio.gather(*(call(SCORES) for _ in range(4)))
    assert shed == [503] * 4
    # Answered while both slow requests are still in flight: refused, not queued behind them.
    assert not any(task.done() for task in slow)
    assert len(upstream[0].seen) == 2
    # ...and counted where an operator looks.
    gw.runtime.metrics.flush()
    metrics = generate_latest(gw.runtime.metrics.registry).decode()
    assert 'gateway_upstream_errors_total{error="shed",upstream="live"} 4.0' in metrics
    assert await asyncio.gather(*slow) == [200, 200]
    assert await call(SCORES) == 200  # capacity is back


async def test_slowloris_is_closed_while_others_are_served(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(limits={"header_timeout": "1s"})
    key = await gw.key()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /v1/users/usr_a/scores HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    for _ in range(3):  # keep trickling a header byte at a time
        await asyncio.sleep(0.3)
        writer.write(b"X")
        response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 200
    # The configured bound (1 s), with margin: aiohttp's default would keep it for 75 s.
    closed = await asyncio.wait_for(reader.read(), 5)
    assert closed == b""  # the server closed it without a response
    writer.close()


async def test_slow_body_is_cut_off(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        limits={"body_timeout": "500ms"},
        policy={
            "routes": [
                {"id": "w", "methods": ["POST"], "paths": ["/v1/users"], "allow": ["api_key"]}
            ]
        },
    )
    key = await gw.key()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        f"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Length: 100\r\n\r\n0123456789".encode()
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    assert status_of(answer) == 408, answer[:80]  # an answer, not just a closed connection
    assert b'"error":"request_timeout"' in answer.replace(b" ", b"")
    assert gw.recorder.seen == []  # no complete request reached the upstream
    writer.close()


WRITE_ROUTE = {
    "routes": [{"id": "w", "methods": ["POST"], "paths": ["/v1/users"], "allow": ["api_key"]}]
}


async def post_in_two_parts(port: int, key: str, pause: float) -> bytes:
    """A 10-byte body sent as 5 bytes, ``pause`` seconds of nothing, then the other 5; the
    whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Length: 10\r\nConnection: close\r\n\r\n01234".encode()
    )
    await writer.drain()
    await asyncio.sleep(pause)
    with contextlib.suppress(ConnectionError):
        writer.write(b"56789")
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


@pytest.mark.parametrize(
    ("pause", "status"),
    [(1.5, 200), (3.0, 408)],
    ids=["pause within body_timeout", "stall past body_timeout"],
)
async def test_a_client_pausing_mid_body_is_never_the_upstreams_504(
    make_gateway: GatewayFactory,
    upstream: tuple[Any, TestServer],
    caplog: pytest.LogCaptureFixture,
    pause: float,
    status: int,
) -> None:
    """The upstream's read_timeout (here 500 ms) runs while the upstream owes an answer, not
    while the gateway waits for the client's body: a pause within limits.body_timeout (2 s)
    is forwarded whole; a longer one is the client's 408. Either way aiohttp logs no error (a
    body reader left waiting when the handler returned clashed with the server's own)."""
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            upstreams={"live": {"url": url, "read_timeout": "500ms"}},
            limits={"body_timeout": "2s"},
            policy=WRITE_ROUTE,
        )
    )
    key = await gw.key()
    answer = await post_in_two_parts(gw.port, key, pause)
    assert status_of(answer) == status, answer[:300]
    if status == 200:
        assert gw.recorder.last.body_size == 10
    else:
        assert b'"error":"request_timeout"' in answer.replace(b" ", b"")
        assert gw.recorder.seen == []
    await asyncio.sleep(0.2)  # what the server does once the handler returned
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]


async def test_redis_slow_is_bounded_and_other_routes_are_unharmed(
    make_gateway: GatewayFactory, redis_server: RedisServer, redis_url: str
) -> None:
    store = RedisStore(redis_url, prefix="slow:", timeout=0.2)
    gw = await make_gateway(store=store)
    cached = await gw.key()
    assert (
        await gw.client.get(SCORES, headers={"Authorization": f"Bearer {cached}"})
    ).status == 200
    fresh = await gw.key()  # never looked up: needs Redis
    async with redis_asleep(redis_server.port, 1.5) as sleeper:
        response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {fresh}"})
        assert response.status == 503
        # Answered while Redis is still asleep: bounded by store.timeout, not by Redis.
        assert sleeper.is_alive()
        jwks = await gw.client.get("/.well-known/jwks.json")
        assert jwks.status == 200
        again = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {cached}"})
        assert again.status == 200  # inside its one-second cache: no Redis needed
    await asyncio.sleep(0.1)
    gw.clock.advance(1)
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {fresh}"})
    assert response.status == 200  # recovered without a restart
    await store.close()


async def test_redis_asleep_fails_a_mobile_consumption_closed_within_store_timeout(
    make_gateway: GatewayFactory, redis_server: RedisServer, redis_url: str
) -> None:
    # The consumption goes over the multiplexed connection, whose commands carry their own
    # deadline (store.timeout), not redis-py's socket timeout: bounded all the same.
    store = RedisStore(redis_url, prefix="asleep:", timeout=0.2)
    gw = await make_gateway(store=store)
    key = await gw.key()
    issued = await gw.client.post(
        "/v1/auth/mobile-token",
        json={"user_id": "usr_a"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert issued.status == 200
    token = (await issued.json())["token"]
    async with redis_asleep(redis_server.port, 1.5) as sleeper:
        response = await gw.client.post(
            "/v1/sdk/initialize", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 503
        assert (await response.json())["error"] == "service_unavailable"
        assert sleeper.is_alive()  # answered while Redis still sleeps: store.timeout bounds it
    # Whether Redis ran the abandoned command depends on whether it read it before the
    # connection was cut: either way the token is accepted at most once from here on, and the
    # next requests find Redis on a new connection.
    statuses = []
    for _ in range(2):
        attempt = await gw.client.post(
            "/v1/sdk/initialize", headers={"Authorization": f"Bearer {token}"}
        )
        statuses.append(attempt.status)
    assert statuses in ([200, 401], [401, 401]), statuses
    assert (await attempt.json())["details"]["reason"] == "used"
    await store.close()
