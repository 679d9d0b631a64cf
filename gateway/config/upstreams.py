"""``upstreams`` and ``environments``: the backends, and which one each key environment reaches."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, field_validator
from pydantic.json_schema import SkipJsonSchema
from yarl import URL

from gateway.config.base import Duration, FilePath, HttpUrl, Int, OneOf, Section
from gateway.config.errors import problem

ENVIRONMENTS: Final = ("live", "sandbox")

Environment = Annotated[str, OneOf(ENVIRONMENTS)]


class Upstream(Section):
    """A backend the gateway forwards to, named by its key under `upstreams`."""

    derived = frozenset({"name"})

    name: SkipJsonSchema[str] = Field("", description="The key under `upstreams`.")
    url: HttpUrl = Field(description="`http(s)://host[:port]`, without a path or query.")
    connect_timeout: Duration = Field(
        2.0, ge=0.001, le=300, description="Past it: 502 `upstream_unavailable`."
    )
    read_timeout: Duration = Field(
        30.0,
        ge=0.001,
        le=3600,
        description="Past it with no byte from the upstream (and no request body taken by it): "
        "504 `upstream_timeout`, or, once the answer has started, the client's connection is "
        "aborted. Not counted while the client's request body is still arriving (a client's "
        "stall is `limits.body_timeout`'s 408).",
    )
    max_connections: Int = Field(
        256,
        ge=1,
        le=100_000,
        description="Keep-alive connections kept to the upstream for forwarding; requests "
        "beyond wait for one in order. An idle one is closed after 15 s.",
    )
    max_in_flight: Int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Concurrent requests to this upstream; beyond it, a fast 503 "
        "(`reason: overloaded`) instead of a queue.",
    )
    ca_file: FilePath | None = Field(
        None,
        description="CA bundle the upstream's certificate is verified against "
        "(default: the system store).",
    )
    client_cert: FilePath | None = Field(None, description="Client certificate (mutual TLS).")
    client_key: FilePath | None = Field(None, description="Key of `client_cert`.")

    @field_validator("url")
    @classmethod
    def _origin_only(cls, url: URL) -> URL:
        if url.path not in ("", "/") or url.query_string:
            raise problem("must be scheme://host[:port] without a path or query")
        return url.with_path("")


def name_upstreams(upstreams: dict[str, Upstream]) -> dict[str, Upstream]:
    """Each upstream knows its name; at least one is required."""
    if not upstreams:
        raise problem("at least one upstream is required (e.g. upstreams.live.url)")
    return {
        name: upstream if upstream.name == name else upstream.model_copy(update={"name": name})
        for name, upstream in upstreams.items()
    }


def route_environments(
    environments: dict[str, str], upstreams: dict[str, Upstream] | None
) -> dict[str, str]:
    """Each key environment's upstream: as written, else the upstream of the same name."""
    if upstreams is None:  # the upstreams failed; their error is the one reported
        return environments
    routed: dict[str, str] = {}
    for env in ENVIRONMENTS:
        # SECURITY: a sandbox credential never falls back to the live upstream; routing sandbox
        # traffic to `live` must be written down explicitly.
        target = environments.get(env, env if env in upstreams else None)
        if target is not None and target not in upstreams:
            raise problem(f"upstream {target!r} is not defined under upstreams", env)
        if target is not None:
            routed[env] = target
    return routed
