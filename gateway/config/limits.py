"""``limits``: sizes and times a request may take before the gateway refuses it."""

from __future__ import annotations

from pydantic import Field

from gateway.config.base import Duration, Int, Section


class Limits(Section):
    """Request limits, checked before any credential is read."""

    max_body_bytes: Int = Field(
        10 * 1024 * 1024,
        ge=0,
        description="413 above it (checked on `Content-Length` and while streaming chunked "
        "bodies).",
    )
    max_header_bytes: Int = Field(
        16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="431 above it, each header line counted as `Name: value\\r\\n` (the "
        "request line not counted); aiohttp's own parser limits sit at four times this as a "
        "last line of defence.",
    )
    max_token_bytes: Int = Field(
        8 * 1024, ge=256, le=64 * 1024, description="Longer credentials are 401."
    )
    header_timeout: Duration = Field(
        15.0,
        ge=0.1,
        le=3600,
        description="A connection must send complete request headers within this time of "
        "opening (or of its previous response), else it is closed; on a TLS listener the "
        "handshake must end within it too, and the headers within it of the handshake.",
    )
    body_timeout: Duration = Field(
        30.0,
        ge=0.1,
        le=3600,
        description="A client that stalls this long mid-body gets 408 and is cut off.",
    )
