"""Structured JSON logs: one access line per request, one audit line per authenticated action.

Lines are built from explicit fields only (ids, route templates, codes), never from headers,
tokens or bodies. Once :func:`configure` ran, every line any logger writes (the gateway's,
aiohttp's, asyncio's, warnings, uncaught exceptions in any thread, unraisable exceptions at
shutdown) is one JSON object, and every one that passes through ``logging`` goes through
:func:`gateway.observe.redact.redact` last, exception messages and tracebacks included.
Access and audit lines are safe by construction instead (their only client-chosen fields, the
method and the request id, are folded or refused where they enter), so the hot path pays no
regex. Everything goes through a queue to one writer thread, so the request path never formats
or writes (see :class:`_Lines`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import io
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import orjson

from gateway.observe.redact import redact

ACCESS = logging.getLogger("gateway.access")
AUDIT = logging.getLogger("gateway.audit")
EVENTS = logging.getLogger("gateway")


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    """The formatted second, once per second (a batch of lines shares a handful)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def json_line(created: float, level: str, logger: str, msg: str, fields: Any) -> str:
    """One log line: time, level, logger and message, then the record's fields."""
    line: dict[str, Any] = {
        "ts": f"{_second(int(created))}.{int(created * 1000) % 1000:03d}Z",
        "level": level,
        "logger": logger,
        "msg": msg,
    }
    if isinstance(fields, dict):
        line.update(fields)
    try:
        return orjson.dumps(line, default=repr).decode()
    except TypeError:
        # Text that is not valid Unicode (surrogates from bytes a client sent, decoded with
        # surrogateescape): escaped instead of refused, so the line is still written as JSON.
        return json.dumps(line, default=repr, ensure_ascii=True, separators=(",", ":"))


_MILLIS = tuple(f"{i:03d}" for i in range(1000))


class _BatchLines:
    """:func:`json_line` for the access and audit lines of a batch, on the writer thread: the
    same text, made without a dictionary of its own (the fields are serialized alone and
    joined to the line's fixed head). Their keys are the request path's own, none of them
    ``ts``, ``level``, ``logger`` or ``msg``. Used by one thread only."""

    def __init__(self) -> None:
        self._whole: int | None = None
        self._second = ""
        self._second_bytes = b""
        # After the milliseconds, per logger: the rest of the head, which never changes.
        self._tails: dict[str, str] = {}
        # Per caller, route and outcome: the middles of its access and audit lines.
        self._middles: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    def __call__(self, created: float, logger: str, fields: dict[str, Any]) -> bytes:
        """One line, newline-ended, UTF-8 (:func:`json_line`'s text, encoded)."""
        whole = int(created)
        if whole != self._whole:
            self._new_second(whole)
        try:
            body = orjson.dumps(fields, default=repr)
        except TypeError:
            return _escaped(json_line(created, "info", logger, _message(logger), fields))
        tail = self._tails.get(logger)
        if tail is None:
            tail = self._tails[logger] = (
                f'Z","level":"info","logger":"{logger}","msg":"{_message(logger)}"'
            )
        head = f'{{"ts":"{self._second}.{_MILLIS[int(created * 1000) % 1000]}{tail}'.encode()
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
        millis = _MILLIS_BYTES[int(created * 1000) % 1000]
        text = b""
        if access:
            text = _ACCESS_LINE % (
                self._second_bytes,
                millis,
                rid,
                middles[0],
                duration,
                upstream_ms,
            )
        if audit:
            text += _AUDIT_LINE % (self._second_bytes, millis, rid, middles[1])
        return text

    def _new_second(self, whole: int) -> None:
        """The formatted second both kinds of line start with, as text and as bytes."""
        self._whole, self._second = whole, _second(whole)
        self._second_bytes = self._second.encode()

    @staticmethod
    def _fallback(created: float, fields: ExchangeFields, access: bool, audit: bool) -> bytes:
        text = b""
        if access:
            text += _escaped(
                json_line(created, "info", ACCESS.name, "access", access_fields(fields))
            )
        if audit:
            text += _escaped(json_line(created, "info", AUDIT.name, "audit", audit_fields(fields)))
        return text


