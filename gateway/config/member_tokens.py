"""``member_tokens``: claim rules for tokens a customer signs with its API key."""

from __future__ import annotations

from pydantic import Field

from gateway.config.base import Duration, Section


class MemberTokenSettings(Section):
    """Member and caregiver tokens (HS256, signed by the customer, `kid` = key id)."""

    max_lifetime: Duration = Field(
        86400.0, ge=1, le=86400, description="Longest `exp - iat` accepted."
    )
    leeway: Duration = Field(30.0, ge=0, le=300, description="Clock skew allowed on `exp`/`iat`.")
