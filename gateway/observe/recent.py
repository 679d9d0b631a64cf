"""The latest audit records of this process, for the key dashboard (:mod:`gateway.dashboard`).

The gateway writes its audit trail to the log (``gateway.audit`` lines); it keeps no durable
store of it. So that an operator can see what just happened without a log pipeline, the public
listener's front handler also appends each audit record here, as a plain tuple: the hot
path pays one ``deque.append`` (no formatting, no lock; everything runs on the event loop).

This is per process and bounded (:data:`CAPACITY` records, the oldest dropped first): with
``workers: N`` the supervisor that serves the dashboard serves no public requests, and each
worker keeps its own. The log is the audit trail; this is a window onto its latest lines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

CAPACITY = 1000

# (unix time, request id, route, method, status, credential, account, subject, actor, key id,
# outcome): the fields of a gateway.audit line, in this order.
AuditTuple = tuple[
    float, str, str, str, int, str, str | None, str | None, str | None, str | None, str
]

RECENT: deque[AuditTuple] = deque(maxlen=CAPACITY)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record, as the dashboard shows it."""

    at: float
    request_id: str
    route: str
    method: str
    status: int
    credential: str
    account: str | None
    subject: str | None
    actor: str | None
    key_id: str | None
    outcome: str


def latest(
    *,
    account: str | None = None,
    actor: str | None = None,
    limit: int = 100,
    source: Iterable[AuditTuple] | None = None,
) -> list[AuditEvent]:
    """At most ``limit`` records, newest first, whose account (and actor) equal the given ones
    (``None``: any)."""
    found: list[AuditEvent] = []
    for entry in reversed(list(RECENT if source is None else source)):
        if account is not None and entry[6] != account:
            continue
        if actor is not None and entry[8] != actor:
            continue
        found.append(AuditEvent(*entry))
        if len(found) >= limit:
            break
    return found
