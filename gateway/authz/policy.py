"""The route policy, compiled once at load into a segment trie.

A rule names the methods and path templates it covers, which credential kinds it allows, which
path parameter is bound to a user-bound credential's subject, and optionally the resource (for
member-token scopes), the SDK scope, or a gateway-owned handler. Matching walks the trie one
segment at a time (literal children before the parameter child), so its cost depends on the
path's depth, not on the number of rules. A path that matches no template is 404; a template whose
methods do not include the request's is 403: the gateway fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gateway.confignode import ConfigError, Node
from gateway.errors import InsufficientScope, NotFound

HANDLERS: Final = ("user_token", "user_token_refresh", "mobile_token", "sdk_initialize")
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The names of the registry's kinds (gateway.authn.registry); checked against it at start-up.
KINDS: Final = (
    "api_key",
    "user_token",
    "mobile_token",
    "sdk_session",
    "member_token",
    "team_session",
)


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
        self.rules = rules
        self._root = _TrieNode()
        for rule in rules:
            for template in rule.templates:
                self._insert(rule, template)

    def _insert(self, rule: Rule, template: str) -> None:
        node = self._root
        for part in _template_parts(template):
            if part.startswith("{"):
                name = part[1:-1]
                if node.param is None:
                    node.param = (name, _TrieNode())
                elif node.param[0] != name:
                    raise ConfigError(
                        f"routes[{rule.id}]",
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
                raise ConfigError(
                    f"routes[{rule.id}]",
                    f"{method} {template} is already covered by rule {other.id!r}",
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
            raise InsufficientScope(
                f"No policy allows {method} on this route.", details={"reason": "method"}
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


def _template_parts(template: str) -> list[str]:
    return [] if template == "/" else template[1:].split("/")


def _parse_template(node: Node) -> tuple[str, set[str]]:
    template = node.str()
    if not template.startswith("/"):
        raise node.error(f"{template!r} must start with '/'")
    names: set[str] = set()
    for part in _template_parts(template):
        if part.startswith("{") and part.endswith("}") and part[1:-1].isidentifier():
            if part[1:-1] in names:
                raise node.error(f"parameter {part} appears twice")
            names.add(part[1:-1])
        elif not part or any(ch in part for ch in "{}%;\\") or part in (".", ".."):
            raise node.error(f"{template!r}: segment {part!r} is not a literal or {{name}}")
    return template, names


def parse_policy(root: Node) -> Policy:
    """Parse ``routes:`` into a :class:`Policy`, naming the bad field on any error."""
    rules: list[Rule] = []
    seen_ids: set[str] = set()
    for node in root["routes"].list(allow_empty=False):
        node.fields(
            "id", "methods", "paths", "allow", "bind", "resource", "sdk_scope", "handler", "group"
        )
        rule_id = node["id"].str()
        if rule_id in seen_ids:
            raise node["id"].error(f"duplicate rule id {rule_id!r}")
        seen_ids.add(rule_id)
        methods = frozenset(m.str(choices=METHODS) for m in node["methods"].list(allow_empty=False))
        templates: list[str] = []
        params: set[str] | None = None
        for path_node in node["paths"].list(allow_empty=False):
            template, names = _parse_template(path_node)
            templates.append(template)
            params = names if params is None else params & names
        allow = frozenset(a.str(choices=KINDS) for a in node["allow"].list(allow_empty=False))
        bind = node["bind"].str(None)
        if bind is not None and bind not in (params or set()):
            raise node["bind"].error(f"{{{bind}}} is not a parameter of every path of this rule")
        handler = node["handler"].str(None, choices=HANDLERS)
        rules.append(
            Rule(
                id=rule_id,
                methods=methods,
                templates=tuple(templates),
                allow=allow,
                bind=bind,
                resource=node["resource"].str(None),
                sdk_scope=node["sdk_scope"].str(None),
                handler=handler,
                group=node["group"].str("default"),
            )
        )
    try:
        return Policy(tuple(rules))
    except ConfigError as exc:
        index = next(i for i, r in enumerate(rules) if f"routes[{r.id}]" == exc.path)
        raise ConfigError(
            f"{root.path + '.' if root.path else ''}routes[{index}]", exc.problem
        ) from None
