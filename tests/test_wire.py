"""HTTP/1.1 answers as bytes (gateway.wire), as a client's parser reads them."""

from __future__ import annotations

import http.client
import io

import pytest

from gateway.wire import HeaderBlocks, InvalidHeader, allowed, answer


class _Socket:
    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def makefile(self, *args: object, **kw: object) -> io.BytesIO:
        return self._file


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """What a client makes of the bytes: the standard library's HTTP client parser."""
    response = http.client.HTTPResponse(_Socket(data))  # type: ignore[arg-type]
    response.begin()
    return response.status, dict(response.getheaders()), response.read()


def test_an_answer_is_what_a_client_parser_reads_back() -> None:
    body = b'{"error":"invalid_token"}'
    status, headers, got = parse(
        answer(401, [("Content-Type", "application/json"), ("X-Request-Id", "r1")], body)
    )
    assert (status, got) == (401, body)
    assert headers["Content-Length"] == str(len(body)) and headers["X-Request-Id"] == "r1"
    assert headers["Date"].endswith(" GMT") and "Connection" not in headers


@pytest.mark.parametrize(
    ("keep_alive", "http10", "connection"),
    [
        (True, False, None),
        (False, False, "close"),
        (True, True, "keep-alive"),
        (False, True, "close"),
    ],
)
def test_connection_header(keep_alive: bool, http10: bool, connection: str | None) -> None:
    _, headers, _ = parse(answer(200, [], keep_alive=keep_alive, http10=http10))
    assert headers.get("Connection") == connection
    # An allowed decision's shortcut writes the same bytes as the general answer.
    block = HeaderBlocks()((("X-Auth-Account", "acc_1"), ("X-Auth-User", "usr_a")))
    general = answer(
        200, [("X-Request-Id", "r1")], keep_alive=keep_alive, http10=http10, block=block
    )
    assert allowed(block, "X-Request-Id", "r1", keep_alive=keep_alive, http10=http10) == general


@pytest.mark.parametrize(
    "header",
    [
        ("X-Auth-User", "usr_a\r\nX-Auth-Account: acc_admin"),
        ("X-Auth-User", "usr_a\nSet-Cookie: a=b"),
        ("X-Auth-User", "usr_a\r"),
        ("X-Auth-User", "usr\x00a"),
        ("X-Auth-User\r\nX-Evil", "1"),
        ("X-Auth-User\n", "1"),
        ("X-Auth-User\r", "1"),
        ("X-Auth\x00User", "1"),
        ("X-Auth-User", "\n"),
    ],
)
def test_a_header_that_would_split_the_answer_is_refused(header: tuple[str, str]) -> None:
    with pytest.raises(InvalidHeader):
        answer(200, [("X-Auth-Account", "acc_1"), header])
    with pytest.raises(InvalidHeader):
        allowed(b"X-Auth-Account: acc_1\r\n", *header, keep_alive=True, http10=False)


def test_a_header_block_is_checked_once_and_written_as_is() -> None:
    blocks = HeaderBlocks(size=2)
    identity = (("X-Auth-Account", "acc_1"), ("X-Auth-User", "usr_a"))
    block = blocks(identity)
    assert blocks(identity) is block  # encoded once
    _, headers, _ = parse(answer(200, [("X-Request-Id", "r1")], block=block))
    assert headers["X-Auth-Account"] == "acc_1" and headers["X-Auth-User"] == "usr_a"
    assert headers["X-Request-Id"] == "r1"
    with pytest.raises(InvalidHeader):
        blocks((("X-Auth-User", "usr_a\r\nX-Auth-Account: acc_admin"),))
    blocks((("A", "1"),))
    blocks((("B", "2"),))  # bounded: emptied when full
    assert blocks(identity) is not block and blocks(identity) == block
