"""``store``: where keys, tokens, relationships and rate-limit buckets live."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from gateway.config.base import Duration, Section
from gateway.config.errors import problem

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def check_store_url(url: str) -> str:
    if url != "memory" and not url.startswith(REDIS_SCHEMES):
        raise problem("must be 'memory' or a redis://, rediss:// or unix:// URL")
    return url


def store_from_url(value: object) -> object:
    """``store: redis://…`` is short for ``store: {url: redis://…}``."""
    if isinstance(value, str):
        return {"url": check_store_url(value)}
    return value


class StoreSettings(Section):
    """The shared store. `memory` for one process; Redis for any number of replicas."""

    url: Annotated[str, AfterValidator(check_store_url)] = Field(
        "memory", description="`memory`, or a `redis://`, `rediss://` or `unix://` URL."
    )
    timeout: Duration = Field(
        0.5,
        ge=0.01,
        le=30,
        description="Bounds every Redis operation on the socket; in a burst a request waits "
        "for one of the 64 pooled connections for up to 4 times `timeout` (at least 2 s). "
        "Past either bound: 503 `service_unavailable`.",
    )
    prefix: str = Field("gw:", description="Prefix of every key the gateway writes.")

    @property
    def is_redis(self) -> bool:
        return self.url.startswith(REDIS_SCHEMES)
