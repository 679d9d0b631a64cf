"""The checks a verified principal must pass on a matched route.

Kind-agnostic: what differs between kinds is read from the principal's
:class:`~gateway.principal.CredentialKind` facts (user-bound or not, how its scopes narrow it),
which each kind module declares.
"""

from __future__ import annotations

from gateway.authz.policy import RouteMatch
from gateway.authz.scopes import scope_allows
from gateway.errors import InsufficientScope, WrongUser
from gateway.principal import CredentialKind, Principal


def admits_kind(kind: CredentialKind, match: RouteMatch) -> bool:
    """Whether the rule admits every principal of ``kind``, whatever else it carries: the kind
    is allowed and nothing else :func:`authorize` checks (the bound user, scopes) applies to
    it. Only then is a single-use credential consumed before the principal is known."""
    rule = match.rule
    return (
        kind.name in rule.allow
        and (rule.bind is None or not kind.user_bound)
        and kind.narrowing == "none"
    )


def authorize(principal: Principal, match: RouteMatch, method: str) -> None:
    """Raise :class:`InsufficientScope` or :class:`WrongUser` unless the rule allows it."""
    rule = match.rule
    kind = principal.credential
    if kind.name not in rule.allow:
        raise InsufficientScope(kind.refusal, details={"reason": "credential_kind"})
    # SECURITY: a user-bound credential reaches only its own subject's data.
    if rule.bind is not None and kind.user_bound and match.params.get(rule.bind) != principal.user:
        raise WrongUser(f"This token can only access data for user {principal.user}.")
    if kind.narrowing == "resource_required" and not principal.scopes:
        raise InsufficientScope(
            "This token has no scopes.", details={"reason": "scope", "required": "scope"}
        )
    if kind.narrowing in ("resource", "resource_required") and not scope_allows(
        principal.scopes, rule.resource, method
    ):
        raise InsufficientScope(
            "This token's scopes do not allow this operation.",
            details={"reason": "scope", "required": f"{rule.resource or '?'}"},
        )
    if (
        kind.narrowing == "sdk"
        and rule.sdk_scope is not None
        and rule.sdk_scope not in principal.scopes
    ):
        raise InsufficientScope(
            f"This SDK session does not include the {rule.sdk_scope} scope.",
            details={"reason": "scope", "required": rule.sdk_scope},
        )
