"""``headers``: the names of the identity headers, and what the gateway forwards."""

from __future__ import annotations

from pydantic import Field, model_validator

from gateway.config.base import Bool, HeaderName, Section
from gateway.config.errors import problem


class HeaderNames(Section):
    """Names of the headers the gateway sets on authorized requests."""

    account: HeaderName = Field("X-Auth-Account", description="The account.")
    user: HeaderName = Field("X-Auth-User", description="The user, for user-bound credentials.")
    actor: HeaderName = Field(
        "X-Auth-Actor", description="Who acts: key id, user, caregiver or person."
    )
    credential: HeaderName = Field("X-Auth-Credential", description="The credential kind.")
    environment: HeaderName = Field("X-Auth-Environment", description="`live` or `sandbox`.")
    scopes: HeaderName = Field("X-Auth-Scopes", description="The credential's scopes.")
    key_id: HeaderName = Field("X-Auth-Key-Id", description="The API key behind the request.")
    request_id: HeaderName = Field(
        "X-Request-Id", description="The request id (propagated, not owned)."
    )
    assertion: HeaderName = Field(
        "X-Auth-Assertion", description="A signed JWT over the principal (`tokens.assertion`)."
    )

    @model_validator(mode="after")
    def _distinct(self) -> HeaderNames:
        names = [getattr(self, name) for name in HeaderNames.model_fields]
        if len({name.lower() for name in names}) != len(names):
            raise problem("header names must be distinct")
        return self

    def identity(self) -> tuple[str, ...]:
        """The headers only the gateway may set (the request id is propagated, not owned)."""
        return (
            self.account,
            self.user,
            self.actor,
            self.credential,
            self.environment,
            self.scopes,
            self.key_id,
            self.assertion,
        )


class HeaderSettings(HeaderNames):
    """The `headers` section: the names, and what is forwarded of the client's own headers."""

    forward_authorization: Bool = Field(
        False, description="Forward the client's `Authorization` upstream."
    )
    trust_forwarded: Bool = Field(
        False,
        description="Keep and append to a client's `X-Forwarded-*`, `Forwarded` and "
        "`X-Real-IP` (only behind a trusted proxy).",
    )
