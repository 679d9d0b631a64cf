"""The JSON Schema of the config file and of a policy file, generated from the models.

``gateway config schema`` prints the first (``--policy`` the second); config/gateway.schema.json
and config/policy.schema.json are the same text, for editors (``# yaml-language-server:
$schema=…``). Every scalar may also be an ``${ENV}`` placeholder, as the loader expands those
before validation.
"""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from gateway.config.base import Section
from gateway.config.settings import Settings

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
PLACEHOLDER: Final = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    "description": "A string with an ${ENV} or ${ENV:-default} placeholder, expanded at load.",
}
PLACEHOLDER_REF: Final = {"$ref": "#/$defs/EnvPlaceholder"}
_SCALARS: Final = ("integer", "number", "boolean")
_STRING_RULES: Final = ("pattern", "enum", "format", "minLength", "contentEncoding")


class _Generator(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "Port" above `port` says nothing; the description does


def config_schema(model: type[Settings] = Settings) -> dict[str, Any]:
    """The JSON Schema of a config file validated as ``model`` (the gateway's is
    :data:`gateway.settings.MODEL`, with the credential kinds' sections)."""
    return _finish(TypeAdapter(model), "health-gateway config")


def policy_schema(model: type[Section]) -> dict[str, Any]:
    """The JSON Schema of a route policy file (:class:`gateway.authz.policy_file.PolicyFile`)."""
    return _finish(TypeAdapter(model), "health-gateway route policy")


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _finish(adapter: TypeAdapter[Any], title: str) -> dict[str, Any]:
    schema = adapter.json_schema(mode="validation", schema_generator=_Generator)
    schema.pop("title", None)
    _placeholders(schema)
    schema.setdefault("$defs", {})["EnvPlaceholder"] = PLACEHOLDER
    return {"$schema": DIALECT, "title": title, **schema}


def _placeholders(node: Any) -> None:
    """Let every constrained scalar also be a placeholder string (in place)."""
    if isinstance(node, list):
        for item in node:
            _placeholders(item)
        return
    if not isinstance(node, dict):
        return
    for key in ("properties", "$defs"):
        for name, child in node.get(key, {}).items():
            node[key][name] = _scalar_or_placeholder(child)
            _placeholders(node[key][name])
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _scalar_or_placeholder(node[key])
            _placeholders(node[key])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            _placeholders(node[key])


def _scalar_or_placeholder(schema: dict[str, Any]) -> dict[str, Any]:
    if _constrained_scalar(schema):
        outer: dict[str, Any] = {
            k: schema.pop(k) for k in ("description", "default") if k in schema
        }
        return {"anyOf": [schema, PLACEHOLDER_REF], **outer}
    alternatives = schema.get("anyOf")
    if (
        isinstance(alternatives, list)
        and any(_constrained_scalar(a) for a in alternatives)
        and PLACEHOLDER_REF not in alternatives
    ):
        alternatives.append(PLACEHOLDER_REF)
    return schema


def _constrained_scalar(schema: object) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    return kind in _SCALARS or (kind == "string" and any(r in schema for r in _STRING_RULES))
