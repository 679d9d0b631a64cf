"""What the pipeline learned about one request, for the access log, audit log and metrics."""

from __future__ import annotations

from aiohttp import web

from gateway.principal import CredentialKind, Principal


class Exchange:
    """``admitted``: the pipeline let the request through (authenticated, authorized, within
    its limits). What fails after that (the upstream, an endpoint's own checks) is not an
    authentication's refusal: the metrics and the audit line say ``allow`` for it, so that a
    backend outage does not look like credential stuffing."""

    __slots__ = (
        "admitted",
        "credential",
        "credential_present",
        "error",
        "group",
        "principal",
        "rate",
        "request_id",
        "route",
        "started",
        "upstream",
        "upstream_seconds",
    )

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started
        self.route = "unmatched"
        self.group: str | None = None
        # (limit, remaining, reset seconds) of the tightest rate limit that applied.
        self.rate: tuple[int, int, float] | None = None
        self.credential: CredentialKind | None = None
        self.credential_present = False
        self.admitted = False
        self.principal: Principal | None = None
        self.error: str | None = None
        self.upstream: str | None = None
        # How long the upstream took to answer (set by the forwarder once it has).
        self.upstream_seconds: float | None = None


EXCHANGE = web.RequestKey("exchange", Exchange)
