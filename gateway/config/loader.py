"""From a file to validated settings: read the YAML, expand ``${ENV}``, validate, name the field.

``${ENV}`` and ``${ENV:-default}`` placeholders are expanded in every string value before
validation (for secrets); a placeholder without a default whose variable is unset is an error
naming the field. Validation gets the config file's directory, so relative file paths are
relative to the config file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from gateway.config.base import parse_duration
from gateway.config.errors import ConfigError, config_error

T = TypeVar("T")

_ENV: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_yaml(path: Path, field_path: str) -> object:
    """The parsed document (``safe_load`` only); ``field_path`` is what an error names."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(field_path, f"cannot read {path}: {exc.strerror}") from None
    try:
        document: object = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(field_path, f"{path} is not valid YAML{where}") from None
    return document


def expand_env(value: object, path: str = "") -> object:
    """The document with ``${ENV}`` / ``${ENV:-default}`` expanded in every string value."""
    if isinstance(value, str):
        return _substitute(value, path)
    if isinstance(value, dict):
        return {
            key: expand_env(item, f"{path}.{key}" if path else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [expand_env(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def _substitute(value: str, path: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None:
            if default is None:
                raise ConfigError(
                    path,
                    f"environment variable {name} is not set (`gateway init` writes an "
                    "environment file with every variable the config uses; load it first)",
                )
            return default
        return found

    return _ENV.sub(replace, value)


def validate(
    adapter: TypeAdapter[T],
    document: object,
    *,
    base_dir: Path,
    prefix: str = "",
    context: Mapping[str, object] | None = None,
) -> T:
    """Expand and validate ``document``; the first failure is a :class:`ConfigError`.
    ``context`` is passed to the validators (with ``base_dir``)."""
    expanded = expand_env(document, prefix)
    try:
        return adapter.validate_python(expanded, context={**(context or {}), "base_dir": base_dir})
    except ValidationError as exc:
        raise config_error(exc, prefix) from None


@dataclass(frozen=True, slots=True)
class Node:
    """A raw value and the field path it sits at: what :func:`~gateway.config.parse_settings`
    and :func:`~gateway.config.parse_policy` accept besides a plain document, and a way to read
    one duration outside a file (``Node(args.ttl, "--ttl").duration(maximum=86400)``)."""

    value: object
    path: str = ""

    def duration(self, *, minimum: float | None = None, maximum: float | None = None) -> float:
        if self.value is None:
            raise ConfigError(self.path, "is required")
        try:
            seconds = parse_duration(expand_env(self.value, self.path))
        except PydanticCustomError as exc:
            raise ConfigError(self.path, exc.message()) from None
        if minimum is not None and seconds < minimum:
            raise ConfigError(self.path, f"must be at least {minimum:g}, got {seconds:g}")
        if maximum is not None and seconds > maximum:
            raise ConfigError(self.path, f"must be at most {maximum:g}, got {seconds:g}")
        return seconds


def document_of(value: object) -> tuple[object, str]:
    """A :class:`Node`'s value and path, or the value itself at the root."""
    return (value.value, value.path) if isinstance(value, Node) else (value, "")
