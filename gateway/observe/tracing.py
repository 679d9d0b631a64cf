"""Tracing: the :class:`Tracer` every runtime carries; a no-op one while ``tracing`` is off.

With ``tracing.enabled`` the runtime's tracer is :class:`gateway.observe.otel.OtelTracer`
(OpenTelemetry, imported only then); otherwise it is :data:`NOOP_TRACER`, whose every method
returns the one :data:`NOOP_SPAN` or its argument: nothing is allocated, imported or recorded
on the request path, and a client's ``traceparent``/``tracestate`` headers are forwarded like any
other header.

The spans of one proxied request (docs/operations.md, "Tracing")::

    {METHOD} {route}          SERVER    the request: the front handler to last byte
    ├── gateway.authenticate  INTERNAL  credential kind, outcome, reason
    │   └── gateway.store …   CLIENT    a store operation the authentication asked for
    ├── gateway.authorize     INTERNAL  route, outcome, reason
    └── gateway.upstream      CLIENT    the forwarded request; the upstream's traceparent

Contract for every implementation: attribute values come from closed sets (credential kinds,
error and reason codes, route ids and templates, upstream names, store operations, status
codes, the folded method) or are the request id, which is never shaped like a credential. No
header value, path, query, body, token, key, account or user is ever an attribute.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol

from multidict import CIMultiDict
from yarl import URL

from gateway.config import TracingSettings
from gateway.errors import GatewayError
from gateway.observe.metrics import KNOWN_METHODS
from gateway.observe.redact import looks_secret

# Attribute names (OpenTelemetry semantic conventions where one exists).
METHOD: Final = "http.request.method"
STATUS: Final = "http.response.status_code"
HTTP_ROUTE: Final = "http.route"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
DB_SYSTEM: Final = "db.system.name"
DB_OPERATION: Final = "db.operation.name"
REQUEST_ID: Final = "gateway.request_id"
ROUTE: Final = "gateway.route"
CREDENTIAL_KIND: Final = "gateway.credential.kind"
OUTCOME: Final = "gateway.outcome"
ERROR: Final = "gateway.error"
REASON: Final = "gateway.reason"
UPSTREAM: Final = "gateway.upstream"

# Span names.
AUTHENTICATE: Final = "gateway.authenticate"
AUTHORIZE: Final = "gateway.authorize"
UPSTREAM_SPAN: Final = "gateway.upstream"
STORE_SPAN: Final = "gateway.store"

# W3C trace context: replaced, not appended to, when the gateway traces.
TRACE_HEADERS: Final = ("traceparent", "tracestate")

_REASON: Final = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")

StoreObserver = Callable[[str, float, bool], None]


class Span(Protocol):
    """One step's span, used as ``with tracer.authentication() as span: span.set(…)``.

    Leaving the block ends the span. A :class:`~gateway.errors.GatewayError` leaving it is
    recorded as its code (``gateway.error``) and ``details.reason`` (``gateway.reason``, only
    when it is a short lower-case identifier), never as its message; on a decision step
    (authentication, authorization) ``gateway.outcome`` is ``allow`` or ``deny``. The span's
    status is an error only for a 5xx code or an exception that is not a ``GatewayError``
    (recorded by its type name only). The exception is never swallowed."""

    def set(self, key: str, value: str | int) -> None:
        """Set one attribute; ``value`` must come from a closed set (module docstring)."""

    def __enter__(self) -> Span: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class RequestSpan(Protocol):
    """The request's span, current for everything the request does until :meth:`finish`."""

    def finish(self, status: int, route: str, credential: str, error: str | None) -> None:
        """End the span with the answer: status code, route id, credential kind (``none``
        without one) and the error code the client got. Call once, in the same task."""


