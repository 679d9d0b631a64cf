"""``policy``: the route policy file (``routes:``), or the same rules inline in the config.

Each rule is validated as a :class:`RouteSpec`, then the rules are compiled into the
:class:`~gateway.authz.policy.Policy` trie; a collision between two rules names the later one
(``policy.routes[4]: GET /v1/x is already covered by rule 'a'``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    Field,
    GetCoreSchemaHandler,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import core_schema

from gateway.authz.policy import (
    HANDLERS,
    KINDS,
    METHODS,
    Policy,
    RouteConflict,
    Rule,
    template_parts,
)
from gateway.config.base import FilePath, Label, OneOf, Section
from gateway.config.errors import problem
from gateway.config.loader import document_of, read_yaml, validate

DEFAULT_POLICY: Final = Path(__file__).resolve().parent.parent / "defaults" / "policy.yaml"


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
    allow: tuple[Annotated[str, OneOf(KINDS)], ...] = Field(
        min_length=1, description="Credential kinds admitted."
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


@dataclass(frozen=True, slots=True)
class Compiled:
    """A field holding a compiled :class:`Policy`, validated as ``source`` (a policy file's or
    the ``policy`` section's shape; that shape is what the JSON Schema shows)."""

    source: type[PolicyFile] | type[PolicySection]

    def __get_pydantic_core_schema__(
        self, _type: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(
            self._compile, handler.generate_schema(self.source)
        )

    @staticmethod
    def _compile(value: object, validate_source: ValidatorFunctionWrapHandler) -> Policy:
        if isinstance(value, Policy):
            return value
        spec = validate_source(value)
        if spec.routes is not None:
            return compile_policy(spec.routes)
        if isinstance(spec, PolicySection) and spec.file is not None:
            return load_policy(spec.file)  # its errors name its own fields: routes[3].allow[1]
        return default_policy()


_POLICY_FILE: Final = TypeAdapter(Annotated[Policy, Compiled(PolicyFile)])


def parse_policy(document: object, *, base_dir: Path | None = None) -> Policy:
    """A policy file's document (``{"routes": [...]}``, or a :class:`Node` of it) as a
    :class:`Policy`; :class:`ConfigError` names the bad field."""
    value, prefix = document_of(document)
    return validate(_POLICY_FILE, value, base_dir=base_dir or Path.cwd(), prefix=prefix)


def load_policy(path: Path) -> Policy:
    return parse_policy(read_yaml(path, "policy.file"), base_dir=path.parent)


@functools.cache
def default_policy() -> Policy:
    """The shipped policy (immutable, so read once)."""
    return load_policy(DEFAULT_POLICY)
