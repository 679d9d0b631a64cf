"""Structured JSON logs: one access line per request, one audit line per authenticated action.

Lines are built from explicit fields only (ids, route templates, codes), never from headers,
tokens or bodies, so no secret can reach them. Everything goes through a queue to one writer
thread, so the request path never formats or writes (see :class:`_Lines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

import orjson

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
    return orjson.dumps(line).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if record.exc_info and record.exc_info[0] is not None:
            fields = {**(fields or {}), "exc_type": record.exc_info[0].__name__}
        return json_line(
            record.created, record.levelname.lower(), record.name, record.getMessage(), fields
        )


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueues the record as it is: the listener thread formats it, not the request path.

    Safe because every record here carries plain data (a constant message and a ``fields``
    dict of ids and codes), nothing a later mutation could change.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


# An access or audit line as the request path leaves it: (logger name, unix time, fields).
Line = tuple[str, float, dict[str, Any]]


class _Lines:
    """Access and audit lines, batched on the event loop once :func:`configure` ran.

    A ``logging`` call costs ~10 µs (a ``LogRecord`` with threads, processes, caller frames)
    and waking the writer thread for every line costs a GIL hand-over. So the request path
    appends a tuple to a list; every ``FLUSH_SECONDS`` (or ``MAX_BATCH`` lines) the batch goes
    to the writer thread in one queue put and is written in one ``write``. Lines are at most
    that late; :meth:`_Listener.stop` writes whatever is left. Before ``configure`` (tests,
    library use) the lines go through ``logging``.
    """

    FLUSH_SECONDS = 0.05
    MAX_BATCH = 1000

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


class _Listener(logging.handlers.QueueListener):
    """The writer thread: records one by one, access and audit lines by the batch."""

    def __init__(self, q: queue.SimpleQueue[Any], handler: logging.StreamHandler[Any]) -> None:
        super().__init__(q, handler)
        self._stream_handler = handler

    def handle(self, record: logging.LogRecord | list[Line]) -> None:
        if not isinstance(record, list):
            super().handle(record)
            return
        text = "".join(
            json_line(created, "info", name, _message(name), fields) + "\n"
            for name, created, fields in record
        )
        handler = self._stream_handler
        with handler.lock or contextlib.nullcontext():
            handler.stream.write(text)
            handler.flush()

    def stop(self) -> None:
        _LINES.flush()
        super().stop()


def configure(level: str = "INFO", stream: Any = None) -> logging.handlers.QueueListener:
    """Route the gateway's loggers through a queue to one JSON stream handler."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    listener = _Listener(q, handler)
    root = logging.getLogger("gateway")
    root.handlers[:] = [_DeferredQueueHandler(q)]
    root.setLevel(level)
    root.propagate = False
    _LINES.queue = q
    listener.start()
    return listener


def event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    EVENTS.log(level, message, extra={"fields": fields})


def access(**fields: Any) -> None:
    _line(ACCESS, fields)


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
