"""``tracing``: OpenTelemetry spans exported over OTLP/HTTP (operations.md, "Tracing")."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import BeforeValidator, Field, model_validator
from yarl import URL

from gateway.config.base import Bool, Duration, HttpUrl, Label, Section
from gateway.config.errors import problem, type_name

_SERVICE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _ratio(value: object) -> float:
    if isinstance(value, str):
        try:
            return float(value)  # from an ${ENV} placeholder
        except ValueError:
            raise problem(f"must be a number from 0 to 1, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem(f"must be a number from 0 to 1, got {type_name(value)}")
    return float(value)


def _service_name(value: object) -> str:
    if not isinstance(value, str) or not _SERVICE_NAME.match(value):
        raise problem("must be a name of letters, digits, '.', '_' and '-' (health-gateway)")
    return value


Ratio = Annotated[float, BeforeValidator(_ratio), Label("number")]
ServiceName = Annotated[str, BeforeValidator(_service_name), Label("name")]


class TracingSettings(Section):
    """OpenTelemetry tracing: W3C trace context in and out, spans exported over OTLP/HTTP."""

    enabled: Bool = Field(
        False,
        description="Record and export spans. Off, nothing of OpenTelemetry is loaded and a "
        "client's `traceparent`/`tracestate` reach the upstream unchanged.",
    )
    endpoint: HttpUrl | None = Field(
        None,
        description="The collector's OTLP/HTTP traces URL, such as "
        "`http://collector:4318/v1/traces`; required when enabled.",
    )
    sampling_ratio: Ratio = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; a request with a `traceparent` follows its "
        "sampled flag (parent-based).",
    )
    service_name: ServiceName = Field(
        "health-gateway", description="`service.name` of the exported spans."
    )
    timeout: Duration = Field(
        10.0, ge=0.1, le=60, description="Timeout of one export request to the collector."
    )

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> TracingSettings:
        if self.enabled and self.endpoint is None:
            raise problem("is required when tracing is enabled", "endpoint")
        return self

    @property
    def endpoint_url(self) -> URL:
        """The endpoint of an enabled section (validated present)."""
        if self.endpoint is None:
            raise ValueError("tracing.endpoint is not set")
        return self.endpoint
