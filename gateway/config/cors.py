"""``cors``: which browser origins may call the API, for which route groups."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field, model_validator

from gateway.config.base import METHODS, Bool, Int, Label, OneOf, Section
from gateway.config.errors import problem

_ORIGIN: Final = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$")


def _origin(origin: str) -> str:
    if origin != "*" and not _ORIGIN.match(origin):
        raise problem(f"{origin!r} is not an origin (scheme://host[:port])")
    return origin


class CorsPolicy(Section):
    """CORS for browser clients, for the route groups named (all groups when empty)."""

    empty_is_default = frozenset({"methods", "headers", "expose_headers"})

    origins: frozenset[Annotated[str, AfterValidator(_origin), Label("origin")]] = Field(
        min_length=1,
        description='Exact `scheme://host[:port]` origins; `"*"` only without credentials.',
    )
    methods: tuple[Annotated[str, OneOf(METHODS)], ...] = Field(
        ("GET",), description="Methods a preflight may ask for."
    )
    headers: tuple[str, ...] = Field(
        ("Authorization", "Content-Type"),
        description="Request headers a preflight may ask for.",
    )
    expose_headers: tuple[str, ...] = Field(
        ("X-Request-Id",),
        description="Response headers the page may read (`RateLimit-*` and `Retry-After` "
        "always are).",
    )
    max_age: Int = Field(600, ge=0, le=86400, description="Seconds a preflight is cached.")
    allow_credentials: Bool = Field(
        False, description="Allow cookies and `Authorization` from the page."
    )
    groups: frozenset[str] = Field(
        frozenset(),
        description="Route groups this applies to (each one a policy rule is in); empty: all.",
    )

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsPolicy:
        if self.allow_credentials and "*" in self.origins:
            # SECURITY: a wildcard origin with credentials would let any site act as the user.
            raise problem("'*' cannot be combined with allow_credentials", "origins")
        return self
