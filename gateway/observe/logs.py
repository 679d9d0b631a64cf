"""Structured JSON logs: one access line per request, one audit line per authenticated action.

Lines are built from explicit fields only (ids, route templates, codes), never from headers,
tokens or bodies, so no secret can reach them. Records go through a queue: the request path
only builds the record and enqueues it; formatting and writing happen on the listener's thread.
"""

from __future__ import annotations

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
        return orjson.dumps(line).decode()


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Enqueues the record as it is: the listener thread formats it, not the request path.

    Safe because every record here carries plain data (a constant message and a ``fields``
    dict of ids and codes), nothing a later mutation could change.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


# An access or audit line as the request path enqueues it: (logger name, unix time, fields).
Line = tuple[str, float, dict[str, Any]]


class _Listener(logging.handlers.QueueListener):
    """Writes records, and builds the records of access and audit lines on its own thread."""

    def handle(self, record: logging.LogRecord | Line) -> None:
        if isinstance(record, tuple):
            name, created, fields = record
            built = logging.LogRecord(name, logging.INFO, "", 0, name[8:], None, None)
            built.created, built.msecs = created, (created * 1000) % 1000
            built.fields = fields
            record = built
        super().handle(record)


class _Lines:
    """Where :func:`access` and :func:`audit` put their lines once :func:`configure` ran.

    A ``logging`` call costs ~10 µs (a ``LogRecord`` carries threads, processes, caller frames);
    the two lines of every request instead cost a tuple and a queue put, and the listener
    builds the records. Before ``configure`` (tests, library use) they go through ``logging``.
    """

    queue: queue.SimpleQueue[Any] | None = None


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
    _Lines.queue = q
    listener.start()
    return listener


def event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    EVENTS.log(level, message, extra={"fields": fields})


def access(**fields: Any) -> None:
    if ACCESS.isEnabledFor(logging.INFO):
        if _Lines.queue is not None:
            _Lines.queue.put(("gateway.access", time.time(), fields))
        else:
            ACCESS.info("access", extra={"fields": fields})


def audit(**fields: Any) -> None:
    if AUDIT.isEnabledFor(logging.INFO):
        if _Lines.queue is not None:
            _Lines.queue.put(("gateway.audit", time.time(), fields))
        else:
            AUDIT.info("audit", extra={"fields": fields})
