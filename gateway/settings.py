"""The gateway's config model: the sections of :mod:`gateway.config`, the route policy
(:mod:`gateway.authz.policy_file`), and the sections the credential kinds declare in their own
modules (``member_tokens``, ``identity_providers``, ``introspection``, … see
:func:`gateway.authn.registry.sections`).

Every reader of a config file goes through here, so a kind's section is validated, documented
(docs/configuration.md's table) and in the JSON Schema (``gateway config schema``) without the
config package knowing the kinds or the policy, and a rule's ``allow`` is checked against the
registry's kinds: imports point down (``.importlinter``).

``python -m gateway.settings --write docs/configuration.md`` regenerates the field table;
``--check`` fails when it is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

from pydantic import Field

from gateway.authn.registry import KINDS, sections
from gateway.authz.policy import Policy
from gateway.authz.policy_file import (
    KIND_NAMES,
    POLICY_FIELD,
    PolicyFile,
    default_policy,
)
from gateway.authz.policy_file import load_policy as _load_policy
from gateway.config import ConfigError, Settings, doc, schema
from gateway.config import settings as config_settings

MODEL: Final[type[Settings]] = Settings.extended(
    {
        "policy": (
            POLICY_FIELD,
            Field(default_factory=default_policy, description="The route policy."),
        ),
        **sections(),
    }
)
# The names a policy rule's ``allow`` may use: every kind of the registry.
KIND_NAMES_ALLOWED: Final = tuple(module.KIND.name for module in KINDS)
_CONTEXT: Final = {KIND_NAMES: KIND_NAMES_ALLOWED}


def load_settings(path: str | Path) -> Settings:
    """Read and validate a config file; :class:`~gateway.config.ConfigError` names the field."""
    return _groups_routed(config_settings.load_settings(path, model=MODEL, context=_CONTEXT))


def _groups_routed(settings: Settings) -> Settings:
    """Every route group a rate limit or a CORS entry names is one a policy rule is in: a
    misspelt group (``defualt``) would otherwise leave its routes without the limit, silently."""
    groups = {rule.group for rule in settings.section("policy", Policy).rules}
    named = [
        (f"rate_limits.rules[{index}].group", rule.group)
        for index, rule in enumerate(settings.rate_limits.rules)
    ]
    named += [
        (f"cors[{index}].groups", group)
        for index, entry in enumerate(settings.cors)
        for group in sorted(entry.groups)
    ]
    for field, group in named:
        if group not in groups:
            raise ConfigError(
                field,
                f"no policy rule is in group {group!r} (the policy's groups: "
                f"{', '.join(sorted(groups))})",
            )
    return settings


def parse_settings(document: object, *, base_dir: Path, source: Path | None = None) -> Settings:
    """Validate a config document (or a :class:`~gateway.config.Node` of one)."""
    return _groups_routed(
        config_settings.parse_settings(
            document, model=MODEL, base_dir=base_dir, source=source, context=_CONTEXT
        )
    )


def load_policy(path: Path) -> Policy:
    """Read and validate a route policy file, ``allow`` checked against the registry."""
    return _load_policy(path, kinds=KIND_NAMES_ALLOWED)


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config file."""
    return schema.config_schema(MODEL)


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a route policy file."""
    return schema.policy_schema(PolicyFile)


if __name__ == "__main__":
    sys.exit(doc.main(model=MODEL, prog="python -m gateway.settings"))
