"""Redaction of credentials from log text (gateway.observe.redact)."""

from __future__ import annotations

import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.keys.material import new_key
from gateway.observe.redact import REDACTED, looks_secret, redact

KEY = new_key("sk_live_")
MOBILE = "mt_" + "a1B2" * 10
JWT = jwt.encode({"sub": "usr_1"}, "s" * 32, algorithm="HS256")
# A JWS whose header starts with whitespace does not begin with "eyJ".
ODD_JWT = "ICB7ImFsZyI6IkhTMjU2In0.eyJzdWIiOiJ1In0." + "A" * 43


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"b'Authorization : Bearer {KEY}'", KEY),
        (f"b'Authorization:\\tBearer {KEY}\\x01'", KEY),
        (f"Invalid HTTP header: b' Bearer {KEY}'", KEY),
        (f"b'{KEY} /v1/users HTTP/1.1'", KEY),
        (f"authorization={KEY[:20]}", KEY[:20]),
        ("Authorization: Basic c2tfbGl2ZV9hYmNkZWZnaGlqOg==", "c2tfbGl2ZV9hYmNkZWZnaGlqOg=="),
        ("Proxy-Authorization: Digest user=x, response=abcdef", "response=abcdef"),
        ("Cookie: session=abcdef0123456789", "abcdef0123456789"),
        ("{'cookie': 'session=abcdef0123456789'}", "abcdef0123456789"),
        (f"token {MOBILE} used", MOBILE),
        (f"got {JWT}!", JWT.split(".")[2]),
        (f"got {ODD_JWT}", ODD_JWT.split(".")[2]),
        ("redis://gw:s3cr3t-pass@redis:6379/0", "s3cr3t-pass"),
        (f"SK_LIVE_{KEY[8:]}", KEY[8:]),
        # what the pure-Python parser's repr puts right before a key (the review found these)
        (f"b'\\x01{KEY}'", KEY),
        (f"b'\\t{KEY}'", KEY),
        (f"z{KEY}", KEY),
        (f'{{"f": "\\u0001{KEY}"}}', KEY),
        (f"x{MOBILE}", MOBILE),
    ],
)
def test_credentials_are_redacted(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted
    assert looks_secret(text)


@pytest.mark.parametrize(
    "text",
    [
        "request refused by the HTTP parser",
        "aiohttp.http_exceptions.TransferEncodingError: 400",
        "gateway.access 127.0.0.1:8080 task_id=7 format_version=2",
        '{"ts":"2026-12-02T17:34:28.588Z","duration_ms":2.37,"route":"users.scores"}',
        "7fd52a9c7e5b46df911323ff93d7bb7b",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text
    assert not looks_secret(text)


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=80), max_size=6))
def test_a_redacted_json_line_is_still_json(fields: dict[str, str]) -> None:
    line = orjson.dumps(fields).decode()
    assert isinstance(orjson.loads(redact(line)), dict)


@given(st.text(max_size=60), st.text(max_size=60))
def test_a_key_anywhere_in_text_is_redacted(before: str, after: str) -> None:
    # Text around the key may join it (a letter before "sk_" makes it part of another word):
    # separate it the way every quoting around a header value does.
    text = f"{before} {KEY} {after}"
    assert KEY[8:] not in redact(text)
