"""``policy``: the route policy file (``routes:``), or the same rules inline in the config.

Each rule is validated as a :class:`RouteSpec`, then the rules are compiled into the
:class:`~gateway.authz.policy.Policy` trie; a collision between two rules names the later one
(``policy.routes[4]: GET /v1/x is already covered by rule 'a'``). The section belongs to the
policy (authz), not to the config layer below it: :mod:`gateway.settings` adds it to the
config model, and gives the credential kinds' names that ``allow`` is checked against.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Final

from pydantic import AfterValidator, Field, TypeAdapter, WithJsonSchema, model_validator

from gateway.authz.policy import HANDLERS, Policy, RouteConflict, Rule, template_parts
from gateway.config.base import (
    METHODS,
    ContextChoices,
    FilePath,
    Label,
    OneOf,
    Section,
    ValidatedAs,
)
from gateway.config.errors import ConfigError, problem
from gateway.config.loader import document_of, read_yaml, validate

DEFAULT_POLICY: Final = Path(__file__).resolve().parent.parent / "defaults" / "policy.yaml"
# The validation-context key under which the credential kinds' names are given.
KIND_NAMES: Final = "credential_kinds"


def _template(template: str) -> str:
    if not template.startswith("/"):
        raise problem(f"{template!r} must start with '/'")
    names: set[str] = set()
    for part in template_parts(template):
        if part.startswith("{") and part.endswith("}") and part[1:-1].isidentifier():
            if part[1:-1] in names:
                raise problem(f"parameter {part} appears twice")
            names.add(part[1:-1])
        elif not part or any(ch in part for ch in "{}%;\\") or part in (".", ".."):
            raise problem(f"{template!r}: segment {part!r} is not a literal or {{name}}")
    return template


def _parameters(template: str) -> set[str]:
    return {part[1:-1] for part in template_parts(template) if part.startswith("{")}


Template = Annotated[
    str,
    AfterValidator(_template),
    WithJsonSchema({"type": "string", "pattern": "^/"}),
    Label("path template"),
]


class RouteSpec(Section):
    """A rule: the methods and path templates it covers, and who may use them."""

    id: str = Field(description="Unique; the metrics label.")
    methods: tuple[Annotated[str, OneOf(METHODS)], ...] = Field(
        min_length=1, description="Methods covered."
    )
    paths: tuple[Template, ...] = Field(
        min_length=1,
        description='Templates such as `"/v1/users/{user_id}/scores"` (quote them: `{…}` is '
        "YAML flow syntax).",
    )
    allow: tuple[Annotated[str, ContextChoices(KIND_NAMES)], ...] = Field(
        min_length=1,
        description="Credential kinds admitted (`api_key`, `user_token`, `mobile_token`, "
        "`sdk_session`, `member_token`, `team_session`, `oauth2_token`: the kinds of "
        "gateway/authn/registry.py).",
    )
    bind: str | None = Field(
        None,
        description="The path parameter a user-bound credential's subject must equal, else 403 "
        "`wrong_user`.",
    )
    resource: str | None = Field(
        None, description="What a narrowed member token needs a scope for (`scores:read`, …)."
    )
    sdk_scope: str | None = Field(None, description="The scope an SDK session must carry.")
    handler: Annotated[str, OneOf(HANDLERS)] | None = Field(
        None, description="A gateway-owned endpoint answering instead of the upstream."
    )
    group: str = Field("default", description="The rate-limit and CORS group.")

    @model_validator(mode="after")
    def _bound_everywhere(self) -> RouteSpec:
        if self.bind is not None and not all(self.bind in _parameters(p) for p in self.paths):
            raise problem(f"{{{self.bind}}} is not a parameter of every path of this rule", "bind")
        return self


Routes = Annotated[tuple[RouteSpec, ...], Field(min_length=1)]


class PolicyFile(Section):
    """A route policy file."""

    routes: Routes = Field(description="The rules; a path no template matches is 404.")


class PolicySection(Section):
    """The route policy: a file, or the rules inline; neither means the shipped default."""

    file: FilePath | None = Field(None, description="A policy file.")
    routes: Routes | None = Field(None, description="The rules, inline.")

    @model_validator(mode="after")
    def _one_source(self) -> PolicySection:
        if self.file is not None and self.routes is not None:
            raise problem("give policy.file or policy.routes, not both", "file")
        return self


def compile_policy(routes: tuple[RouteSpec, ...]) -> Policy:
    """The trie for validated rules; a duplicate id or a collision names the rule."""
    seen: set[str] = set()
    rules: list[Rule] = []
    for index, spec in enumerate(routes):
        if spec.id in seen:
            raise problem(f"duplicate rule id {spec.id!r}", "routes", index, "id")
        seen.add(spec.id)
        rules.append(
            Rule(
                id=spec.id,
                methods=frozenset(spec.methods),
                templates=spec.paths,
                allow=frozenset(spec.allow),
                bind=spec.bind,
                resource=spec.resource,
                sdk_scope=spec.sdk_scope,
                handler=spec.handler,
                group=spec.group,
            )
        )
    try:
        return Policy(tuple(rules))
    except RouteConflict as exc:
        raise problem(exc.problem, "routes", exc.index) from None


def _from_spec(spec: PolicyFile | PolicySection, context: dict[str, object]) -> Policy:
    if spec.routes is not None:
        return compile_policy(spec.routes)
    if isinstance(spec, PolicySection) and spec.file is not None:
        # its errors name its own fields: routes[3].allow[1]
        kinds = context.get(KIND_NAMES)
        return load_policy(spec.file, kinds=kinds if isinstance(kinds, tuple) else None)
    return default_policy()


# The ``policy`` field of the config model, and a policy file, as compiled tries.
POLICY_FIELD = Annotated[
    Policy, ValidatedAs(PolicySection, _from_spec, Policy, default_text="the shipped policy")
]
_POLICY_FILE: Final = TypeAdapter(Annotated[Policy, ValidatedAs(PolicyFile, _from_spec, Policy)])


def parse_policy(
    document: object, *, base_dir: Path | None = None, kinds: Collection[str] | None = None
) -> Policy:
    """A policy file's document (``{"routes": [...]}``, or a :class:`Node` of it) as a
    :class:`Policy`; :class:`ConfigError` names the bad field. ``kinds``: the credential kinds
    ``allow`` may name (:mod:`gateway.settings` gives the registry's)."""
    value, prefix = document_of(document)
    context = {KIND_NAMES: tuple(kinds)} if kinds is not None else {}
    return validate(
        _POLICY_FILE, value, base_dir=base_dir or Path.cwd(), prefix=prefix, context=context
    )


def load_policy(path: Path, *, kinds: Collection[str] | None = None) -> Policy:
    """The policy file at ``path``; an error in it names the file and then the field
    (``policy.yaml: routes[0].allow[0]: …``), so it is not looked for in the config file."""
    document = read_yaml(path, "policy.file")
    try:
        return parse_policy(document, base_dir=path.parent, kinds=kinds)
    except ConfigError as exc:
        raise ConfigError(
            f"{path.name}: {exc.path}" if exc.path else path.name, exc.problem
        ) from None


@functools.cache
def default_policy() -> Policy:
    """The shipped policy (immutable, so read once)."""
    return load_policy(DEFAULT_POLICY)