# A request's access and audit lines around their middles (:func:`_middles`): json_line's head
# (time, level, logger, message), the request id first among the fields, the durations last.
_ACCESS_LINE = (
    b'{"ts":"%s.%sZ","level":"info","logger":"gateway.access","msg":"access",'
    b'"request_id":%s,%s,"duration_ms":%s,"upstream_ms":%s}\n'
)
_AUDIT_LINE = (
    b'{"ts":"%s.%sZ","level":"info","logger":"gateway.audit","msg":"audit","request_id":%s,%s}\n'
)
_MILLIS_BYTES = tuple(m.encode() for m in _MILLIS)
MAX_MIDDLES = 2048  # kept middles (a few hundred bytes each) before they are all dropped


def _middles(fields: ExchangeFields) -> tuple[bytes, bytes]:
    """The access line's and the audit line's middles, serialized (no braces); raises
    TypeError for text that is not valid Unicode."""
    return (
        orjson.dumps(_access_middle(fields), default=repr)[1:-1],
        orjson.dumps(_audit_middle(fields), default=repr)[1:-1],
    )


def _escaped(line: str) -> bytes:
    """A line of :func:`json_line`'s escaped fallback (ASCII: its surrogates are ``\\u``
    escapes), newline-ended, as bytes."""
    return line.encode() + b"\n"


class JsonFormatter(logging.Formatter):
    """Any record as one JSON line; the whole line redacted (see :mod:`gateway.observe.redact`).

    A record's message is formatted with its arguments here; an exception becomes
    ``exc_type``, ``exc`` (its message) and ``traceback``, all redacted with the rest: aiohttp's
    parser quotes the raw request line in its exceptions.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        try:
            message = record.getMessage()
        except Exception:  # a foreign record whose arguments do not fit its format string
            message = str(record.msg)
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            fields = {
                **(fields if isinstance(fields, dict) else {}),
                "exc_type": exc_type.__name__,
                "exc": str(exc),
                "traceback": "".join(traceback.format_exception(exc_type, exc, tb)),
            }
        line = json_line(record.created, record.levelname.lower(), record.name, message, fields)
        # SECURITY: the last step of every line written through logging; nothing after it
        # adds text.
        return redact(line)


class _JsonStreamHandler(logging.StreamHandler[Any]):
    """A stream handler whose own failures are reported as a JSON line too, never as
    ``logging``'s plain-text "--- Logging error ---" traceback on stderr."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        line = json_line(
            record.created,
            "error",
            "gateway.logging",
            "a log record could not be written",
            {"record_logger": record.name, "exc_type": type(exc).__name__ if exc else None},
        )
        try:
            self.stream.write(line + "\n")
            self.flush()
        except Exception:  # noqa: S110 - the stream itself is gone; nothing is left to tell
            pass


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueues the record as it is: the listener thread formats it, not the request path.

    Safe because every record here carries plain data (a constant message and a ``fields``
    dict of ids and codes), nothing a later mutation could change.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


# An access or audit line as the request path leaves it: (logger name, unix time, fields); or
# both lines of one request, (_EXCHANGE, unix time, (ExchangeFields, access on, audit on)).
Line = tuple[str, float, Any]
_EXCHANGE = "gateway.exchange"  # not a logger: the entry :func:`exchange` leaves


