"""gateway/mutate/headers.py: the identity headers a principal gets upstream, and their cache."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.authn import api_key, member_token, user_token
from gateway.config import HeaderNames
from gateway.mutate.headers import IdentityHeaders
from gateway.principal import Principal

BASE = Principal(
    account="acc_1",
    credential=member_token.KIND,
    environment="live",
    actor="usr_c",
    user="usr_a",
    scopes=("sleep",),
    key_id="key_1",
    expires_at=1000.0,
    token_id="jti-1",
)


@pytest.mark.parametrize(
    "change",
    [
        {"account": "acc_2"},
        {"actor": "usr_d"},
        {"credential": user_token.KIND},
        {"environment": "sandbox"},
        {"scopes": ("sleep", "vitals")},
        {"user": "usr_b"},
        {"user": None},
        {"key_id": "key_2"},
        {"key_id": None},
    ],
)
def test_a_principal_never_gets_the_headers_of_another(change: dict[str, object]) -> None:
    # SECURITY: each principal differing in a shown field, asked right after BASE (whose
    # headers are then cached), gets its own headers.
    identity = IdentityHeaders(HeaderNames())
    other = dataclasses.replace(BASE, **change)  # type: ignore[arg-type]
    assert identity.render(BASE) != identity.render(other)
    fresh = IdentityHeaders(HeaderNames())
    assert identity.render(other) == fresh.render(other)


def test_tokens_of_one_identity_share_one_cached_block() -> None:
    identity = IdentityHeaders(HeaderNames())
    first = identity.render(BASE)
    later = dataclasses.replace(BASE, token_id="jti-2", expires_at=2000.0, consumed=True)
    assert identity.render(later) is first  # the same entry: not one per token
    assert dict(first) == {
        "X-Auth-Account": "acc_1",
        "X-Auth-Actor": "usr_c",
        "X-Auth-Credential": "member_token",
        "X-Auth-Environment": "live",
        "X-Auth-Scopes": "sleep",
        "X-Auth-User": "usr_a",
        "X-Auth-Key-Id": "key_1",
    }


def test_an_api_key_shows_no_user() -> None:
    identity = IdentityHeaders(HeaderNames())
    key = Principal(
        account="acc_1", credential=api_key.KIND, environment="live", actor="key_1", key_id="key_1"
    )
    assert "X-Auth-User" not in dict(identity.render(key))
