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
import io
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

from gateway.observe.lines import (
    ACCESS_LOGGER,
    AUDIT_LOGGER,
    BatchLines,
    ExchangeFields,
    access_fields,
    audit_fields,
    escaped,
    json_line,
    mark_worker,
    message_of,
)
from gateway.observe.redact import redact

ACCESS = logging.getLogger(ACCESS_LOGGER)
AUDIT = logging.getLogger(AUDIT_LOGGER)
EVENTS = logging.getLogger("gateway")


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
        self._line = BatchLines()

    # Entries formatted per write (16 lines, a request's entry being two): formatting holds the
    # GIL, and the write between chunks releases it, so the event loop waits at most one
    # chunk's formatting (about 0.1 ms) for it.
    CHUNK = 8

    def handle(self, record: logging.LogRecord | list[Line]) -> None:
        if not isinstance(record, list):
            super().handle(record)
            return
        handler = self._stream_handler
        stream = handler.stream
        binary = _utf8_bytes_under(stream)
        for start in range(0, len(record), self.CHUNK):
            data = b"".join(self._texts(record[start : start + self.CHUNK]))
            with handler.lock or contextlib.nullcontext():
                if binary is None:
                    stream.write(data.decode())
                else:
                    stream.flush()  # text written through the text layer stays before these
                    binary.write(data)
                handler.flush()

    def _texts(self, chunk: list[Line]) -> Iterator[bytes]:
        """A chunk's lines, entry by entry; an entry that cannot be made is replaced by a line
        saying so (the writer thread goes on; nothing else is lost)."""
        line = self._line
        for name, created, fields in chunk:
            try:
                yield (
                    line.exchange(created, fields)
                    if name == _EXCHANGE
                    else line(created, name, fields)
                )
            except Exception as exc:
                yield escaped(
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


def configure(
    level: str = "INFO", stream: Any = None, *, worker: int | None = None
) -> logging.handlers.QueueListener:
    """Route every logger of the process through a queue to one JSON stream handler; in a
    worker of ``workers: N``, every line names the ``worker`` (its index).

    The root logger gets the queue handler, so aiohttp's and asyncio's loggers write JSON too;
    ``warnings`` are captured into logging; uncaught exceptions (main thread, other threads) and
    unraisable ones (``__del__`` at shutdown) are logged as records instead of printed. Third
    parties log at ``WARNING`` and above; the gateway's own loggers at ``level``.
    """
    mark_worker(worker)
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


def set_level(level: str) -> None:
    """The gateway's own loggers' level from now on (a reload's ``log_level``)."""
    logging.getLogger("gateway").setLevel(level)


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
    """An event line, written after every request line made before it ("stopped" came before
    the access line of the last request drained, with an earlier time)."""
    _LINES.flush()
    EVENTS.log(level, message, extra={"fields": fields})


def access(**fields: Any) -> None:
    _line(ACCESS, fields)


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


def audit(**fields: Any) -> None:
    _line(AUDIT, fields)


def _line(logger: logging.Logger, fields: dict[str, Any]) -> None:
    """An access or audit line: batched once :func:`configure` ran, else through ``logging``."""
    if logger.isEnabledFor(logging.INFO):
        if _LINES.queue is not None:
            _LINES.add((logger.name, time.time(), fields))
        else:
            logger.info(message_of(logger.name), extra={"fields": fields})
