"""``${ENV}`` placeholders in a config's string values: expanded at load, checked before.

``${NAME}`` is the variable's value; ``${NAME:-default}`` the default when the variable is unset
or empty, as in a shell. ``${NAME}`` with the variable unset is an error naming the field.
Anything else that reads as ``${`` is an error too: a ``${`` written that does not open a whole
placeholder (a missing ``}``, a name with a ``-``), a placeholder inside a default, a ``${``
that only appears once the placeholders are expanded (``$${EMPTY}{``), and one in a mapping key
(keys are not expanded). Left as written, any of them would be a literal value, and for a
secret a literal that anyone reading the file knows. A value taken from the environment is never
expanded again, and may hold anything.
"""

from __future__ import annotations

import os
import re
from typing import Final

from gateway.config.errors import ConfigError

# ``${NAME}`` or ``${NAME:-default}``: expanded here, and what `gateway init` looks for.
PLACEHOLDER: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_OPENING: Final = "${"
_WRITE = (
    "write ${NAME} or ${NAME:-default} (NAME: letters, digits and _, not starting with a digit; "
    "a default holds no `}` and no other placeholder; a literal `${` can only come from a "
    "variable's value)"
)


def expand_env(value: object, path: str = "", taken: dict[str, str] | None = None) -> object:
    """The document with ``${ENV}`` / ``${ENV:-default}`` expanded in every string value.
    ``taken``, when given, gets each value taken from the environment with its variable's name
    (so that an error can say which variable without quoting its value: :func:`unquoted`)."""
    if isinstance(value, str):
        return _substitute(value, path, taken) if _OPENING in value else value
    if isinstance(value, dict):
        return {
            key: expand_env(item, _key_path(path, key), taken)
            for key, item in _checked(value, path)
        }
    if isinstance(value, list):
        return [expand_env(item, f"{path}[{i}]", taken) for i, item in enumerate(value)]
    return value


def unquoted(error: ConfigError, taken: dict[str, str]) -> ConfigError:
    """``error`` with every value taken from the environment that its message shows replaced
    by the variable's name: a validator's message quotes the value it refused (``'…' is not
    one of``, ``got '…'``), and the variable may hold a secret put in the wrong field by
    mistake. The message goes to ``check-config``'s output and the reload log."""
    problem = error.problem
    # SECURITY: a secret from the environment is named by its variable, never shown.
    for found, name in sorted(taken.items(), key=lambda item: -len(item[0])):
        if not found:
            continue
        for shown in (repr(found), f'"{found}"', *((found,) if len(found) >= 6 else ())):
            problem = problem.replace(shown, f"${{{name}}}'s value")
    return error if problem == error.problem else ConfigError(error.path, problem)


def check_written(value: object, path: str = "") -> None:
    """Every placeholder in the document well formed, without reading the environment (for
    ``gateway init``, which writes the variables' file)."""
    if isinstance(value, str):
        _check_placeholders(value, path)
    elif isinstance(value, dict):
        for key, item in _checked(value, path):
            check_written(item, _key_path(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_written(item, f"{path}[{i}]")


def _key_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _checked(mapping: dict[object, object], path: str) -> list[tuple[object, object]]:
    for key in mapping:
        if isinstance(key, str) and _OPENING in key:
            raise ConfigError(
                _key_path(path, key), "a key is not expanded: placeholders go in values only"
            )
    return list(mapping.items())


def _substitute(value: str, path: str, taken: dict[str, str] | None = None) -> str:
    _check_placeholders(value, path)
    out: list[str] = []
    from_env: list[tuple[int, int]] = []  # where the variables' own values sit in the result
    size = end = 0
    for match in PLACEHOLDER.finditer(value):
        written = value[end : match.start()]
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if default is not None and not found:
            piece, env = default, False  # unset or empty, as a shell's ${NAME:-default}
        elif found is None:
            raise ConfigError(
                path,
                f"environment variable {name} is not set (`gateway init` writes an "
                "environment file with every variable the config uses; load it first)",
            )
        else:
            piece, env = found, True
            if taken is not None:
                taken[found] = name
        out += (written, piece)
        size += len(written)
        if env:
            from_env.append((size, size + len(piece)))
        size += len(piece)
        end = match.end()
    out.append(value[end:])
    result = "".join(out)
    at = result.find(_OPENING)
    while at != -1:
        # SECURITY: a ``${`` that expansion put together from what was written around a
        # placeholder (``$${EMPTY}{``) is as literal as a broken one.
        if not any(start <= at and at + 2 <= stop for start, stop in from_env):
            raise ConfigError(path, f"expands to a `${{` that is not a placeholder: {_WRITE}")
        at = result.find(_OPENING, at + 1)
    return result


def _check_placeholders(value: str, path: str) -> None:
    """Every ``${`` written in ``value`` opens a whole placeholder, and no default holds
    another."""
    spans = {match.start(): match for match in PLACEHOLDER.finditer(value)}
    at = value.find(_OPENING)
    while at != -1:
        match = spans.get(at)
        # SECURITY: a ``${`` that is not a whole placeholder would stay in the value as
        # written: a secret field would hold a literal that anyone reading the file knows.
        if match is None or _OPENING in (match.group(2) or ""):
            raise ConfigError(path, f"has a `${{` that is not a placeholder: {_WRITE}")
        at = value.find(_OPENING, match.end())
