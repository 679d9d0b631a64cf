"""The text of the gateway's log lines: :func:`json_line` for any record, and a request's
access and audit lines as the writer thread makes them (:class:`BatchLines`).

Every line is one JSON object: its time (UTC, milliseconds), level, logger and message, then
the record's fields. A request's two lines are built from explicit fields only
(:data:`ExchangeFields`: ids, route templates, codes, never a header, token or body), and the
text is the same whichever way it is made: whole by :func:`json_line`, or by
:class:`BatchLines` around the part of it that repeats from one request of a caller to the
next (a test compares the two for any fields).
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import orjson

ACCESS_LOGGER, AUDIT_LOGGER = "gateway.access", "gateway.audit"


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    """The formatted second, once per second (a batch of lines shares a handful)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


# What tells this process's lines from another's, right after the message on every line:
# ``worker`` (its index, 1 to N, kept by a restarted worker) in a worker of ``workers: N``,
# nothing otherwise. Set once, before the first line (logs.configure).
_PROCESS: dict[str, int] = {}


def mark_worker(index: int | None) -> None:
    """Every line this process writes from now on names worker ``index`` (None: no worker)."""
    _PROCESS.clear()
    if index is not None:
        _PROCESS["worker"] = index


def json_line(created: float, level: str, logger: str, msg: str, fields: Any) -> str:
    """One log line: time, level, logger and message, the process's worker index (in a worker
    of ``workers: N``), then the record's fields."""
    line: dict[str, Any] = {
        "ts": f"{_second(int(created))}.{int(created * 1000) % 1000:03d}Z",
        "level": level,
        "logger": logger,
        "msg": msg,
        **_PROCESS,
    }
    if isinstance(fields, dict):
        line.update(fields)
    try:
        return orjson.dumps(line, default=repr).decode()
    except TypeError:
        # Text that is not valid Unicode (surrogates from bytes a client sent, decoded with
        # surrogateescape): escaped instead of refused, so the line is still written as JSON.
        return json.dumps(line, default=repr, ensure_ascii=True, separators=(",", ":"))


_MILLIS = tuple(f"{i:03d}".encode() for i in range(1000))


class BatchLines:
    """:func:`json_line` for the access and audit lines of a batch, on the writer thread: the
    same text, made without a dictionary of its own (the fields are serialized alone and
    joined to the line's fixed head). Their keys are the request path's own, none of them
    ``ts``, ``level``, ``logger`` or ``msg``. Used by one thread only."""

    def __init__(self) -> None:
        self._whole: int | None = None
        self._second = b""
        # After the milliseconds, per logger: the rest of the head, which never changes.
        self._tails: dict[str, bytes] = {}
        # Per caller, route and outcome: the middles of its access and audit lines.
        self._middles: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        # The worker's index after the message (_PROCESS), read at the first line.
        self._process: bytes | None = None

    def __call__(self, created: float, logger: str, fields: dict[str, Any]) -> bytes:
        """One line, newline-ended, UTF-8 (:func:`json_line`'s text, encoded)."""
        whole = int(created)
        if whole != self._whole:
            self._new_second(whole)
        try:
            body = orjson.dumps(fields, default=repr)
        except TypeError:
            return escaped(json_line(created, "info", logger, message_of(logger), fields))
        tail = self._tails.get(logger)
        if tail is None:
            process = orjson.dumps(_PROCESS)[1:-1]
            tail = self._tails[logger] = (
                f'Z","level":"info","logger":"{logger}","msg":"{message_of(logger)}"'.encode()
                + (b"," + process if process else b"")
            )
        head = b'{"ts":"%s.%s%s' % (self._second, _MILLIS[int(created * 1000) % 1000], tail)
        return head + b"}\n" if body == b"{}" else b"%s,%s\n" % (head, body[1:])

    def exchange(self, created: float, entry: tuple[ExchangeFields, bool, bool]) -> bytes:
        """The access line and the audit line of one request (each when on), each
        newline-ended, UTF-8: :func:`json_line`'s text for :func:`access_fields` and
        :func:`audit_fields`. Most of a line is the same for every request of one caller on
        one route (everything but the request id, the time and the durations): that middle is
        serialized once and kept (:data:`MAX_MIDDLES`, emptied when full), and a request's own
        values are serialized in one call and put around it. The kept middles are found by
        the fields' values (``==``), which stands for their text because the request path
        gives text, None and an integer status only (:data:`ExchangeFields`)."""
        fields, access, audit = entry
        (request_id, route, method, status, credential, account, user, actor, error, seconds,
         upstream, key_id, outcome) = fields  # fmt: skip
        key = (route, method, status, credential, account, user, actor, error, key_id, outcome)
        middles = self._middles.get(key)
        try:
            if middles is None:
                middles = _middles(fields)
                if len(self._middles) >= MAX_MIDDLES:
                    self._middles.clear()
                self._middles[key] = middles
            # The request's own values in one call; the last two (numbers or null) hold no
            # comma, so splitting from the right leaves the request id whole.
            rid, duration, upstream_ms = (
                orjson.dumps((request_id, _ms(seconds), _ms(upstream)), default=repr)[1:-1]
                .rsplit(b",", 2)
            )  # fmt: skip
        except TypeError:  # not valid Unicode: json_line's escaped fallback, for both
            return self._fallback(created, fields, access, audit)
        whole = int(created)
        if whole != self._whole:
            self._new_second(whole)
        millis = _MILLIS[int(created * 1000) % 1000]
        process = self._process
        if process is None:
            fragment = orjson.dumps(_PROCESS)[1:-1]
            process = self._process = b"," + fragment if fragment else b""
        text = b""
        if access:
            text = _ACCESS_LINE % (
                self._second,
                millis,
                process,
                rid,
                middles[0],
                duration,
                upstream_ms,
            )
        if audit:
            text += _AUDIT_LINE % (self._second, millis, process, rid, middles[1])
        return text

    def _new_second(self, whole: int) -> None:
        """The formatted second both kinds of line start with."""
        self._whole, self._second = whole, _second(whole).encode()

    @staticmethod
    def _fallback(created: float, fields: ExchangeFields, access: bool, audit: bool) -> bytes:
        text = b""
        if access:
            text += escaped(
                json_line(created, "info", ACCESS_LOGGER, "access", access_fields(fields))
            )
        if audit:
            text += escaped(json_line(created, "info", AUDIT_LOGGER, "audit", audit_fields(fields)))
        return text


