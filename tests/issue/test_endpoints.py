"""The issuing endpoints read a token request's body as the proxy reads one: 413 over their
limit, 408 for a client that stalls mid-body, 400 (never a 500) for one that hangs up or frames
its body wrongly. The framing cases run on the gateway served as in production (aiohttp's test
server cancels a handler whose client went away, which production does not)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import served_as_in_production, status_of

ISSUING = ("/v1/auth/user-token", "/v1/auth/mobile-token")
MAX_BODY = 64 * 1024


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def padded(size: int) -> bytes:
    """A valid token request of exactly ``size`` bytes (spaces after the object)."""
    body = b'{"user_id":"usr_a"}'
    return body + b" " * (size - len(body))


async def confirmed(gw: Gateway) -> str:
    """An API key whose account's usr_a is already confirmed (no backend call)."""
    key = await gw.key()
    response = await gw.client.post(ISSUING[0], headers=bearer(key), json={"user_id": "usr_a"})
    assert response.status == 200, await response.text()
    return key


async def send_head(
    port: int, path: str, key: str, rest: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the gateway on which a token request's head (with ``key``) and then
    ``rest`` (more headers, the blank line and the body's start) were sent; nothing more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n".encode() + rest
    )
    await writer.drain()
    return reader, writer


PARTIAL_JSON = b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user_id":'


@pytest.mark.parametrize("path", ISSUING)
async def test_a_body_over_the_limit_is_413_with_the_limit(
    make_gateway: GatewayFactory, path: str
) -> None:
    gw = await make_gateway()
    key = await confirmed(gw)
    assert (await gw.client.post(path, headers=bearer(key), data=padded(MAX_BODY))).status == 200
    response = await gw.client.post(path, headers=bearer(key), data=padded(MAX_BODY + 1))
    assert response.status == 413
    body = await response.json()
    assert body["error"] == "payload_too_large" and body["details"] == {"limit": MAX_BODY}


@pytest.mark.parametrize("path", ISSUING)
async def test_a_chunked_body_over_the_limit_is_413(
    make_gateway: GatewayFactory, path: str
) -> None:
    """Without a Content-Length the limit holds while the body streams in."""
    gw = await make_gateway()
    key = await confirmed(gw)

    async def chunks() -> AsyncIterator[bytes]:
        body = padded(MAX_BODY + 10)
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await gw.client.post(path, headers=bearer(key), data=chunks())
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"


async def test_a_lower_max_body_bytes_is_the_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(limits={"max_body_bytes": 100})
    key = await confirmed(gw)
    path = "/v1/auth/mobile-token"
    assert (await gw.client.post(path, headers=bearer(key), data=padded(100))).status == 200
    response = await gw.client.post(path, headers=bearer(key), data=padded(101))
    assert response.status == 413
    assert (await response.json())["details"] == {"limit": 100}


@pytest.mark.parametrize("path", ISSUING)
async def test_a_client_stalling_mid_body_is_cut_off_with_408(
    make_gateway: GatewayFactory, path: str
) -> None:
    gw = await make_gateway(limits={"body_timeout": "500ms"})
    key = await confirmed(gw)
    reader, writer = await send_head(gw.port, path, key, PARTIAL_JSON)
    answer = await asyncio.wait_for(reader.read(), 5)  # the bound (0.5 s), with margin
    writer.close()
    assert status_of(answer) == 408, answer[:80]
    assert b'"error":"request_timeout"' in answer.replace(b" ", b"")
    assert b'"token"' not in answer


@pytest.mark.parametrize("path", ISSUING)
async def test_a_client_hanging_up_mid_body_is_a_400_not_a_500(
    make_gateway: GatewayFactory, log_lines: io.StringIO, path: str
) -> None:
    """The client's fault: its access line says 400 ``invalid_request``, and no error with a
    traceback is logged (a key holder could otherwise fill the 5xx alerts at will)."""
    gw = await make_gateway()
    key = await confirmed(gw)
    _, writer = await send_head(gw.port, path, key, PARTIAL_JSON)
    await asyncio.sleep(0.1)  # the handler is waiting for the rest of the body
    writer.close()
    access = await _access_line(log_lines, path)
    assert (access["status"], access["error"]) == (400, "invalid_request")
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines


async def _access_line(log_lines: io.StringIO, path: str) -> dict[str, Any]:
    """The access line of the last request to ``path``'s route, once it is written."""
    route = "auth-" + path.rsplit("/", 1)[-1]
    for _ in range(100):
        for line in reversed(log_lines.getvalue().splitlines()):
            entry = json.loads(line)
            if (entry.get("msg"), entry.get("route")) == ("access", route) and entry[
                "status"
            ] != 200:
                return dict(entry)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access line for {route}: {log_lines.getvalue()[-2000:]}")


async def test_a_content_length_over_the_limit_is_413_before_any_body(
    make_gateway: GatewayFactory,
) -> None:
    """Refused on the header: the gateway does not wait for a body it will not take."""
    gw = await make_gateway(limits={"body_timeout": "30s"})
    key = await confirmed(gw)
    reader, writer = await send_head(
        gw.port, "/v1/auth/mobile-token", key, f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # not after 30 s
    writer.close()
    assert status_of(head) == 413, head


@pytest.mark.parametrize(
    ("body", "then", "reason"),
    [
        # The head and a first chunk, then (the handler reading) a chunk size that is not hex.
        (b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"use\r\n', b"zz\r\n", "malformed_body"),
        (PARTIAL_JSON, None, None),  # then the client hangs up
    ],
    ids=["bad-chunk-size", "hang-up"],
)
async def test_a_broken_body_is_a_400_as_served_in_production(
    upstream: Any, log_lines: io.StringIO, body: bytes, then: bytes | None, reason: str | None
) -> None:
    url = f"http://127.0.0.1:{upstream[1].port}"
    async with served_as_in_production(make_settings(url, url)) as (port, current):
        key, _ = await current.runtime.keys.create("acc_1", "live")
        current.runtime.membership.cache.put(("acc_1", "live", "usr_a"), True, 1e12)
        reader, writer = await send_head(port, "/v1/auth/mobile-token", key, body)
        await asyncio.sleep(0.1)  # the handler is reading the body
        if then is None:
            writer.close()
        else:
            writer.write(then)
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert status_of(answer) == 400, answer[:200]
            assert f'"reason":"{reason}"'.encode() in answer.replace(b" ", b"")
        access = await _access_line(log_lines, "/v1/auth/mobile-token")
        assert (access["status"], access["error"]) == (400, "invalid_request")
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert not [line for line in lines if line["level"] in ("error", "critical")], lines


@pytest.mark.parametrize("path", ISSUING)
async def test_expect_100_continue_is_answered_only_once_the_request_is_admitted(
    make_gateway: GatewayFactory, path: str
) -> None:
    """A client that waits for ``100 Continue`` before its body is invited to send it only
    when its key may call the endpoint; a refused one gets its final answer straight away."""
    gw = await make_gateway()
    key = await confirmed(gw)
    body = b'{"user_id":"usr_a"}'
    expecting = f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()

    reader, writer = await send_head(gw.port, path, "sk_live_" + "Z" * 43, expecting)
    refused = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert status_of(refused) == 401, refused  # and no 100 Continue before it

    reader, writer = await send_head(gw.port, path, key, expecting)
    invited = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert invited == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert status_of(final) == 200, final


@pytest.mark.parametrize("path", ISSUING)
@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id":"usr_b","user_id":"usr_a"}',  # the last one is the confirmed user
        b'{"user_id":"usr_a","user_id":"usr_b"}',
        b'{"user_id":"usr_a","\\u0075ser_id":"usr_b"}',  # the same name, escaped
        b'{"user_id":"usr_a","scopes":["read"],"scopes":[]}',
    ],
    ids=["last-confirmed", "first-confirmed", "escaped", "other-member"],
)
async def test_a_member_named_twice_is_refused_and_nothing_is_issued(
    make_gateway: GatewayFactory, path: str, body: bytes
) -> None:
    """A proxy in front that keeps the first of two ``user_id`` members would see another user
    than the gateway, which keeps the last: the body is refused, whichever one is confirmed."""
    gw = await make_gateway()
    key = await confirmed(gw)
    headers = {**bearer(key), "Content-Type": "application/json"}
    response = await gw.client.post(path, headers=headers, data=body)
    document = await response.json()
    assert (response.status, document["error"]) == (400, "invalid_request"), document
    assert document["details"] == {"reason": "duplicate_member"}
    assert "token" not in document
