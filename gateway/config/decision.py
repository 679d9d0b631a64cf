"""``decision``: forward-auth mode, for a proxy that asks before it forwards."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from gateway.config.base import Bool, Section
from gateway.config.errors import problem


def _prefix(prefix: str) -> str:
    if not prefix.startswith("/") or prefix.endswith("/") or len(prefix) < 2:
        raise problem("must start with '/' and not end with '/', e.g. /decisions")
    return prefix


class DecisionSettings(Section):
    """Decision mode (forward auth): answer 200 with the identity headers, or the error."""

    enabled: Bool = Field(False, description="Serve decisions under `prefix`.")
    prefix: Annotated[str, AfterValidator(_prefix)] = Field(
        "/decisions", description="Path prefix of decision requests."
    )