class Tracer(Protocol):
    """What the gateway traces. ``enabled`` is false only for :data:`NOOP_TRACER`."""

    enabled: bool

    def request(
        self,
        headers: Mapping[str, str],
        method: str,
        request_id: str,
        secret: Callable[[str], bool] | None = None,
    ) -> RequestSpan:
        """Start the request's span, continuing the trace of the client's W3C
        ``traceparent``/``tracestate`` when they are valid (a new trace otherwise), without
        ``tracestate`` members that look like a credential or that ``secret`` says are one
        (a shape only the config knows)."""

    def authentication(self) -> Span:
        """The span of extracting and verifying the credential."""

    def authorization(self, route: str, template: str | None) -> Span:
        """The span of the policy's verdict and the relationship check for ``route`` (a rule
        id, or ``unmatched``; ``template`` is the matched path template, never the path)."""

    def upstream(self, name: str, method: str, url: URL, out: CIMultiDict[str]) -> Span:
        """The span of the forwarded request to upstream ``name`` (``url`` is its configured
        base). Writes this span's ``traceparent`` (and ``tracestate``) into ``out``, the
        outgoing headers, in place of the client's."""

    def store_observer(self, observe: StoreObserver, system: str) -> StoreObserver:
        """The store observer to install: ``observe`` (the metrics) plus, when tracing, a span
        per operation of store ``system``, as a child of the current span (none outside a
        recorded request)."""

    def flush(self, timeout: float) -> bool:
        """Blocking: export every span ended so far; false if ``timeout`` seconds passed first.
        Call from a thread, not the event loop."""

    async def close(self) -> None:
        """Export what is pending and stop the exporter's thread (at shutdown, or when a
        reload replaced this tracer). Idempotent."""


class NoopSpan:
    """The one span of tracing off (and of steps of a request not sampled): does nothing."""

    __slots__ = ()

    def set(self, key: str, value: str | int) -> None:
        pass

    def finish(self, status: int, route: str, credential: str, error: str | None) -> None:
        pass

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


NOOP_SPAN: Final = NoopSpan()


class NoopTracer:
    """Tracing off: every call returns :data:`NOOP_SPAN` (or the observer it was given)."""

    __slots__ = ()
    enabled = False

    def request(
        self,
        headers: Mapping[str, str],
        method: str,
        request_id: str,
        secret: Callable[[str], bool] | None = None,
    ) -> NoopSpan:
        return NOOP_SPAN

    def authentication(self) -> NoopSpan:
        return NOOP_SPAN

    def authorization(self, route: str, template: str | None) -> NoopSpan:
        return NOOP_SPAN

    def upstream(self, name: str, method: str, url: URL, out: CIMultiDict[str]) -> NoopSpan:
        return NOOP_SPAN

    def store_observer(self, observe: StoreObserver, system: str) -> StoreObserver:
        return observe

    def flush(self, timeout: float) -> bool:
        return True

    async def close(self) -> None:
        pass


NOOP_TRACER: Final = NoopTracer()


def build_tracer(settings: TracingSettings) -> Tracer:
    """The tracer ``settings`` ask for: :data:`NOOP_TRACER` when off, without importing
    OpenTelemetry; an OTLP/HTTP-exporting one (its export thread started) when on."""
    if not settings.enabled:
        return NOOP_TRACER
    from gateway.observe.otel import OtelTracer

    return OtelTracer(settings)


def method_attribute(method: str) -> str:
    """The method as recorded: one of the known methods, or ``OTHER`` (a client chooses its
    method; a key sent as one must not become an attribute)."""
    # SECURITY: folded to the known set before it is recorded (and becomes the span's name).
    return method if method in KNOWN_METHODS else "OTHER"


def error_attributes(exc: BaseException) -> tuple[str | None, str | None, bool]:
    """(error code, reason, is a server-side failure) of an exception leaving a span. The
    reason is ``details.reason`` only when it is a short identifier that does not look like a
    credential; anything else is left out."""
    if isinstance(exc, GatewayError):
        reason = exc.details.get("reason")
        if not (isinstance(reason, str) and _REASON.match(reason) and not looks_secret(reason)):
            reason = None
        return exc.code, reason, exc.status >= 500
    return None, None, True


if TYPE_CHECKING:
    _noop_tracer: Tracer = NOOP_TRACER
    _noop_span: Span = NOOP_SPAN
    _noop_request: RequestSpan = NOOP_SPAN