class _Lines:
    """Access and audit lines, batched on the event loop once :func:`configure` ran.

    A ``logging`` call costs ~10 µs (a ``LogRecord`` with threads, processes, caller frames)
    and waking the writer thread for every line costs a GIL hand-over. So the request path
    appends a tuple to a list; every ``FLUSH_SECONDS`` (or ``MAX_BATCH`` entries, a request's
    :func:`exchange` entry being its two lines) the batch goes
    to the writer thread in one queue put. Lines are at most that late;
    :meth:`_Listener.stop` writes whatever is left. Before ``configure`` (tests, library use)
    the lines go through ``logging``.

    ``MAX_BATCH`` is small on purpose: the writer formats a batch holding the GIL, on the core
    the event loop uses, so a batch is a pause of the requests in flight. 500 entries (a
    pause every 170 ms at 3,000 requests/s, about 5 ms of formatting) put 2-4 ms on the p99 of
    an open loop at half saturation; 64 halve that (docs/performance.md, fourth round), for a
    queue put and a thread wake-up every 64 requests.
    """

    FLUSH_SECONDS = 0.05
    MAX_BATCH = 64

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Any] | None = None
        self.batch: list[Line] = []

    def add(self, line: Line) -> None:
        if not self.batch:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop on this thread: write it now
                self.batch.append(line)
                self.flush()
                return
        self.batch.append(line)
        if len(self.batch) >= self.MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch and self.queue is not None:
            batch, self.batch = self.batch, []
            self.queue.put(batch)


_LINES = _Lines()


def _utf8_bytes_under(stream: Any) -> Any:
    """The byte stream under the process's own stdout or stderr when it is UTF-8 text with
    ``\\n`` line ends, else None. The writer thread writes its lines there as orjson made
    them, instead of decoding them for the text layer to encode again. Any other stream (a
    wrapper, a tee, a stream with its own newline translation) gets text."""
    if stream is not sys.__stdout__ and stream is not sys.__stderr__:
        return None
    if os.linesep != "\n" or not isinstance(stream, io.TextIOWrapper):
        return None
    try:
        binary = stream.buffer
        return binary if codecs.lookup(stream.encoding).name == "utf-8" else None
    except Exception:  # a detached stream, an unknown encoding: the text layer it is
        return None


class _Listener(logging.handlers.QueueListener):
    """The writer thread: records one by one, access and audit lines by the batch."""

    def __init__(self, q: queue.SimpleQueue[Any], handler: logging.StreamHandler[Any]) -> None:
        super().__init__(q, handler)
        self._stream_handler = handler
        self._line = _BatchLines()

    # Entries formatted per write (16 lines, a request's entry being two): formatting holds the
    # GIL, and the write between chunks releases it, so the event loop waits at most one
    # chunk's formatting (about 0.1 ms) for it.
    CHUNK = 8

    def handle(self, record: logging.LogRecord | list[Line]) -> None:
        if not isinstance(record, list):
            super().handle(record)
            return
        handler = self._stream_handler
        line = self._line
        stream = handler.stream
        binary = _utf8_bytes_under(stream)
        for start in range(0, len(record), self.CHUNK):
            chunk = record[start : start + self.CHUNK]
            try:
                data = b"".join(
                    line.exchange(created, fields)
                    if name == _EXCHANGE
                    else line(created, name, fields)
                    for name, created, fields in chunk
                )
            except Exception:
                data = b"".join(self._one_by_one(chunk))
            with handler.lock or contextlib.nullcontext():
                if binary is None:
                    stream.write(data.decode())
                else:
                    stream.flush()  # text written through the text layer stays before these
                    binary.write(data)
                handler.flush()

    def _one_by_one(self, chunk: list[Line]) -> Iterator[bytes]:
        """A chunk's lines when one of them could not be made: each entry on its own, one that
        fails replaced by a line saying so (the writer thread goes on; nothing else is lost)."""
        line = self._line
        for name, created, fields in chunk:
            try:
                yield (
                    line.exchange(created, fields)
                    if name == _EXCHANGE
                    else line(created, name, fields)
                )
            except Exception as exc:
                yield _escaped(
                    json_line(
                        created,
                        "error",
                        "gateway.logging",
                        "a log record could not be written",
                        {"record_logger": name, "exc_type": type(exc).__name__},
                    )
                )

    def stop(self) -> None:
        """Write what is queued, then let later records (shutdown, interpreter exit) be
        written directly by the same JSON handler rather than queued for no one."""
        _LINES.flush()
        super().stop()
        _LINES.queue = None
        root = logging.getLogger()
        if any(isinstance(h, _DeferredQueueHandler) for h in root.handlers):
            root.handlers[:] = [self._stream_handler]


