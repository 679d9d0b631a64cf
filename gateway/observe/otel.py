"""The OpenTelemetry :class:`~gateway.observe.tracing.Tracer`: spans exported over OTLP/HTTP.

Imported only when ``tracing.enabled`` (:func:`gateway.observe.tracing.build_tracer`). Each
tracer has a provider of its own (never OpenTelemetry's global one): a parent-based sampler
over ``sampling_ratio``, a ``BatchSpanProcessor`` whose thread posts batches to ``endpoint``,
and the W3C trace-context propagator. :meth:`OtelTracer.close` exports what is pending and
joins that thread (at shutdown, :func:`gateway.runtime.close_resources`).

The span's context is attached to the request's task (``contextvars``) for the request's
length, so a span started during it (a step, a store operation) is a child of the right one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final

from multidict import CIMultiDict
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from gateway import __version__
from gateway.config import TracingSettings
from gateway.observe import tracing as t
from gateway.observe.redact import looks_secret

# A client's malformed trace context is ignored (a new trace starts), never logged: otherwise
# every such request would be a warning line, with the client's text in it.
_QUIET_LOGGERS: Final = ("opentelemetry.trace.span", "opentelemetry.trace.propagation")


class _Step:
    """A step's span (:class:`~gateway.observe.tracing.Span`), current while its block runs."""

    __slots__ = ("_decision", "_span", "_token")

    def __init__(self, span: trace.Span, decision: bool) -> None:
        self._span = span
        self._decision = decision
        self._token: object = None

    def set(self, key: str, value: str | int) -> None:
        self._span.set_attribute(key, value)
        if key == t.ERROR_TYPE:
            self._span.set_status(Status(StatusCode.ERROR, str(value)))

    def __enter__(self) -> _Step:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if exc is None:
                if self._decision:
                    span.set_attribute(t.OUTCOME, "allow")
            elif span.is_recording():
                _record_error(span, exc, decision=self._decision)
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            span.end()


def _record_error(span: trace.Span, exc: BaseException, *, decision: bool) -> None:
    code, reason, server_side = t.error_attributes(exc)
    if decision:
        span.set_attribute(t.OUTCOME, "deny" if code is not None else "error")
    if code is not None:
        span.set_attribute(t.ERROR, code)
    if reason is not None:
        span.set_attribute(t.REASON, reason)
    if server_side:
        error_type = code or type(exc).__qualname__
        span.set_attribute(t.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))


class _Request:
    """The request's span (:class:`~gateway.observe.tracing.RequestSpan`)."""

    __slots__ = ("_method", "_span", "_token")

    def __init__(self, span: trace.Span, parent: Context, method: str) -> None:
        self._span = span
        self._method = method
        self._token = otel_context.attach(trace.set_span_in_context(span, parent))

    def finish(self, status: int, route: str, credential: str, error: str | None) -> None:
        span = self._span
        try:
            if span.is_recording():
                span.update_name(f"{self._method} {route}")
                span.set_attribute(t.STATUS, status)
                span.set_attribute(t.ROUTE, route)
                span.set_attribute(t.CREDENTIAL_KIND, credential)
                if error is not None:
                    span.set_attribute(t.ERROR, error)
                if status >= 500:
                    span.set_attribute(t.ERROR_TYPE, error or str(status))
                    span.set_status(Status(StatusCode.ERROR, error or str(status)))
        finally:
            otel_context.detach(self._token)
            span.end()


