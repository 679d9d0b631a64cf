"""Time and type rules on verified claims (``gateway.authn.claims``)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.authn.claims import check_times, int_claim, str_claim
from gateway.errors import InvalidToken, TokenExpired

NOW = 1_700_000_000.0
LEEWAY = 30.0


@pytest.mark.parametrize(
    ("payload", "error", "reason"),
    [
        ({"iat": NOW}, InvalidToken, "claims"),  # no exp
        ({"exp": NOW + 60}, InvalidToken, "claims"),  # no iat
        ({"iat": int(NOW), "exp": True}, InvalidToken, "claims"),  # bool is not a NumericDate
        ({"iat": int(NOW), "exp": str(int(NOW) + 60)}, InvalidToken, "claims"),
        ({"iat": int(NOW), "exp": NOW + 60.5}, InvalidToken, "claims"),  # floats refused
        ({"iat": int(NOW) + 31, "exp": int(NOW) + 600}, InvalidToken, "iat"),
        ({"iat": int(NOW), "nbf": int(NOW) + 31, "exp": int(NOW) + 600}, InvalidToken, "nbf"),
        ({"iat": int(NOW), "exp": int(NOW)}, InvalidToken, "exp"),
        ({"iat": int(NOW) - 600, "exp": int(NOW) - 30}, TokenExpired, "expired"),
    ],
)
def test_time_claims_are_strict(
    payload: dict[str, Any], error: type[InvalidToken], reason: str
) -> None:
    with pytest.raises(error) as raised:
        check_times(payload, NOW, LEEWAY)
    assert raised.value.details == {"reason": reason}


def test_leeway_applies_on_both_sides() -> None:
    iat, exp = int(NOW) + 29, int(NOW) - 29 + 600
    assert check_times({"iat": iat, "exp": exp, "nbf": int(NOW) + 29}, NOW, LEEWAY) == (iat, exp)
    assert check_times({"iat": int(NOW) - 600, "exp": int(NOW) - 29}, NOW, LEEWAY)[1] == (
        int(NOW) - 29
    )


@pytest.mark.parametrize("value", [None, "", 7, ["usr_a"], {"id": "usr_a"}])
def test_string_claims_must_be_non_empty_strings(value: object) -> None:
    with pytest.raises(InvalidToken):
        str_claim({"sub": value}, "sub")


def test_optional_integer_claims() -> None:
    assert int_claim({}, "nbf", required=False) is None
    assert int_claim({"nbf": 5}, "nbf", required=False) == 5
