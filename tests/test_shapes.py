"""Every shape the gateway accepts is anchored at the very end: ``$`` in a Python regex also
matches before a trailing newline, which would let ``value\\n`` pass as ``value`` into a header,
a store key or a log line (hypothesis found it for request ids)."""

from __future__ import annotations

import pytest

from gateway.authn.mobile_token import SHAPE as MOBILE_SHAPE
from gateway.authz.paths import split_path
from gateway.credentials import JWS_SHAPE
from gateway.errors import InvalidRequest
from gateway.forward.headers import forwarded_host, request_id
from gateway.identifiers import is_header_safe, is_identifier
from gateway.keys.material import KEY_ID_SHAPE, KEY_SHAPE

KEY = "sk_live_" + "a" * 43
MOBILE = "mt_" + "m" * 43
JWS = "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("accepts", "value"),
    [
        (lambda v: KEY_SHAPE.match(v) is not None, KEY),
        (lambda v: KEY_ID_SHAPE.match(v) is not None, "key_" + "a" * 24),
        (lambda v: MOBILE_SHAPE.match(v) is not None, MOBILE),
        (lambda v: JWS_SHAPE.match(v) is not None, JWS),
        (lambda v: request_id(v, "generated") == v, "req-1"),
        (lambda v: forwarded_host(v) == v, "api.example.com"),
        (is_identifier, "usr_a"),
        (is_header_safe, "person@example.com"),
    ],
)
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\nX-Evil: 1"])
def test_a_trailing_newline_is_never_accepted(accepts: object, value: str, suffix: str) -> None:
    assert callable(accepts)
    assert accepts(value)
    assert not accepts(value + suffix)


def test_a_path_segment_with_a_trailing_newline_is_refused() -> None:
    assert split_path("/v1/users") == ("v1", "users")
    with pytest.raises(InvalidRequest):
        split_path("/v1/users\n")