class OtelTracer:
    """Tracing on (:class:`~gateway.observe.tracing.Tracer`). Construction starts the
    exporter's thread; :meth:`close` stops it."""

    enabled = True

    def __init__(self, settings: TracingSettings) -> None:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        self._provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)),
            resource=resource,
            shutdown_on_exit=False,  # close() does it, at shutdown; no handler per reload
        )
        exporter = OTLPSpanExporter(endpoint=str(settings.endpoint_url), timeout=settings.timeout)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("health-gateway", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._closed = False

    def request(
        self,
        headers: Mapping[str, str],
        method: str,
        request_id: str,
        secret: Callable[[str], bool] | None = None,
    ) -> _Request:
        parent = _without_secrets(self._propagator.extract(headers), secret or _never)
        method = t.method_attribute(method)
        span = self._tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={t.METHOD: method, t.REQUEST_ID: request_id},
        )
        return _Request(span, parent, method)

    def authentication(self) -> t.Span:
        if not trace.get_current_span().is_recording():
            return t.NOOP_SPAN  # a request not sampled: its steps cannot be either
        span = self._tracer.start_span(t.AUTHENTICATE, attributes={t.CREDENTIAL_KIND: "none"})
        return _Step(span, decision=True)

    def authorization(self, route: str, template: str | None) -> t.Span:
        if not trace.get_current_span().is_recording():
            return t.NOOP_SPAN
        attributes: dict[str, str] = {t.ROUTE: route}
        if template is not None:
            attributes[t.HTTP_ROUTE] = template
        span = self._tracer.start_span(t.AUTHORIZE, attributes=attributes)
        return _Step(span, decision=True)

    def upstream(self, name: str, method: str, url: URL, out: CIMultiDict[str]) -> t.Span:
        for header in t.TRACE_HEADERS:
            out.popall(header, None)
        if not trace.get_current_span().is_recording():
            # Not sampled: the upstream continues the trace from the request's span.
            self._propagator.inject(out)
            return t.NOOP_SPAN
        attributes: dict[str, str | int] = {
            t.UPSTREAM: name,
            t.METHOD: t.method_attribute(method),
            t.SERVER_ADDRESS: url.host or "",
        }
        if url.port is not None:
            attributes[t.SERVER_PORT] = url.port
        span = self._tracer.start_span(t.UPSTREAM_SPAN, kind=SpanKind.CLIENT, attributes=attributes)
        self._propagator.inject(out, context=trace.set_span_in_context(span))
        return _Step(span, decision=False)

    def store_observer(self, observe: t.StoreObserver, system: str) -> t.StoreObserver:
        tracer = self._tracer

        def observer(operation: str, seconds: float, ok: bool) -> None:
            observe(operation, seconds, ok)
            if not trace.get_current_span().is_recording():
                return  # outside a recorded request: no trace of its own
            end = time.time_ns()
            span = tracer.start_span(
                f"{t.STORE_SPAN} {operation}",
                kind=SpanKind.CLIENT,
                start_time=end - int(seconds * 1e9),
                attributes={
                    t.DB_SYSTEM: system,
                    t.DB_OPERATION: operation,
                    t.OUTCOME: "ok" if ok else "error",
                },
            )
            if not ok:
                span.set_attribute(t.ERROR_TYPE, "store_unavailable")
                span.set_status(Status(StatusCode.ERROR, "store_unavailable"))
            span.end(end_time=end)

        return observer

    def flush(self, timeout: float) -> bool:
        return self._provider.force_flush(int(timeout * 1000))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Exports what is queued: bounded by the SDK at 30 s when the collector does not answer.
        await asyncio.to_thread(self._provider.shutdown)


def _never(value: str) -> bool:
    return False


def _without_secrets(parent: Context, secret: Callable[[str], bool]) -> Context:
    """``parent`` without the client's ``tracestate`` members that look like a credential or
    that ``secret`` says are one (an opaque token of ``introspection.token_pattern``): the
    trace state travels with every span to the collector and on to the upstream."""
    span_context = trace.get_current_span(parent).get_span_context()
    state = span_context.trace_state
    if not state or not any(looks_secret(v) or secret(v) for v in state.values()):
        return parent
    # SECURITY: a credential a client put in tracestate is neither exported nor forwarded.
    kept = TraceState(
        [(key, value) for key, value in state.items() if not (looks_secret(value) or secret(value))]
    )
    remote = trace.SpanContext(
        trace_id=span_context.trace_id,
        span_id=span_context.span_id,
        is_remote=True,
        trace_flags=span_context.trace_flags,
        trace_state=kept,
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(remote), parent)
