"""``listen`` and ``admin``: where the gateway accepts connections."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from gateway.config.base import FilePath, Int, Section
from gateway.config.errors import problem

# A host name: dot-separated labels of letters, digits, inner '-' and '_' (a container's
# service name may hold one), or of any letters (an internationalised name).
_HOST_NAME = re.compile(r"(?!-)[\w-]{1,63}(?<!-)(\.(?!-)[\w-]{1,63}(?<!-))*\.?\Z")


def _host(host: str) -> str:
    """An IP address, a host name that is not a malformed IPv4 address (``999.1.1.1`` is a
    valid name by its characters, and bound as one failed with ``unknown error -2``), or ``""``
    (every interface, as asyncio binds it)."""
    if host == "":
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOST_NAME.match(host) or host.rstrip(".").replace(".", "").isdigit():
        raise problem(f"must be an IP address or a host name, got {host!r}")
    return host


Host = Annotated[str, AfterValidator(_host)]


class Listener(Section):
    """The public listener."""

    host: Host = Field(
        "0.0.0.0",  # noqa: S104 - a gateway listens publicly
        description="Address to bind (an IP address, or a host name it resolves to).",
    )
    port: Int = Field(8080, ge=0, le=65535, description="Port to bind (0: any free port).")
    tls_cert: FilePath | None = Field(
        None, description="PEM certificate chain; TLS 1.2+ when given (re-read on SIGHUP)."
    )
    tls_key: FilePath | None = Field(None, description="PEM private key of `tls_cert`.")

    @model_validator(mode="after")
    def _tls_pair(self) -> Listener:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise problem("tls_cert and tls_key must be given together")
        return self


def _admin_token(token: str) -> str:
    if len(token) < 16:
        raise problem("must be at least 16 characters")
    return token


class AdminListener(Listener):
    """The admin listener: health, readiness, metrics and the admin API."""

    host: Host = Field("127.0.0.1", description="Address to bind; keep it private.")
    port: Int = Field(9090, ge=0, le=65535, description="Port to bind.")
    token: Annotated[str, AfterValidator(_admin_token)] | None = Field(
        None,
        description="Bearer token for the admin API (at least 16 characters); "
        "without it the admin API answers 404.",
    )
