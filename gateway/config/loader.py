"""From a file to validated settings: read the YAML, expand ``${ENV}``, validate, name the field.

The YAML is read with PyYAML's safe loader, refusing a key written twice in one mapping (YAML
would keep the last silently), also inside the mappings a merge key (``<<``) brings in.
``${ENV}`` placeholders are expanded in every string value before validation
(:mod:`gateway.config.placeholders`). Validation gets the config file's directory, so relative
file paths are relative to the config file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from gateway.config.base import parse_duration
from gateway.config.durations import format_duration
from gateway.config.errors import ConfigError, config_error
from gateway.config.placeholders import expand_env, unquoted

T = TypeVar("T")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping."""


_MERGE: Final = "tag:yaml.org,2002:merge"


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[object, object]:
    """The mapping, once no key is written twice in it (a merge key's ``<<`` entries may be
    overridden by the mapping's own, as YAML means them to be)."""
    _unique_keys(loader, node)
    return loader.construct_mapping(node)


def _unique_keys(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> None:
    """No key twice in ``node``, nor in a mapping it merges (which PyYAML flattens without
    constructing it on its own); one ``<<`` at most."""
    seen: set[object] = set()
    merges = 0
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            merges += 1
            if merges > 1:
                raise _DuplicateKey("<<", key_node.start_mark)
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    _unique_keys(loader, source)
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


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, mark: yaml.Mark) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.problem_mark = key, mark


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's words for what is wrong (``: could not find expected ':'``), with any quoted
    text longer than a few characters left out: it is the file's own, and may be a secret."""
    problem = getattr(exc, "problem", None)
    if not isinstance(problem, str) or not problem:
        return ""
    # SECURITY: the parser quotes the file (an unknown tag, an alias, a scalar): only short
    # quotes (a ':' or a '\t') are kept.
    words = re.sub(r'"[^"]{4,}"', "'…'", problem)
    words = re.sub(r"'(?!<)[^']{4,}'", "'…'", words)  # '<stream end>' kept
    for quote in "'\"":
        if words.count(quote) % 2:  # a quote inside a quote: everything from it on goes
            words = words.partition(quote)[0].rstrip()
    words = words[:120]
    return f": {words}"


def read_yaml(path: Path, field_path: str) -> object:
    """The parsed document (PyYAML's safe loader, a key twice in one mapping refused);
    ``field_path`` is what an error names."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(field_path, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        # SECURITY: named by position only: the exception's repr quotes the whole file (the
        # secrets written in it included), and would reach the log.
        raise ConfigError(
            field_path, f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    try:
        document: object = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        if isinstance(exc, _DuplicateKey):
            raise ConfigError(
                field_path, f"{path} has the key {exc.key!r} twice in one mapping{where}"
            ) from None
        what = _yaml_problem(exc)
        raise ConfigError(field_path, f"{path} is not valid YAML{where}{what}") from None
    return document


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
    taken: dict[str, str] = {}
    expanded = expand_env(document, prefix, taken)
    try:
        return adapter.validate_python(expanded, context={**(context or {}), "base_dir": base_dir})
    except ValidationError as exc:
        raise unquoted(config_error(exc, prefix), taken) from None


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
            raise ConfigError(
                self.path,
                f"must be at least {format_duration(minimum)}, got {format_duration(seconds)}",
            )
        if maximum is not None and seconds > maximum:
            raise ConfigError(
                self.path,
                f"must be at most {format_duration(maximum)}, got {format_duration(seconds)}",
            )
        return float(seconds)


def document_of(value: object) -> tuple[object, str]:
    """A :class:`Node`'s value and path, or the value itself at the root."""
    return (value.value, value.path) if isinstance(value, Node) else (value, "")
