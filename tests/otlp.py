"""A real OTLP/HTTP traces receiver for tests and the benchmark: ``POST /v1/traces`` with an
``ExportTraceServiceRequest`` in protobuf (what a collector accepts on port 4318), decoded with
opentelemetry-proto into :class:`ReceivedSpan`s. The raw bodies are kept too, so a test can
search every byte the gateway exported."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PATH = "/v1/traces"
KINDS = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
STATUSES = {
    Status.STATUS_CODE_UNSET: "unset",
    Status.STATUS_CODE_OK: "ok",
    Status.STATUS_CODE_ERROR: "error",
}

Value = str | int | float | bool | None


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector received it; ids in lower-case hex, as in ``traceparent``."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: str
    status: str
    attributes: dict[str, Value]
    trace_state: str
    service: dict[str, Value]
    scope: str


def value_of(value: AnyValue) -> Value:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    return None  # arrays, maps and bytes: the gateway sends none


def attributes_of(pairs: list[KeyValue]) -> dict[str, Value]:
    return {pair.key: value_of(pair.value) for pair in pairs}


@dataclass
class OtlpReceiver:
    """Everything POSTed to ``/v1/traces``: the decoded spans and the raw (decompressed)
    bodies. Anything but a valid protobuf request is answered 400, as a collector does."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception:
            return web.Response(status=400)
        self.bodies.append(body)
        for resource_spans in message.resource_spans:
            service = attributes_of(list(resource_spans.resource.attributes))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=KINDS.get(span.kind, "unspecified"),
                            status=STATUSES.get(span.status.code, "unset"),
                            attributes=attributes_of(list(span.attributes)),
                            trace_state=span.trace_state,
                            service=service,
                            scope=scope_spans.scope.name,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [
            span
            for span in self.spans
            if span.trace_id == parent.trace_id and span.parent_span_id == parent.span_id
        ]
