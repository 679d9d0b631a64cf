from __future__ import annotations

from typing import Any

import pytest

from gateway.authz.authorize import authorize
from gateway.authz.policy_file import DEFAULT_POLICY, parse_policy
from gateway.config import Node
from gateway.errors import InsufficientScope, NotFound, WrongUser
from gateway.principal import CredentialKind, Principal
from gateway.settings import load_policy
from tests.kinds import K


def policy(*routes: dict[str, Any]) -> Any:
    return parse_policy(Node({"routes": list(routes)}))


def principal(
    kind: CredentialKind, user: str | None = None, scopes: tuple[str, ...] = ()
) -> Principal:
    return Principal(
        account="acc",
        credential=kind,
        environment="live",
        actor=user or "key_x",
        user=user,
        scopes=scopes,
    )


def test_literal_segments_win_over_parameters_with_backtracking() -> None:
    p = policy(
        {"id": "me", "methods": ["GET"], "paths": ["/v1/users/me"], "allow": ["api_key"]},
        {
            "id": "data",
            "methods": ["GET"],
            "paths": ["/v1/users/{user_id}/scores"],
            "allow": ["api_key"],
        },
    )
    assert p.match("GET", ("v1", "users", "me")).rule.id == "me"
    found = p.match("GET", ("v1", "users", "me", "scores"))
    assert found.rule.id == "data" and found.params == {"user_id": "me"}


def test_unknown_path_is_404_and_unknown_method_is_403() -> None:
    p = load_policy(DEFAULT_POLICY)
    with pytest.raises(NotFound):
        p.match("GET", ("v1", "nope"))
    with pytest.raises(NotFound):
        p.match("GET", ("v1", "users", "u", "scores", "extra"))
    with pytest.raises(InsufficientScope) as refused:
        p.match("PUT", ("v1", "users", "u", "scores"))
    assert refused.value.message == "No policy allows PUT on this route."
    # A method the client made up is not echoed (it may be anything, a secret included).
    with pytest.raises(InsufficientScope) as refused:
        p.match("SK_LIVE_SECRET", ("v1", "users", "u", "scores"))
    assert refused.value.message == "No policy allows this method on this route."


def test_conflicting_parameter_names_are_a_config_error() -> None:
    with pytest.raises(Exception, match=r"routes\[1\]: /v1/x/\{b\}: parameter \{b\} conflicts"):
        policy(
            {"id": "a", "methods": ["GET"], "paths": ["/v1/x/{a}"], "allow": ["api_key"]},
            {"id": "b", "methods": ["POST"], "paths": ["/v1/x/{b}"], "allow": ["api_key"]},
        )


DEFAULT = load_policy(DEFAULT_POLICY)
SCORES = ("v1", "users", "usr_a", "scores")

CASES = [
    # (kind, user, scopes, method, path, expected)
    (K.API_KEY, None, (), "GET", SCORES, None),
    (K.API_KEY, None, (), "POST", ("v1", "users"), None),
    (K.TEAM_SESSION, None, (), "DELETE", ("v1", "users", "usr_a"), None),
    (K.USER_TOKEN, "usr_a", (), "GET", SCORES, None),
    (K.USER_TOKEN, "usr_b", (), "GET", SCORES, WrongUser),
    (K.USER_TOKEN, "usr_a", (), "GET", ("v1", "users", "usr_a"), InsufficientScope),
    (K.USER_TOKEN, "usr_a", (), "POST", ("v1", "users"), InsufficientScope),
    (K.USER_TOKEN, "usr_a", (), "POST", ("v1", "auth", "user-token"), InsufficientScope),
    (K.MOBILE_TOKEN, "usr_a", (), "GET", SCORES, InsufficientScope),
    (K.MOBILE_TOKEN, "usr_a", (), "POST", ("v1", "sdk", "initialize"), None),
    (K.API_KEY, None, (), "POST", ("v1", "sdk", "initialize"), InsufficientScope),
    (K.SDK_SESSION, "usr_a", ("sleep",), "POST", ("v1", "sdk", "sync", "sleep"), None),
    (
        K.SDK_SESSION,
        "usr_a",
        ("sleep",),
        "POST",
        ("v1", "sdk", "sync", "vitals"),
        InsufficientScope,
    ),
    (K.SDK_SESSION, "usr_a", ("sleep",), "GET", SCORES, InsufficientScope),
    (K.MEMBER_TOKEN, "usr_a", (), "GET", SCORES, None),
    (K.MEMBER_TOKEN, "usr_b", (), "GET", SCORES, WrongUser),
    (K.MEMBER_TOKEN, "usr_a", ("scores:read",), "GET", SCORES, None),
    (K.MEMBER_TOKEN, "usr_a", ("*:read",), "GET", SCORES, None),
    (K.MEMBER_TOKEN, "usr_a", ("sleep:read",), "GET", SCORES, InsufficientScope),
    (K.MEMBER_TOKEN, "usr_a", ("scores:write",), "GET", SCORES, InsufficientScope),
    (K.MEMBER_TOKEN, "usr_a", ("scores",), "GET", SCORES, InsufficientScope),
    (K.MEMBER_TOKEN, "usr_a", (), "POST", ("v1", "users"), InsufficientScope),
]


@pytest.mark.parametrize(("kind", "user", "scopes", "method", "path", "expected"), CASES)
def test_default_policy_encodes_the_credential_table(
    kind: CredentialKind,
    user: str | None,
    scopes: tuple[str, ...],
    method: str,
    path: tuple[str, ...],
    expected: type[Exception] | None,
) -> None:
    who = principal(kind, user, scopes)

    def check() -> None:
        authorize(who, DEFAULT.match(method, path), method)

    if expected is None:
        check()
    else:
        with pytest.raises(expected):
            check()


def test_wrong_user_message_names_the_token_user() -> None:
    with pytest.raises(WrongUser, match=r"^This token can only access data for user usr_b\.$"):
        authorize(principal(K.USER_TOKEN, "usr_b"), DEFAULT.match("GET", SCORES), "GET")
