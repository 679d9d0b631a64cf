"""From a file to validated settings: read the YAML, expand ``${ENV}``, validate, name the field.

``${ENV}`` and ``${ENV:-default}`` placeholders are expanded in every string value before
validation (for secrets): as in a shell, ``${ENV:-default}`` gives the default when the variable
is unset or empty, and a placeholder without a default whose variable is unset is an error
naming the field. Any other ``${`` is an error too (a placeholder missing its ``}``, a name
with a ``-``, a placeholder inside a default): left as it stands, it would become a literal
value, and for a secret a literal that anyone reading the file knows. A value read from the
environment is never expanded again. Mapping keys appear once: a key written twice in one
mapping is an error naming it (YAML would keep the last silently). Validation gets the config
file's directory, so relative file paths are relative to the config file.
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

# ``${NAME}`` or ``${NAME:-default}``: expanded here, and what `gateway init` looks for.
PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_OPENING: Final = "${"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[object, object]:
    """The mapping, once no key is written twice in it (a merge key's ``<<`` entries may be
    overridden by the mapping's own, as YAML means them to be)."""
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: construct_mapping refuses it below
            continue
        if duplicate:
            # SECURITY: one value of a field written twice would win silently (YAML keeps the
            # last); which one an operator reviewed is not known, so neither is taken.
            raise _DuplicateKey(key, key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, mark: yaml.Mark) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.problem_mark = key, mark


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,
)


def read_yaml(path: Path, field_path: str) -> object:
    """The parsed document (PyYAML's safe loader, a key twice in one mapping refused);
    ``field_path`` is what an error names."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(field_path, f"cannot read {path}: {exc.strerror}") from None
    try:
        document: object = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        if isinstance(exc, _DuplicateKey):
            raise ConfigError(
                field_path, f"{path} has the key {exc.key!r} twice in one mapping{where}"
            ) from None
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
    if _OPENING not in value:
        return value
    _check_placeholders(value, path)

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if default is not None and not found:
            return default  # unset or empty, as a shell's ${NAME:-default}
        if found is None:
            raise ConfigError(
                path,
                f"environment variable {name} is not set (`gateway init` writes an "
                "environment file with every variable the config uses; load it first)",
            )
        return found

    return PLACEHOLDER.sub(replace, value)


def _check_placeholders(value: str, path: str) -> None:
    """Every ``${`` in ``value`` opens a whole placeholder, and no default holds another."""
    spans = {match.start(): match for match in PLACEHOLDER.finditer(value)}
    at = value.find(_OPENING)
    while at != -1:
        match = spans.get(at)
        # SECURITY: a ``${`` that is not a whole placeholder would stay in the value as
        # written: a secret field would hold a literal that anyone reading the file knows.
        if match is None or _OPENING in (match.group(2) or ""):
            raise ConfigError(
                path,
                "has a `${` that is not a placeholder: write ${NAME} or ${NAME:-default} "
                "(NAME: letters, digits and _, not starting with a digit; a default holds no "
                "`}` and no other placeholder)",
            )
        at = value.find(_OPENING, match.end())


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
