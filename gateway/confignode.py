"""A typed reader over parsed YAML that names the field in every error.

The config and the policy are parsed with it once, at load; nothing downstream ever sees raw
YAML. Errors read like ``routes[3].allow[1]: 'api-key' is not one of api_key, user_token, …``.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Iterator
from typing import Any, Final

from yarl import URL


class ConfigError(ValueError):
    """A bad config value; ``str()`` names the field: ``upstreams.live.url: not a URL``."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


_MISSING: Final = object()
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class Node:
    """One value of the document together with its path."""

    __slots__ = ("path", "value")

    def __init__(self, value: Any, path: str = "") -> None:
        self.value = value
        self.path = path

    # -- structure -------------------------------------------------------------------------
    @property
    def present(self) -> bool:
        return self.value is not _MISSING and self.value is not None

    def error(self, problem: str) -> ConfigError:
        return ConfigError(self.path, problem)

    def fields(self, *allowed: str) -> Node:
        """Require a mapping whose keys are all in ``allowed`` (a typo is an error, not a
        silently ignored setting)."""
        if not self.present:
            return Node({}, self.path)
        if not isinstance(self.value, dict):
            raise self.error(f"must be a mapping, got {_type_name(self.value)}")
        for key in self.value:
            if not isinstance(key, str):
                raise self.error(f"keys must be strings, got {key!r}")
            if key not in allowed:
                raise ConfigError(
                    self._join(key), f"unknown field (expected one of: {', '.join(allowed)})"
                )
        return self

    def __getitem__(self, key: str) -> Node:
        value = self.value.get(key, _MISSING) if isinstance(self.value, dict) else _MISSING
        return Node(value, self._join(key))

    def items(self) -> Iterator[tuple[str, Node]]:
        if not self.present:
            return
        if not isinstance(self.value, dict):
            raise self.error(f"must be a mapping, got {_type_name(self.value)}")
        for key, value in self.value.items():
            yield str(key), Node(value, self._join(str(key)))

    def list(self, *, allow_empty: bool = True) -> list[Node]:
        if not self.present:
            if allow_empty:
                return []
            raise self.error("is required")
        if not isinstance(self.value, list):
            raise self.error(f"must be a list, got {_type_name(self.value)}")
        if not self.value and not allow_empty:
            raise self.error("must not be empty")
        return [Node(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def _join(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    # -- scalars ---------------------------------------------------------------------------
    def _raw(self, default: Any) -> Any:
        if self.present:
            value = self.value
            return _substitute(value, self.path) if isinstance(value, str) else value
        if default is _MISSING:
            raise self.error("is required")
        return default

    def str(self, default: Any = _MISSING, *, choices: tuple[str, ...] = ()) -> Any:
        value = self._raw(default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self.error(f"must be a string, got {_type_name(value)}")
        if choices and value not in choices:
            raise self.error(f"{value!r} is not one of {', '.join(choices)}")
        return value

    def int(
        self, default: Any = _MISSING, *, minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        value = self._raw(default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"must be an integer, got {_type_name(value)}")
        self._bounds(value, minimum, maximum)
        return value

    def bool(self, default: Any = _MISSING) -> Any:
        value = self._raw(default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise self.error(f"must be true or false, got {_type_name(value)}")
        return value

    def duration(
        self, default: Any = _MISSING, *, minimum: float | None = None, maximum: float | None = None
    ) -> Any:
        """Seconds, from a number or a string such as ``500ms``, ``5m``, ``24h``, ``90d``."""
        value = self._raw(default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool):
            raise self.error("must be a duration such as 30s, 5m, 24h")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value)):
            seconds = float(match.group(1)) * _UNIT[match.group(2)]
        else:
            raise self.error(f"must be a duration such as 30s, 5m, 24h, got {value!r}")
        self._bounds(seconds, minimum, maximum)
        return seconds

    def url(
        self, default: Any = _MISSING, *, schemes: tuple[builtins.str, ...] = ("http", "https")
    ) -> Any:
        value = self.str(default)
        if value is default and default is not _MISSING:
            return value
        try:
            url = URL(value)
        except (ValueError, TypeError):
            raise self.error("not a URL") from None
        if url.scheme not in schemes or not url.host:
            raise self.error(f"not a URL (expected {' or '.join(schemes)}://host…)")
        return url

    def _bounds(self, value: float, minimum: float | None, maximum: float | None) -> None:
        if minimum is not None and value < minimum:
            raise self.error(f"must be at least {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise self.error(f"must be at most {maximum:g}, got {value:g}")


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


def _type_name(value: Any) -> str:
    if value is None or value is _MISSING:
        return "nothing"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
