"""``api_keys``: the lifetime of API keys and how long a lookup may be reused."""

from __future__ import annotations

from pydantic import Field

from gateway.config.base import Duration, Section

MAX_KEY_LIFETIME = 90 * 86400.0


class ApiKeySettings(Section):
    """API keys (`sk_live_…`, `sk_sandbox_…`, `sk_test_…`)."""

    lifetime: Duration = Field(
        MAX_KEY_LIFETIME,
        ge=60,
        le=MAX_KEY_LIFETIME,
        description="Lifetime of a new key; can only be shortened.",
    )
    cache_ttl: Duration = Field(
        1.0,
        ge=0,
        le=1.0,
        description="In-process cache of key lookups; at most 1 s, the revocation bound.",
    )
    stale_window: Duration = Field(
        0.0,
        ge=0,
        le=3600,
        description="While Redis is down, keep admitting keys cached this much longer; "
        "0 fails closed.",
    )