# A request's access and audit lines around their middles (:func:`_middles`): json_line's head
# (time, level, logger, message, the worker's index), the request id first among the fields,
# the durations last.
_ACCESS_LINE = (
    b'{"ts":"%s.%sZ","level":"info","logger":"gateway.access","msg":"access"%s,'
    b'"request_id":%s,%s,"duration_ms":%s,"upstream_ms":%s}\n'
)
_AUDIT_LINE = (
    b'{"ts":"%s.%sZ","level":"info","logger":"gateway.audit","msg":"audit"%s,"request_id":%s,%s}\n'
)
MAX_MIDDLES = 2048  # kept middles (a few hundred bytes each) before they are all dropped


def _middles(fields: ExchangeFields) -> tuple[bytes, bytes]:
    """The access line's and the audit line's middles, serialized (no braces); raises
    TypeError for text that is not valid Unicode."""
    return (
        orjson.dumps(_access_middle(fields), default=repr)[1:-1],
        orjson.dumps(_audit_middle(fields), default=repr)[1:-1],
    )


def escaped(line: str) -> bytes:
    """A line of :func:`json_line`'s escaped fallback (ASCII: its surrogates are ``\\u``
    escapes), newline-ended, as bytes."""
    return line.encode() + b"\n"


# One request's access and audit fields (gateway.front.record), in this order: request id,
# route, method, status, credential, account, user, actor, error, duration in seconds, upstream
# seconds (or None), key id, outcome.
ExchangeFields = tuple[
    str,
    str,
    str,
    int,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    float,
    float | None,
    str | None,
    str,
]


def access_fields(fields: ExchangeFields) -> dict[str, Any]:
    """A request's access line fields, in the line's order."""
    return {
        "request_id": fields[0],
        **_access_middle(fields),
        "duration_ms": _ms(fields[9]),
        "upstream_ms": _ms(fields[10]),
    }


def audit_fields(fields: ExchangeFields) -> dict[str, Any]:
    """A request's audit line fields, in the line's order."""
    return {"request_id": fields[0], **_audit_middle(fields)}


def _access_middle(fields: ExchangeFields) -> dict[str, Any]:
    """The access line's fields between the request id and the durations."""
    user, actor, error = fields[6:9]
    return {**_what(fields), "user": user, "actor": actor, "error": error}


def _audit_middle(fields: ExchangeFields) -> dict[str, Any]:
    """The audit line's fields after the request id."""
    user, actor, key_id, outcome = fields[6], fields[7], fields[11], fields[12]
    return {**_what(fields), "subject": user, "actor": actor, "key_id": key_id, "outcome": outcome}


def _what(fields: ExchangeFields) -> dict[str, Any]:
    """The fields both lines start with: the route, method and status, the credential kind
    and the account."""
    _, route, method, status, credential, account = fields[:6]
    return {
        "route": route,
        "method": method,
        "status": status,
        "credential": credential,
        "account": account,
    }


def _ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds to the microsecond: rounded to whole microseconds (a value
    exactly half-way to even), then divided. Not ``round(ms, 3)``, whose decimal conversion
    cost every request's lines about 2,000 instructions; the two differ by a microsecond on
    some exact half-microsecond values."""
    if seconds is None:
        return None
    try:
        return round(seconds * 1e6) / 1000
    except (ValueError, OverflowError):  # NaN or infinite: not a duration, logged as null
        return None


def message_of(logger_name: str) -> str:
    """``gateway.access`` → ``access``: an access or audit line's message is its kind."""
    return logger_name.rpartition(".")[2]