def configure(level: str = "INFO", stream: Any = None) -> logging.handlers.QueueListener:
    """Route every logger of the process through a queue to one JSON stream handler.

    The root logger gets the queue handler, so aiohttp's and asyncio's loggers write JSON too;
    ``warnings`` are captured into logging; uncaught exceptions (main thread, other threads) and
    unraisable ones (``__del__`` at shutdown) are logged as records instead of printed. Third
    parties log at ``WARNING`` and above; the gateway's own loggers at ``level``.
    """
    handler = _JsonStreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    listener = _Listener(q, handler)
    root = logging.getLogger()
    root.handlers[:] = [_DeferredQueueHandler(q)]
    root.setLevel(logging.WARNING)
    gateway = logging.getLogger("gateway")
    gateway.handlers.clear()
    gateway.setLevel(level)
    gateway.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook
    _LINES.queue = q
    listener.start()
    return listener


_UNCAUGHT = logging.getLogger("gateway.uncaught")


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    _UNCAUGHT.critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _UNCAUGHT.error(
            "uncaught exception in a thread",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            extra={"fields": {"thread": args.thread.name if args.thread else None}},
        )


def _unraisablehook(args: Any) -> None:
    """``__del__`` errors and resource warnings at shutdown, as JSON instead of a print."""
    fields = {"object": repr(args.object)[:200]} if args.object is not None else {}
    if args.exc_value is not None:
        _UNCAUGHT.warning(
            args.err_msg or "unraisable exception",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            extra={"fields": fields},
        )
    else:
        _UNCAUGHT.warning(args.err_msg or "unraisable exception", extra={"fields": fields})


def event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    EVENTS.log(level, message, extra={"fields": fields})


def access(**fields: Any) -> None:
    _line(ACCESS, fields)


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


def exchange(created: float, fields: ExchangeFields, audited: bool) -> None:
    """One request's access line and, when ``audited`` (someone was authenticated), its audit
    line, as :func:`access` and :func:`audit` write them with :func:`access_fields` and
    :func:`audit_fields` (the same text), both at ``created``. Batched, the request path
    leaves one tuple: the dictionaries, the rounding and the text are made on the writer
    thread."""
    access_on = ACCESS.isEnabledFor(logging.INFO)
    audit_on = audited and AUDIT.isEnabledFor(logging.INFO)
    if not (access_on or audit_on):
        return
    if _LINES.queue is not None:
        _LINES.add((_EXCHANGE, created, (fields, access_on, audit_on)))
        return
    if access_on:
        ACCESS.info("access", extra={"fields": access_fields(fields)})
    if audit_on:
        AUDIT.info("audit", extra={"fields": audit_fields(fields)})


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
    _, route, method, status, credential, account, user, actor, error, _, _, _, _ = fields
    return {
        "route": route,
        "method": method,
        "status": status,
        "credential": credential,
        "account": account,
        "user": user,
        "actor": actor,
        "error": error,
    }


def _audit_middle(fields: ExchangeFields) -> dict[str, Any]:
    """The audit line's fields after the request id."""
    _, route, method, status, credential, account, user, actor, _, _, _, key_id, outcome = fields
    return {
        "route": route,
        "method": method,
        "status": status,
        "credential": credential,
        "account": account,
        "subject": user,
        "actor": actor,
        "key_id": key_id,
        "outcome": outcome,
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


def audit(**fields: Any) -> None:
    _line(AUDIT, fields)


def _line(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """An access or audit line: batched once :func:`configure` ran, else through ``logging``."""
    if logger.isEnabledFor(logging.INFO):
        if _LINES.queue is not None:
            _LINES.add((logger.name, time.time(), fields))
        else:
            logger.info(_message(logger.name), extra={"fields": fields})


def _message(logger_name: str) -> str:
    """``gateway.access`` → ``access``: an access or audit line's message is its kind."""
    return logger_name.rpartition(".")[2]
