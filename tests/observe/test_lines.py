"""The text of log lines (``gateway.observe.lines``): json_line's, and a request's access and
audit lines as the writer thread makes them, the same text for any fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("created", "ts"),
    [
        (1700000000.0123, "2023-11-14T22:13:20.012Z"),
        (1700000000.9999, "2023-11-14T22:13:20.999Z"),
        (1700000001.0, "2023-11-14T22:13:21.000Z"),
    ],
)
def test_line_timestamps_are_utc_milliseconds(created: float, ts: str) -> None:
    from gateway.observe.lines import json_line

    line = orjson.loads(json_line(created, "info", "gateway.access", "access", {"status": 200}))
    assert line == {
        "ts": ts,
        "level": "info",
        "logger": "gateway.access",
        "msg": "access",
        "status": 200,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"status": 200},
        {"request_id": "r1", "route": "read", "user": None, "duration_ms": 1.25, "status": 401},
        {"route": "caf\u00e9 \u2603", "error": 'quote " and \\ backslash'},
        {"user": "bytes a client sent: \udcff"},  # surrogates: the escaped fallback
        {"upstream": object()},  # not JSON: repr, as json_line does
    ],
)
@pytest.mark.parametrize("created", [1700000000.0123, 1700000000.9999, 1700000001.0])
@pytest.mark.parametrize("worker", [None, 3])
def test_batched_access_and_audit_lines_are_json_line_text(
    fields: dict[str, Any], created: float, worker: int | None, marked: None
) -> None:
    """The writer thread's batch lines are built without a dictionary of their own: the text
    must be exactly what json_line gives for them (the same keys, order, time and escapes),
    also in a worker of ``workers: N``, whose lines name it."""
    from gateway.observe.lines import BatchLines, json_line, mark_worker

    mark_worker(worker)
    batch = BatchLines()
    for logger in ("gateway.access", "gateway.audit"):
        expected = json_line(created, "info", logger, logger.rpartition(".")[2], fields)
        assert batch(created, logger, fields) == (expected + "\n").encode()
        assert json.loads(expected)["ts"].startswith("2023-11-14T22:13:2")
        assert json.loads(expected).get("worker") == worker


@pytest.fixture
def marked() -> Iterator[None]:
    """This process's lines name no worker again after the test."""
    from gateway.observe.lines import mark_worker

    yield
    mark_worker(None)


def test_a_workers_lines_name_it_right_after_the_message(marked: None) -> None:
    from gateway.observe.lines import json_line, mark_worker

    assert "worker" not in json_line(1700000000.0, "info", "gateway", "m", {"a": 1})
    mark_worker(2)
    line = json_line(1700000000.0, "info", "gateway", "m", {"a": 1})
    assert line.endswith('"msg":"m","worker":2,"a":1}')


# One request's fields as gateway.front.record leaves them (lines.ExchangeFields), and the
# dictionaries front.record passed to access() and audit() for the same request before.
EXCHANGE = ("r1", "users.read", "GET", 200, "user_token", "acc_1", "usr_a", "usr_c", None,
            0.0012345, None, "key_1", "allow")  # fmt: skip
ACCESS_FIELDS = {
    "request_id": "r1",
    "route": "users.read",
    "method": "GET",
    "status": 200,
    "credential": "user_token",
    "account": "acc_1",
    "user": "usr_a",
    "actor": "usr_c",
    "error": None,
    "duration_ms": round(0.0012345 * 1000, 3),
    "upstream_ms": None,
}
AUDIT_FIELDS = {
    "request_id": "r1",
    "route": "users.read",
    "method": "GET",
    "status": 200,
    "credential": "user_token",
    "account": "acc_1",
    "subject": "usr_a",
    "actor": "usr_c",
    "key_id": "key_1",
    "outcome": "allow",
}


