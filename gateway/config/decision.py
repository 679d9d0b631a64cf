"""``decision``: forward-auth mode, for a proxy that asks before it forwards."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from gateway.config.base import Bool, Int, OneOf, Section
from gateway.config.errors import problem
from gateway.config.listeners import Listener

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
        "copies of the others, which the proxy passes on untouched, are ignored.",
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
