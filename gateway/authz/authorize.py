"""The checks a verified principal must pass on a matched route."""

from __future__ import annotations

from gateway.authz.policy import RouteMatch
from gateway.authz.scopes import scope_allows
from gateway.errors import InsufficientScope, WrongUser
from gateway.principal import USER_BOUND, CredentialKind, Principal

_NOT_ALLOWED = {
    CredentialKind.USER_TOKEN: (
        "User tokens are read-only and can only read their own user's health data."
    ),
    CredentialKind.MOBILE_TOKEN: (
        "Mobile tokens can only be used to initialize the SDK (POST /v1/sdk/initialize)."
    ),
    CredentialKind.SDK_SESSION: "SDK sessions can only be used on the SDK's routes.",
    CredentialKind.MEMBER_TOKEN: "Member tokens cannot be used for this operation.",
}


def authorize(principal: Principal, match: RouteMatch, method: str) -> None:
    """Raise :class:`InsufficientScope` or :class:`WrongUser` unless the rule allows it."""
    rule = match.rule
    if principal.credential not in rule.allow:
        raise InsufficientScope(
            _NOT_ALLOWED.get(
                principal.credential, "This credential does not have permission for this operation."
            ),
            details={"reason": "credential_kind"},
        )
    # SECURITY: a user-bound credential reaches only its own subject's data.
    if (
        rule.bind is not None
        and principal.credential in USER_BOUND
        and match.params.get(rule.bind) != principal.user
    ):
        raise WrongUser(f"This token can only access data for user {principal.user}.")
    if principal.credential is CredentialKind.MEMBER_TOKEN and not scope_allows(
        principal.scopes, rule.resource, method
    ):
        raise InsufficientScope(
            "This token's scopes do not allow this operation.",
            details={"reason": "scope", "required": f"{rule.resource or '?'}"},
        )
    if (
        principal.credential is CredentialKind.SDK_SESSION
        and rule.sdk_scope is not None
        and rule.sdk_scope not in principal.scopes
    ):
        raise InsufficientScope(
            f"This SDK session does not include the {rule.sdk_scope} scope.",
            details={"reason": "scope", "required": rule.sdk_scope},
        )
