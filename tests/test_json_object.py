"""A client's JSON object is read one way or refused: a member named twice, at any depth and
however its name is escaped, is refused; what orjson refuses stays refused."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.json_object import DuplicateMember, loads_object

DUPLICATES = [
    b'{"a":1,"a":2}',
    b'{"a":1,"a":1}',
    b'{"a":1,"\\u0061":2}',
    b'{"a":{"b":1,"b":2}}',
    b'{"a":[{"b":1},{"c":1,"c":2}]}',
    b'{"":1,"":2}',
]
VALID = [
    (b"{}", {}),
    (b'{"a":{"x":1},"b":{"x":2}}', {"a": {"x": 1}, "b": {"x": 2}}),  # one name, two objects
    (b'{"a":[{"x":1},{"x":2}]}', {"a": [{"x": 1}, {"x": 2}]}),
    (b'{"a":1,"A":2}', {"a": 1, "A": 2}),  # names are case-sensitive
    (b' {"user_id":"usr_a"} ', {"user_id": "usr_a"}),
]
MALFORMED = [b"", b"[]", b"null", b'"a"', b"1", b'{"a":NaN}', b'{"a":1,}', b'{"a":"\xff"}']


@pytest.mark.parametrize("raw", DUPLICATES)
def test_a_member_named_twice_is_refused(raw: bytes) -> None:
    with pytest.raises(DuplicateMember):
        loads_object(raw)


@pytest.mark.parametrize(("raw", "expected"), VALID)
def test_an_unambiguous_object_is_read(raw: bytes, expected: dict[str, Any]) -> None:
    assert loads_object(raw) == expected


@pytest.mark.parametrize("raw", MALFORMED)
def test_what_is_not_one_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError) as caught:
        loads_object(raw)
    assert not isinstance(caught.value, DuplicateMember)


def test_nesting_deeper_than_the_standard_parser_goes_is_refused_not_raised() -> None:
    raw = b'{"a":' * 1000 + b"1" + b"}" * 1000
    with pytest.raises(ValueError):
        loads_object(raw)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), JSON, max_size=5))
def test_any_object_orjson_writes_is_read_back(document: dict[str, Any]) -> None:
    assert loads_object(orjson.dumps(document)) == document


@given(
    st.dictionaries(st.text(max_size=6), JSON, min_size=1, max_size=5),
    st.data(),
)
def test_any_object_with_a_member_repeated_is_refused(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """The repeated member is written after the others, with any value."""
    name = data.draw(st.sampled_from(sorted(document)))
    value = data.draw(JSON)
    raw = orjson.dumps(document)[:-1] + b"," + orjson.dumps({name: value})[1:]
    with pytest.raises(DuplicateMember):
        loads_object(raw)
