""":class:`ConfigError`, and how a validation failure becomes one that names the field.

Validators raise :func:`problem` with the wording people read; pydantic's own failures (a
missing field, a number out of bounds, a string where a list belongs) are worded the same way
here, so every error reads ``routes[3].allow[1]: 'api-key' is not one of api_key, …``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from gateway.config.durations import Seconds, format_duration


class ConfigError(ValueError):
    """A bad config value; ``str()`` names the field: ``upstreams.live.url: not a URL``."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


def problem(message: str, *at: str | int, **ctx: object) -> PydanticCustomError:
    """A validation failure worded for people; ``at`` names the field below the one being
    validated (``problem("kids must be distinct", "signing_keys")`` from a model validator)."""
    return PydanticCustomError("config", "{problem}", {"problem": message, "at": at, **ctx})


def type_name(value: object) -> str:
    if value is None:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def field_path(loc: Sequence[str | int], prefix: str = "") -> str:
    """``("routes", 3, "allow", 1)`` → ``routes[3].allow[1]``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path = f"{path}.{part}" if path else part
    return path


def config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first failure, as a :class:`ConfigError` naming its field."""
    error = exc.errors(include_url=False)[0]
    ctx: dict[str, Any] = error.get("ctx") or {}
    raised = ctx.get("error")
    if isinstance(raised, ConfigError):
        return raised  # already names its field (a policy file's own errors)
    loc = (*error["loc"], *ctx.get("at", ()))
    return ConfigError(field_path(loc, prefix), _wording(error, ctx))


_LISTS = ("list_type", "tuple_type", "set_type", "frozen_set_type", "iterable_type")
_MAPPINGS = ("dict_type", "model_type", "model_attributes_type")


def _wording(error: ErrorDetails, ctx: dict[str, Any]) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "config":
        if error["loc"] and error["loc"][-1] == "[key]" and "choices" in ctx:
            return f"unknown field (expected one of: {', '.join(ctx['choices'])})"
        return str(ctx["problem"])
    if kind == "missing" or (value is None and kind.endswith("_type")):
        return "is required"
    if kind == "string_type":
        return f"must be a string, got {type_name(value)}"
    if kind in _LISTS:
        return f"must be a list, got {type_name(value)}"
    if kind in _MAPPINGS:
        return f"must be a mapping, got {type_name(value)}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "greater_than_equal":
        return f"must be at least {_show(ctx['ge'], value)}, got {_show(value, value)}"
    if kind == "less_than_equal":
        return f"must be at most {_show(ctx['le'], value)}, got {_show(value, value)}"
    if kind == "extra_forbidden":
        return "unknown field"
    return error["msg"]


def _show(number: float, value: object) -> str:
    """A bound or a value as the field is written: with a unit when ``value`` is a duration."""
    return format_duration(number) if isinstance(value, Seconds) else f"{number:g}"
