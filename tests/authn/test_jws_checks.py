"""Structural refusals before any verifier trusts a token (``gateway.authn.jws_checks``)."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.authn.jws_checks import check_jws
from gateway.errors import InvalidToken


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact(header: str, payload: str = '{"sub":"usr_a"}', signature: str = "c2ln") -> str:
    return f"{b64(header.encode())}.{b64(payload.encode())}.{signature}"


@pytest.mark.parametrize(
    ("header_text", "payload_text"),
    [
        ('{"alg":"HS256","crit":["exp"]}', '{"sub":"usr_a"}'),
        ('{"alg":"RS256","jku":"http://127.0.0.1:1/jwks"}', '{"sub":"usr_a"}'),
        ('{"alg":"RS256","x5u":"http://127.0.0.1:1/cert"}', '{"sub":"usr_a"}'),
        ('{"alg":"RS256","jwk":{"kty":"oct","k":"AA"}}', '{"sub":"usr_a"}'),
        ('{"alg":"RS256","x5c":["MIIB"]}', '{"sub":"usr_a"}'),
        ('{"alg":"HS256","cty":"JWT"}', '{"sub":"usr_a"}'),
        ('{"alg":"HS256","cty":"jwt"}', '{"sub":"usr_a"}'),
        ('{"alg":"HS256","alg":"none"}', '{"sub":"usr_a"}'),  # SECURITY: duplicate member
        ('{"alg":"HS256"}', '{"sub":"usr_a","sub":"usr_b"}'),
        ('{"alg":"HS256"}', '["not", "an", "object"]'),
    ],
)
def test_refused_before_verification(header_text: str, payload_text: str) -> None:
    token = compact(header_text, payload_text)
    header = json.loads(header_text)
    with pytest.raises(InvalidToken):
        check_jws(token, header)


def test_jwe_and_other_shapes_are_refused() -> None:
    five_parts = compact('{"alg":"RSA-OAEP","enc":"A256GCM"}') + ".e30.e30"
    with pytest.raises(InvalidToken):
        check_jws(five_parts, {"alg": "RSA-OAEP", "enc": "A256GCM"})


def test_a_plain_token_passes() -> None:
    check_jws(compact('{"alg":"HS256","typ":"JWT","kid":"key_1"}'), {"alg": "HS256"})
