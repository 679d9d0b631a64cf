"""A JSON object a client sends, read so that it can mean only one thing.

RFC 8259 §4 leaves an object that names a member twice (``{"user_id": "usr_a", "user_id":
"usr_b"}``) to each parser: most keep the last value, some the first, some refuse. A proxy or a
web application firewall in front of the gateway, or an audit trail that keeps the raw body,
could then read another user than the one the gateway acted for (a parser differential). The
gateway refuses such a body instead, as it refuses a token with a duplicate member
(:mod:`gateway.authn.jws_checks`) and a query parameter given twice (the admin API).

What is valid JSON is orjson's strict reading (RFC 8259: UTF-8, no ``NaN``, no trailing
commas); the standard library's parser is asked only whether any object repeats a name.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class DuplicateMember(ValueError):
    """An object in the document names a member more than once."""


def refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` for :func:`json.loads`: the object, or :class:`DuplicateMember`."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateMember("an object names a member more than once")
    return obj


def loads_object(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds. Raises :class:`DuplicateMember` when any object in it
    (at any depth) names a member twice, and :class:`ValueError` when ``raw`` is not valid JSON
    or not an object."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        # SECURITY: a member named twice could be read as another value by another parser.
        json.loads(raw, object_pairs_hook=refuse_duplicates)
    except RecursionError:  # deeper than the standard parser goes: orjson took it, refuse it
        raise ValueError("nested too deeply") from None
    return data
