"""The route policy, compiled once at load into a segment trie.

A rule names the methods and path templates it covers, which credential kinds it allows, which
path parameter is bound to a user-bound credential's subject, and optionally the resource (for
member-token scopes), the SDK scope, or a gateway-owned handler. Matching walks the trie one
segment at a time (literal children before the parameter child), so its cost depends on the
path's depth, not on the number of rules. A path that matches no template is 404; a template whose
methods do not include the request's is 403: the gateway fails closed.

The policy file's shape (``routes:`` and each rule's fields) is validated by
:mod:`gateway.config.policy`, which builds the :class:`Rule` objects compiled here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gateway.errors import InsufficientScope, NotFound
from gateway.observe.metrics import KNOWN_METHODS

HANDLERS: Final = ("user_token", "user_token_refresh", "mobile_token", "sdk_initialize")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    methods: frozenset[str]
    templates: tuple[str, ...]
    allow: frozenset[str]
    bind: str | None = None
    resource: str | None = None
    sdk_scope: str | None = None
    handler: str | None = None
    group: str = "default"


class RouteConflict(ValueError):
    """Two rules claim the same method and template, or name a parameter differently at the
    same position; ``index`` is the later rule's."""

    def __init__(self, index: int, problem: str) -> None:
        self.index = index
        self.problem = problem
        super().__init__(problem)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    rule: Rule
    template: str
    params: dict[str, str]


@dataclass(slots=True)
class _TrieNode:
    literals: dict[str, _TrieNode] = field(default_factory=dict)
    param: tuple[str, _TrieNode] | None = None
    template: str | None = None
    by_method: dict[str, Rule] = field(default_factory=dict)


class Policy:
    """The compiled route table. Immutable after construction."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        """Compile ``rules``; :class:`RouteConflict` when two of them collide."""
        self.rules = rules
        self._root = _TrieNode()
        for index, rule in enumerate(rules):
            for template in rule.templates:
                self._insert(index, rule, template)

    def _insert(self, index: int, rule: Rule, template: str) -> None:
        node = self._root
        for part in template_parts(template):
            if part.startswith("{"):
                name = part[1:-1]
                if node.param is None:
                    node.param = (name, _TrieNode())
                elif node.param[0] != name:
                    raise RouteConflict(
                        index,
                        f"{template}: parameter {{{name}}} conflicts with {{{node.param[0]}}} "
                        "at the same position in another template",
                    )
                node = node.param[1]
            else:
                node = node.literals.setdefault(part, _TrieNode())
        node.template = template
        for method in rule.methods:
            other = node.by_method.get(method)
            if other is not None and other is not rule:
                raise RouteConflict(
                    index, f"{method} {template} is already covered by rule {other.id!r}"
                )
            node.by_method[method] = rule

    def match(self, method: str, segments: tuple[str, ...]) -> RouteMatch:
        """The rule for this method and decoded path, or :class:`NotFound` /
        :class:`InsufficientScope`."""
        params: dict[str, str] = {}
        node = _walk(self._root, segments, 0, params)
        if node is None or node.template is None:
            raise NotFound()
        rule = node.by_method.get(method)
        if rule is None:
            # SECURITY: a method the client made up (the pure-Python parser takes any token,
            # a secret sent by mistake included) is never echoed.
            shown = method if method in KNOWN_METHODS else "this method"
            raise InsufficientScope(
                f"No policy allows {shown} on this route.", details={"reason": "method"}
            )
        return RouteMatch(rule, node.template, params)


def _walk(
    node: _TrieNode, segments: tuple[str, ...], i: int, params: dict[str, str]
) -> _TrieNode | None:
    if i == len(segments):
        return node if node.template is not None else None
    literal = node.literals.get(segments[i])
    if literal is not None:
        found = _walk(literal, segments, i + 1, params)
        if found is not None:
            return found
    if node.param is not None:
        name, child = node.param
        params[name] = segments[i]
        found = _walk(child, segments, i + 1, params)
        if found is not None:
            return found
        del params[name]
    return None


def template_parts(template: str) -> list[str]:
    """The segments of a template (``/v1/users/{user_id}`` → ``v1``, ``users``, ``{user_id}``)."""
    return [] if template == "/" else template[1:].split("/")
