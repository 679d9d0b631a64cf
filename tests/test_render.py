from __future__ import annotations

import orjson
import pytest

from gateway import errors
from gateway.render import error_response, www_authenticate

ALL = [
    errors.InvalidRequest,
    errors.InvalidToken,
    errors.TokenExpired,
    errors.InsufficientScope,
    errors.WrongUser,
    errors.NotFound,
    errors.UserNotFound,
    errors.PayloadTooLarge,
    errors.HeadersTooLarge,
    errors.RateLimited,
    errors.UpstreamUnavailable,
    errors.ServiceUnavailable,
    errors.UpstreamTimeout,
    errors.StoreUnavailable,
]


@pytest.mark.parametrize("cls", ALL)
def test_every_error_renders_the_json_contract(cls: type[errors.GatewayError]) -> None:
    response = error_response(cls(details={"reason": "x"}))
    assert response.status == cls.status
    assert response.body is not None
    body = orjson.loads(response.body)  # type: ignore[arg-type]
    assert body == {"error": cls.code, "message": cls.default_message, "details": {"reason": "x"}}
    has_challenge = "WWW-Authenticate" in response.headers
    assert has_challenge == (cls.status in (401, 403))


@pytest.mark.parametrize(
    ("error", "rfc_code"),
    [
        (errors.InvalidToken(), "invalid_token"),
        (errors.TokenExpired(), "invalid_token"),
        (errors.InsufficientScope(), "insufficient_scope"),
        (errors.WrongUser(), "insufficient_scope"),
    ],
)
def test_www_authenticate_uses_rfc6750_codes(error: errors.GatewayError, rfc_code: str) -> None:
    assert f'error="{rfc_code}"' in www_authenticate(error)


def test_a_missing_credential_is_named_in_the_challenge_too() -> None:
    error = errors.InvalidToken("This request needs an access token.")
    assert www_authenticate(error) == (
        'Bearer realm="gateway", error="invalid_token", '
        'error_description="This request needs an access token."'
    )


def test_message_cannot_break_the_header() -> None:
    header = www_authenticate(errors.InvalidToken('a"b\\c\r\nX-Evil: 1'))
    assert "\r" not in header and "\n" not in header
    assert 'error_description="a\\"b\\\\cX-Evil: 1"' in header


@pytest.mark.parametrize("control", ["\x00", "\x1f", "\x7f", "\x80", "\u2028"])
def test_no_control_or_non_ascii_character_reaches_the_header(control: str) -> None:
    """A quoted-string takes visible ASCII and spaces only: every control character (DEL
    included) and anything beyond ASCII is dropped."""
    header = www_authenticate(errors.InvalidToken(f"a{control}b"))
    assert control not in header
    assert 'error_description="ab"' in header


def test_an_ellipsis_is_written_as_three_dots() -> None:
    """The missing-credential message ends "(Authorization: Bearer …)": read as ASCII, not cut
    to "(Authorization: Bearer )"."""
    header = www_authenticate(errors.InvalidToken("needs a token (Authorization: Bearer …)."))
    assert header.endswith('error_description="needs a token (Authorization: Bearer ...)."')
