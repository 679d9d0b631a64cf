"""``abuse``: the budget of failed authentications per client address."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.config.base import Bool, Cidr, Int, OneOf, Section
from gateway.config.rate_limits import ON_STORE_ERROR


class AbuseSettings(Section):
    """The budget of failed authentications per client address (`gateway.abuse`)."""

    enabled: Bool = Field(
        False,
        description="Off by default: only the operator knows where client addresses come from.",
    )
    failures_per_minute: Int = Field(
        60, ge=1, le=1_000_000, description="Failures an address may have, sustained."
    )
    burst: Int = Field(30, ge=1, le=1_000_000, description="Failures an address may have at once.")
    trusted_proxies: tuple[Cidr, ...] = Field(
        (),
        description="CIDR networks of the proxies in front whose `X-Forwarded-For` is believed "
        "(`0.0.0.0/0` and `::/0` are refused).",
    )
    ipv6_prefix: Int = Field(
        64, ge=32, le=128, description="IPv6 clients are counted per network of this length."
    )
    on_store_error: Annotated[str, OneOf(ON_STORE_ERROR)] = Field(
        "deny", description="`deny` (503) or `allow` when the store cannot answer."
    )
