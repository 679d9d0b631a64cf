"""The admin listener against bytes no HTTP client library would send, on a real process: a
header that is not UTF-8 in ``Authorization``, an expectation nobody meets, anything at all.
Each gets the gateway's JSON 4xx (never a 500, never aiohttp's plain text) and nothing the
client sent is echoed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ADMIN_TOKEN, GatewayProcess, raw_http, status_of, write_config


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    proc = write_config(tmp_path_factory.mktemp("admin-bytes"), "http://127.0.0.1:1")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def document(raw: bytes) -> dict[str, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: application/json" in head.lower(), head
    loaded = json.loads(body)
    assert isinstance(loaded, dict)
    return loaded


def lines(proc: GatewayProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


async def settled(proc: GatewayProcess) -> int:
    """How many access lines of ``GET /admin/keys`` there are once the log writer (a thread
    that writes them a moment after the answer) has written those of earlier tests."""
    count = -1
    while count != (count := len(records(proc))):
        await asyncio.sleep(0.2)
    return count


def records(proc: GatewayProcess) -> list[dict[str, object]]:
    """The access lines of ``GET /admin/keys``."""
    return [line for line in lines(proc) if line.get("route") == "admin:list_keys"]


@pytest.mark.parametrize("path", ["/healthz", "/admin/keys"])
async def test_an_expectation_beside_a_header_that_is_not_utf8_is_no_500(
    admin: GatewayProcess, path: str
) -> None:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nCookie: a=\xff\r\n".encode("latin-1")
        + b"Authorization: Bearer \xff\r\nConnection: close\r\n\r\n"
    )
    answer = await raw_http(admin.admin_port, request, read_timeout=2.0)
    assert status_of(answer) == (200 if path == "/healthz" else 401), answer[:300]


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer x\xe9", b"Basic \xff\xfe", b"Bearer " + ADMIN_TOKEN.encode() + b"\xff", b"\xc3("],
)
async def test_an_authorization_header_that_is_not_utf8_is_401_on_record(
    admin: GatewayProcess, authorization: bytes
) -> None:
    request = (
        b"GET /admin/keys HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    before = await settled(admin)
    answer = await raw_http(admin.admin_port, request, read_timeout=2.0)
    assert status_of(answer) == 401, answer[:200]
    assert document(answer)["error"] == "invalid_token"
    for _ in range(50):  # the log writer's thread writes the line a moment later
        if len(records(admin)) > before:
            break
        await asyncio.sleep(0.05)
    assert [line["status"] for line in records(admin)[before:]] == [401]
    assert not [line for line in lines(admin) if line["level"] in ("error", "critical")]


@pytest.mark.parametrize(
    "path", ["/healthz", "/metrics", "/admin/keys", "/dashboard/login", "/nope"]
)
async def test_an_expectation_nobody_meets_is_ignored(admin: GatewayProcess, path: str) -> None:
    """As on the public listener: the request is answered as if it had no ``Expect``, never
    with aiohttp's plain-text 417 that echoes the header."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nExpect: 200-ok-{ADMIN_TOKEN}\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = await raw_http(admin.admin_port, request, read_timeout=2.0)
    expected = 404 if path == "/nope" else 200
    assert status_of(answer) == expected, answer[:300]
    assert b"200-ok" not in answer


async def test_100_continue_is_still_answered(admin: GatewayProcess) -> None:
    body = b'{"account":"acc_1"}'
    request = (
        f"POST /admin/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = await raw_http(admin.admin_port, request + body, read_timeout=2.0)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201"), answer[:100]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    target=st.sampled_from(["/healthz", "/admin/keys", "/dashboard", "/metrics", "/x"]),
    name=st.sampled_from(["Authorization", "Expect", "Cookie", "Origin", "X-Any", "Host"]),
    value=st.binary(min_size=1, max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
    expect=st.sampled_from([b"", b"Expect: 200-ok\r\n", b"Expect: 100-continue\r\n"]),
)
def test_no_header_value_gets_a_5xx_or_a_non_json_answer(
    admin: GatewayProcess, tmp_path: Path, target: str, name: str, value: bytes, expect: bytes
) -> None:
    """With an expectation too: ignoring one re-encoded the headers, and a value that is not
    UTF-8 beside it was a 500."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode()
        + expect
        + name.encode()
        + b": "
        + value
        + b"\r\nConnection: close\r\n\r\n"
    )
    answer = asyncio.run(raw_http(admin.admin_port, request, read_timeout=2.0))
    status = status_of(answer)
    assert status < 500, answer[:300]
    if status >= 400:
        document(answer)
