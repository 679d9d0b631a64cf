"""The member-token scope grammar.

A member token's ``scopes`` is a JSON array of strings. Empty means *not narrowed* (the seed
document calls scopes a planned feature and tells customers to send ``[]``). Otherwise each scope
is ``RESOURCE:ACTION`` where RESOURCE is a rule's ``resource`` (``scores``, ``sleep``, …) or
``*``, and ACTION is ``read`` (GET, HEAD), ``write`` (every other method) or ``*``. A request is
allowed when at least one scope covers the rule's resource and the method's action; a rule with
no ``resource`` is never reachable by a narrowed token. Unknown-shaped scopes are ignored rather
than widened.
"""

from __future__ import annotations

READ_METHODS = frozenset({"GET", "HEAD"})


def action_of(method: str) -> str:
    return "read" if method in READ_METHODS else "write"


def scope_allows(scopes: tuple[str, ...], resource: str | None, method: str) -> bool:
    if not scopes:
        return True
    if resource is None:
        return False
    action = action_of(method)
    for scope in scopes:
        res, sep, act = scope.partition(":")
        if not sep:
            continue
        if res in (resource, "*") and act in (action, "*"):
            return True
    return False
