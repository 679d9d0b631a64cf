"""``decision``: forward-auth mode, for a proxy that asks before it forwards."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from gateway.config.base import Bool, Int, OneOf, Section
from gateway.config.errors import problem
from gateway.config.listeners import Listener
from gateway.config.upstreams import Environment

# The front proxies decision mode serves, each naming the headers it writes the original request
# into (gateway.forward.decision.ORIGINAL reads only those).
PROXIES = ("nginx", "ingress-nginx", "traefik", "envoy")


def _prefix(prefix: str) -> str:
    if not prefix.startswith("/") or prefix.endswith("/") or len(prefix) < 2:
        raise problem("must start with '/' and not end with '/', e.g. /decisions")
    return prefix


class DecisionListener(Listener):
    """The decision listener: decisions only (paths under ``decision.prefix``; anything else is
    404), served without aiohttp's request and response objects (operations.md)."""

    port: Int = Field(8081, ge=0, le=65535, description="Port to bind (0: any free port).")


class DecisionSettings(Section):
    """Decision mode (forward auth): answer 200 with the identity headers, or the error."""

    enabled: Bool = Field(False, description="Serve decisions under `prefix`.")
    prefix: Annotated[str, AfterValidator(_prefix)] = Field(
        "/decisions", description="Path prefix of decision requests."
    )
    proxy: Annotated[str, OneOf(PROXIES)] | None = Field(
        None,
        description="The front proxy that asks (required with `enabled`): `nginx` "
        "(`X-Original-Method` + `X-Original-URI`), `ingress-nginx` (`X-Original-Method` + "
        "`X-Original-URL`), `traefik` (`X-Forwarded-Method` + `X-Forwarded-Uri`) or `envoy` "
        "(the request itself, below `prefix`). Only that proxy's headers are read; a client's "
        "copies of the others, which the proxy passes on untouched, are ignored (a client's "
        "`X-Original-URL` is refused, 403 `forbidden_header`, except behind ingress-nginx).",
    )
    environments: tuple[Environment, ...] = Field(
        ("live",),
        min_length=1,
        description="The key environments whose credentials a decision admits (default: live "
        "only). The front proxy sends what it is told to allow to the backend it is configured "
        "with, whatever `X-Auth-Environment` says: list `sandbox` only when it routes sandbox "
        "requests to a sandbox backend (operations.md, Decision mode), or alone for a front "
        "proxy before a sandbox backend. Any other credential is refused (503 `no_upstream`), "
        "as in proxy mode for an environment with no upstream; each one listed needs an "
        "upstream (`environments`).",
    )
    listen: DecisionListener | None = Field(
        None,
        description="A listener of its own for decisions (operations.md, Decision mode): the fast "
        "path for a proxy that asks on every request; decisions stay on the public listener too.",
    )

    @model_validator(mode="after")
    def _listen_needs_enabled(self) -> DecisionSettings:
        if self.listen is not None and not self.enabled:
            raise problem("a decision listener needs decision.enabled: true", "listen")
        # SECURITY: no default: a front proxy passes the client's own headers on to the gateway,
        # so reading another proxy's header family would let a client name the request decided.
        if self.enabled and self.proxy is None:
            raise problem(
                f"is required with decision.enabled: the front proxy that asks, one of "
                f"{', '.join(PROXIES)} (its headers carry the original request)",
                "proxy",
            )
        return self


def routed(decision: DecisionSettings, environments: dict[str, str] | None) -> DecisionSettings:
    """Every environment decisions admit has an upstream (``environments``, the routed map):
    a credential of one that has none would only ever be refused."""
    if not decision.enabled or environments is None:  # None: that field's error is reported
        return decision
    for i, environment in enumerate(decision.environments):
        if environment not in environments:
            raise problem(
                f"{environment!r} has no upstream: define upstreams.{environment}, or route it "
                "with environments",
                "environments",
                i,
            )
    return decision


def own_port(
    decision: DecisionSettings, listen: Listener | None, admin: Listener | None
) -> DecisionSettings:
    """The decision listener's port is none of the others' (with ``workers: N`` the public port
    is bound with ``SO_REUSEPORT``, which would otherwise share it silently)."""
    if decision.listen is None or decision.listen.port == 0:
        return decision
    for name, other in (("listen", listen), ("admin", admin)):
        if other is not None and other.port == decision.listen.port:
            raise problem(f"port {other.port} is already {name}.port", "listen", "port")
    return decision
