"""``relationships``: who may act for whom (caregiver tokens)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from gateway.config.base import Duration, OneOf, Section, check_url
from gateway.config.durations import format_duration
from gateway.config.errors import problem

# With the store provider a revocation must reach every replica within one second.
STORE_POSITIVE_TTL_MAX = 1.0


class RelationshipSettings(Section):
    """Where caregiver relationships come from, and how long an answer is kept."""

    provider: Annotated[str, OneOf(("store", "http"))] = Field(
        "store",
        description="`store` (Redis/memory, managed with the CLI and admin API) or `http` "
        "(asked of `url_template`).",
    )
    url_template: Annotated[str, AfterValidator(check_url)] | None = Field(
        None,
        validate_default=True,
        description="With `http`: the URL asked (GET), with `{subject}` and `{actor}` (and "
        "optionally `{account}`); 2xx means active, 403/404/410 inactive, anything else 503.",
    )
    positive_ttl: Duration = Field(
        1.0,
        ge=0,
        le=3600,
        description="How long an active relationship is cached (at most 1 s with `store`).",
    )
    negative_ttl: Duration = Field(
        1.0, ge=0, le=3600, description="How long a missing relationship is cached."
    )
    timeout: Duration = Field(
        2.0, ge=0.01, le=60, description="Timeout of an `http` lookup; past it, 503."
    )

    @field_validator("url_template")
    @classmethod
    def _template(cls, template: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("provider") != "http":
            return template
        if template is None:
            raise problem("is required when provider is http")
        if "{subject}" not in template or "{actor}" not in template:
            raise problem("must contain {subject} and {actor}")
        return template

    @field_validator("positive_ttl")
    @classmethod
    def _revocation_bound(cls, ttl: float, info: ValidationInfo) -> float:
        if info.data.get("provider") == "store" and ttl > STORE_POSITIVE_TTL_MAX:
            raise problem(
                f"must be at most {format_duration(STORE_POSITIVE_TTL_MAX)} with the store "
                f"provider (the revocation bound), got {format_duration(ttl)}"
            )
        return ttl