@pytest.mark.parametrize("upstream", [None, 0.0204567])
@pytest.mark.parametrize("on", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("user", ["usr_a", "bytes a client sent: \udcff"])
@pytest.mark.parametrize("created", [1700000000.0123, 1700000000.9999, 1700000001.0])
@pytest.mark.parametrize("worker", [None, 2])
def test_a_requests_lines_from_one_tuple_are_the_access_and_audit_lines(
    upstream: float | None,
    on: tuple[bool, bool],
    user: str,
    created: float,
    worker: int | None,
    marked: None,
) -> None:
    """logs.exchange's entry becomes, on the writer thread, exactly json_line's text for the
    fields access() and audit() were given for the same request (keys, order, rounding, time,
    the escaped fallback for text that is not valid Unicode), in a worker too: its access and
    audit lines name it as its other lines do (they did not)."""
    from gateway.observe.lines import (
        BatchLines,
        access_fields,
        audit_fields,
        json_line,
        mark_worker,
    )

    mark_worker(worker)

    fields = (*EXCHANGE[:6], user, *EXCHANGE[7:10], upstream, *EXCHANGE[11:])
    access = {
        **ACCESS_FIELDS,
        "user": user,
        "upstream_ms": round(upstream * 1000, 3) if upstream else None,
    }
    audit = {**AUDIT_FIELDS, "subject": user}
    assert list(access_fields(fields).items()) == list(access.items())
    assert list(audit_fields(fields).items()) == list(audit.items())
    expected = (
        json_line(created, "info", "gateway.access", "access", access) + "\n" if on[0] else ""
    ) + (json_line(created, "info", "gateway.audit", "audit", audit) + "\n" if on[1] else "")
    assert BatchLines().exchange(created, (fields, *on)) == expected.encode()
    if worker is not None and any(on):
        assert f'"msg":"{"access" if on[0] else "audit"}","worker":{worker},'.encode() in (
            BatchLines().exchange(created, (fields, *on))
        )


@given(st.floats(min_value=0, max_value=3600, allow_nan=False))
def test_durations_are_logged_in_milliseconds_to_the_microsecond(seconds: float) -> None:
    from gateway.observe.lines import access_fields

    fields = (*EXCHANGE[:9], seconds, seconds, *EXCHANGE[11:])
    logged = access_fields(fields)
    for key in ("duration_ms", "upstream_ms"):
        assert abs(logged[key] * 1000 - seconds * 1e6) <= 0.5 + 1e-6 * max(1.0, seconds * 1e6)
        assert logged[key] == round(logged[key], 3)


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_OPTIONAL = st.none() | _TEXT


# One request's fields (lines.ExchangeFields) of any text, status and durations.
_FIELDS = st.tuples(
    _TEXT, _TEXT, _TEXT, st.integers(100, 599), _TEXT, _OPTIONAL, _OPTIONAL, _OPTIONAL,
    _OPTIONAL, st.floats(0, 1e4), st.none() | st.floats(0, 1e4), _OPTIONAL, _TEXT,
)  # fmt: skip


@given(
    fields=_FIELDS,
    on=st.sampled_from([(True, True), (True, False), (False, True)]),
    created=st.floats(1.6e9, 2e9),
    repeat=st.booleans(),
)
@example(  # a request id with the separators of what is put around the middle
    fields=('r","1,2', 'a","b', "GET", 200, "k", None, 'u,"', None, None, 0.5, 1e-7, None, "x"),
    on=(True, True),
    created=1.7e9,
    repeat=True,
)
def test_a_requests_lines_are_json_line_text_whatever_the_fields(
    fields: Any, on: tuple[bool, bool], created: float, repeat: bool
) -> None:
    """Built around kept middles, a request's lines are still exactly json_line's text for its
    fields: any text (quotes, commas, backslashes, any script) in any field, the request id
    included, a first time and again from what was kept."""
    from gateway.observe.lines import BatchLines, access_fields, audit_fields, json_line

    expected = (
        json_line(created, "info", "gateway.access", "access", access_fields(fields)) + "\n"
        if on[0]
        else ""
    ) + (
        json_line(created, "info", "gateway.audit", "audit", audit_fields(fields)) + "\n"
        if on[1]
        else ""
    )
    lines = BatchLines()
    if repeat:  # the middles kept from another request of the same caller and route
        lines.exchange(created - 1, (("other", *fields[1:]), True, True))
    assert lines.exchange(created, (fields, *on)) == expected.encode()


def test_kept_middles_are_bounded() -> None:
    from gateway.observe.lines import MAX_MIDDLES, BatchLines

    lines = BatchLines()
    for i in range(MAX_MIDDLES * 2 + 5):
        fields = (f"r{i}", "read", "GET", 200, "user_token", "acc_1", f"usr_{i}", None, None,
                  0.001, None, "key_1", "allow")  # fmt: skip
        lines.exchange(1.7e9, (fields, True, True))
        assert len(lines._middles) <= MAX_MIDDLES


def test_a_line_of_either_kind_opening_a_second_dates_the_next_of_the_other() -> None:
    """Single lines (``logs.audit``) and a request's lines share the writer's formatted second:
    whichever kind opens a second, the next line of the other kind carries it."""
    from gateway.observe.lines import BatchLines

    lines = BatchLines()
    stamps = []
    for created in (1700000000.25, 1700000000.5, 1700000001.5, 1700000002.1, 1700000002.5):
        if created in (1700000000.25, 1700000002.1):
            text = lines(created, "gateway.audit", {"route": "x"})
        else:
            text = lines.exchange(created, (EXCHANGE, True, False))
        stamps.append(orjson.loads(text)["ts"])
    assert stamps == [
        "2023-11-14T22:13:20.250Z",
        "2023-11-14T22:13:20.500Z",
        "2023-11-14T22:13:21.500Z",
        "2023-11-14T22:13:22.100Z",
        "2023-11-14T22:13:22.500Z",
    ]


@pytest.mark.parametrize("seconds", [float("nan"), float("inf")])
def test_a_duration_that_is_no_number_is_logged_as_null(seconds: float) -> None:
    from gateway.observe.lines import BatchLines

    fields = (*EXCHANGE[:9], seconds, seconds, *EXCHANGE[11:])
    line = orjson.loads(BatchLines().exchange(1.7e9, (fields, True, False)))
    assert (line["duration_ms"], line["upstream_ms"]) == (None, None)
