"""The field table of docs/configuration.md, generated from the models.

``python -m gateway.settings --write docs/configuration.md`` rewrites the table between the
``<!-- fields:start -->`` and ``<!-- fields:end -->`` markers; ``--check`` exits 1 when it is
stale (tests/config/test_doc.py does the same in the suite). The model is the gateway's whole
config model (:data:`gateway.settings.MODEL`: these sections and the credential kinds').
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, TypeGuard, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gateway.config.base import Label, OneOf, Section, ValidatedAs
from gateway.config.durations import format_duration
from gateway.config.settings import Settings

START: Final = "<!-- fields:start -->"
END: Final = "<!-- fields:end -->"
NOTE: Final = (
    "<!-- generated from the config models by `python -m gateway.settings --write "
    "docs/configuration.md`; edit the models, not this table -->"
)


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    field: str
    type: str
    default: str
    description: str


def rows(model: type[Section] = Settings, section: str = "") -> Iterator[Row]:
    """One row per field, depth first; a nested section's rows follow under its own path."""
    nested: list[tuple[type[Section], str]] = []
    for name, info in model.model_fields.items():
        if name in model.derived:
            continue
        key = info.alias or name
        path = f"{section}.{key}" if section else key
        inner, shape = _section_of(info)
        yield Row(
            section or "(top level)",
            key,
            _type(info.annotation, info.metadata),
            _default(info),
            info.description or "",
        )
        if inner is not None:
            nested.append((inner, path + shape))
    for inner, path in nested:
        yield from rows(inner, path)


def table(model: type[Section] = Settings) -> str:
    lines = [
        NOTE,
        "",
        "| section | field | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for row in rows(model):
        section = f"`{row.section}`" if row.section != "(top level)" else row.section
        cells = (section, f"`{row.field}`", row.type, row.default, row.description)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def replace_table(text: str, model: type[Section] = Settings) -> str:
    start, end = text.index(START) + len(START), text.index(END)
    return f"{text[:start]}\n{table(model)}\n\n{text[end:]}"


def main(
    argv: list[str] | None = None,
    *,
    model: type[Section] = Settings,
    prog: str = "python -m gateway.settings",
) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="FILE", help="rewrite the table in FILE")
    mode.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE's is stale")
    args = parser.parse_args(argv)
    path: Path = args.write or args.check
    text = path.read_text(encoding="utf-8")
    fresh = replace_table(text, model)
    if args.write:
        path.write_text(fresh, encoding="utf-8")
        return 0
    if fresh != text:
        sys.stderr.write(f"{path}: the field table is stale; run {parser.prog} --write {path}\n")
        return 1
    return 0


# -- types and defaults ---------------------------------------------------------------------


def _section_of(info: FieldInfo) -> tuple[type[Section] | None, str]:
    """The section a field holds (directly, per name, or per list item) and its path suffix."""
    for meta in info.metadata:
        if isinstance(meta, ValidatedAs):
            return meta.source, ""
    return _section_in(info.annotation)


def _section_in(tp: object) -> tuple[type[Section] | None, str]:
    origin, args = get_origin(tp), get_args(tp)
    if _is_section(tp):
        return tp, ""
    value = args[1] if origin is dict else None
    if _is_section(value):
        return value, ".NAME"
    item = _unwrap(args[0])[0] if origin in (tuple, frozenset) and args else None
    if _is_section(item):
        return item, "[]"
    if origin in (Union, types.UnionType):  # sections | None
        for arg in args:
            found = _section_in(_unwrap(arg)[0])
            if found[0] is not None:
                return found
    return None, ""


def _is_section(tp: object) -> TypeGuard[type[Section]]:
    return isinstance(tp, type) and issubclass(tp, Section)


def _unwrap(tp: object) -> tuple[object, tuple[object, ...]]:
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        return base, tuple(meta)
    return tp, ()


def _label(metadata: list[object] | tuple[object, ...]) -> str | None:
    for meta in metadata:
        if isinstance(meta, Label):
            return meta.text
        if isinstance(meta, OneOf):
            return "one of " + ", ".join(f"`{c}`" for c in meta.choices)
    return None


def _type(tp: object, metadata: list[object] | tuple[object, ...] = ()) -> str:
    tp, inner_meta = _unwrap(tp)
    metadata = (*metadata, *inner_meta)
    if any(isinstance(m, ValidatedAs) for m in metadata):
        return "section"
    label = _label(metadata) or _base_label(tp)
    bounds = _bounds(metadata, duration=label == "duration")
    return f"{label}, {bounds}" if bounds else label


def _base_label(tp: object) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None))
    if origin in (tuple, frozenset):
        return f"list of {_plural(_type(args[0]))}"
    if origin is dict and _is_section(args[1]):
        return "sections by name"
    if origin is dict:
        return f"mapping of {_plural(_type(args[0]))} to {_plural(_type(args[1]))}"
    if _is_section(tp):
        return "section"
    return {str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        tp if isinstance(tp, type) else type(None), str(tp)
    )


def _plural(label: str) -> str:
    if label.startswith("one of "):
        return label[len("one of ") :]
    return {"section": "sections", "string": "strings"}.get(label, label + "s")


def _bounds(metadata: tuple[object, ...], *, duration: bool) -> str:
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    show = format_duration if duration else _number
    if low is not None and high is not None:
        return f"{show(low)} to {show(high)}"
    if low is not None:
        return f"at least {show(low)}"
    if high is not None:
        return f"at most {show(high)}"
    return ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        validated = next((m for m in info.metadata if isinstance(m, ValidatedAs)), None)
        if validated is not None and validated.default_text:
            return validated.default_text
        if _section_of(info)[0] is not None and not _label(info.metadata):
            return ""
        if info.default_factory is dict:
            return "`{}`"
        value: object = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if _section_of(info)[0] is not None and _label(info.metadata):
        value = getattr(value, "url", value)
    return _value(value, duration=_label(info.metadata) == "duration")


def _value(value: object, *, duration: bool = False) -> str:
    if value is None or value == b"":
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if duration and isinstance(value, int | float):
        return f"`{format_duration(value)}`"
    if isinstance(value, frozenset):
        value = sorted(value, key=str)
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{value}`"
