"""Percent-encodings in a path, byte by byte: exactly the documented set is refused.

Refused: an encoded '/', '\\', '.', ';', '%', DEL or any control byte (they change a path's
structure after a second decoding, or in a backend that decodes differently), and encoded
bytes that are not UTF-8. Every other encoded byte decodes to itself, in either hex case.
"""

from __future__ import annotations

import pytest

from gateway.authz.paths import split_path
from gateway.errors import InvalidRequest
from tests.conftest import Gateway
from tests.support import raw_http, status_of

FORBIDDEN = sorted({0x2F, 0x5C, 0x2E, 0x3B, 0x25, 0x7F, *range(0x20)})
ALLOWED = [b for b in range(0x20, 0x80) if b not in FORBIDDEN]


@pytest.mark.parametrize("byte", FORBIDDEN, ids=lambda b: f"0x{b:02X}")
def test_every_forbidden_byte_is_refused_encoded(byte: int) -> None:
    for encoded in (f"%{byte:02X}", f"%{byte:02x}"):
        with pytest.raises(InvalidRequest):
            split_path(f"/v1/users/usr{encoded}a/scores")


@pytest.mark.parametrize("byte", ALLOWED, ids=lambda b: f"0x{b:02X}")
def test_every_other_ascii_byte_decodes_to_itself(byte: int) -> None:
    for encoded in (f"%{byte:02X}", f"%{byte:02x}"):
        assert split_path(f"/v1/users/usr{encoded}a") == ("v1", "users", f"usr{chr(byte)}a")


@pytest.mark.parametrize(
    "encoded",
    ["%FF", "%C0%AF", "%E0%80%AF", "%ED%A0%80", "%C3", "%E2%9C", "%80", "%F8%88%80%80%80"],
)
def test_encoded_bytes_that_are_not_utf8_are_refused(encoded: str) -> None:
    with pytest.raises(InvalidRequest):
        split_path(f"/v1/users/usr{encoded}/scores")


async def test_an_encoded_del_never_reaches_the_upstream(gateway: Gateway) -> None:
    key = await gateway.key()
    for path in ("/v1/users/usr_a%7F/scores", "/v1/users/usr_a%FF/scores"):
        answer = await raw_http(
            gateway.port,
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert status_of(answer) == 400, answer[:80]
    assert gateway.recorder.seen == []
