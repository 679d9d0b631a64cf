"""``rate_limits``: budgets per credential or account, per route group."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from gateway.config.base import Duration, Int, OneOf, Section

RATE_LIMIT_PER: Final = ("credential", "account")
ON_STORE_ERROR: Final = ("deny", "allow")


class RateLimit(Section):
    """A GCRA budget: `limit` requests per `period`, for the routes of one group."""

    group: str = Field(
        "default", description="A policy rule's `group` (a group no rule is in is an error)."
    )
    per: Annotated[str, OneOf(RATE_LIMIT_PER)] = Field(
        "credential",
        description="`credential`: per API key, per user of a user token or SDK session, per "
        "member/caregiver pair, per person of a team session; `account`: the whole account.",
    )
    limit: Int = Field(ge=1, le=10_000_000, description="Requests allowed per period.")
    period: Duration = Field(ge=0.001, le=86400, description="The period.")


class RateLimitSettings(Section):
    """Rate limits, applied after authentication; every replica shares one budget."""

    rules: tuple[RateLimit, ...] = Field((), description="The limits.")
    on_store_error: Annotated[str, OneOf(ON_STORE_ERROR)] = Field(
        "deny",
        description="`deny` (503) or `allow` when the store cannot answer; both counted in "
        "`gateway_rate_limit_store_failures_total`.",
    )
