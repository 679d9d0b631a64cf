"""``gateway serve`` hands every public request straight to the front handler (no aiohttp
router, no response signal): what the router and the signal used to do is done there, and a
served process answers as the in-process test client does. A real process, a real upstream,
raw sockets where the bytes matter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import (
    GatewayProcess,
    ThreadedUpstream,
    admin_create_key,
    raw_http,
    status_of,
    write_config,
)

SCORES = "/v1/users/usr_a/scores"
ORIGIN = "https://app.example.com"
LIMITS = {"rules": [{"group": "default", "per": "credential", "limit": 2, "period": "60s"}]}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, upstream_thread: ThreadedUpstream
) -> Iterator[tuple[GatewayProcess, str]]:
    proc = write_config(
        Path(tmp_path_factory.mktemp("front")),
        upstream_thread.url,
        extra={
            "cors": [{"origins": [ORIGIN]}],
            "rate_limits": LIMITS,
            "decision": {"enabled": True, "proxy": "envoy"},
        },
    )
    proc.start()
    try:
        yield proc, admin_create_key(proc, "acc_1")
    finally:
        proc.stop()


async def test_cors_and_rate_limit_headers_on_proxied_answers_and_errors(
    served: tuple[GatewayProcess, str],
) -> None:
    proc, _ = served
    key = admin_create_key(proc, "acc_1")  # its own rate-limit budget
    headers = {"Authorization": f"Bearer {key}", "Origin": ORIGIN}
    url = f"http://127.0.0.1:{proc.port}{SCORES}"
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.get(url, headers=headers) as response:
                statuses.append(response.status)
                assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
                assert "Origin" in response.headers.getall("Vary")
                assert response.headers["RateLimit-Limit"] == "2"
        assert statuses == [200, 200, 429]
        async with session.get(url, headers={"Origin": ORIGIN}) as refused:
            assert refused.status == 401
            assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
        async with session.get(url, headers={**headers, "Origin": "https://evil.example"}) as other:
            assert "Access-Control-Allow-Origin" not in other.headers


async def test_expect_100_continue_is_answered_then_the_body_forwarded(
    served: tuple[GatewayProcess, str], upstream_thread: ThreadedUpstream
) -> None:
    proc, key = served
    body = b'{"user_id": "usr_new"}'
    head = (
        f"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    raw = await raw_http(proc.port, head + body, read_timeout=2.0)
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    final = raw.partition(b"\r\n\r\n")[2]
    assert status_of(final) == 200, final
    assert upstream_thread.recorder.last.body_size == len(body)


async def test_expect_100_continue_is_not_answered_for_a_refused_request(
    served: tuple[GatewayProcess, str], upstream_thread: ThreadedUpstream
) -> None:
    """The body is invited only once the pipeline admitted the request: an anonymous upload
    is refused (401) before any of it is sent, nothing reaches the upstream, and the gateway
    closes the connection (what the client sends next could be the body or a request)."""
    proc, _ = served
    before = upstream_thread.recorder.last
    head = (
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk_live_nobody\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(head)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)  # to the end: the gateway closes it
    writer.close()
    assert status_of(raw) == 401, raw[:200]
    assert b"100 Continue" not in raw and b"Connection: close" in raw
    assert upstream_thread.recorder.last is before


async def test_a_decision_is_answered_with_the_identity(served: tuple[GatewayProcess, str]) -> None:
    proc, key = served
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{proc.port}/decisions{SCORES}",
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["X-Auth-Credential"] == "api_key"
        assert response.headers["X-Auth-Account"] == "acc_1"


async def test_the_gateways_own_answers_name_no_framework_version(
    served: tuple[GatewayProcess, str],
) -> None:
    """An error, a refusal by the HTTP parser and the admin listener's answers say
    ``Server: health-gateway``, not aiohttp's ``Python/3.x aiohttp/3.x``."""
    proc, _ = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{proc.port}{SCORES}") as refused:
            assert refused.status == 401 and refused.headers["Server"] == "health-gateway"
        async with session.get(f"http://127.0.0.1:{proc.admin_port}/healthz") as health:
            assert health.status == 200 and health.headers["Server"] == "health-gateway"
    raw = await raw_http(proc.port, b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert status_of(raw) == 400 and b"\r\nServer: health-gateway\r\n" in raw, raw[:300]
    assert b"aiohttp" not in raw
