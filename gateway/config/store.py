"""``store``: where keys, tokens, relationships and rate-limit buckets live.

Three Redis topologies, one of them per file: a standalone server or managed endpoint (``url``),
a Sentinel-managed master (``sentinel``) and a Redis Cluster (``cluster``). Credentials and TLS
are shared by the three; the gateway connects through redis-py's own clients for each.
"""

from __future__ import annotations

import re
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, PlainValidator, WithJsonSchema, model_validator

from gateway.config.base import Bool, Duration, FilePath, Int, Label, Section
from gateway.config.durations import format_duration
from gateway.config.errors import problem, type_name

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_PREFIX: Final = re.compile(r"^[^{}]*(\{[^{}]+\}[^{}]*)?$")
_HOST_PATTERN: Final = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):\d{1,5}$"
_HOST_PORT: Final = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.\-]+)):(?P<port>\d{1,5})$"
)


def check_store_url(url: str) -> str:
    if url != "memory" and not url.startswith(REDIS_SCHEMES):
        raise problem("must be 'memory' or a redis://, rediss:// or unix:// URL")
    return url


def store_from_url(value: object) -> object:
    """``store: redis://…`` is short for ``store: {url: redis://…}``."""
    if isinstance(value, str):
        return {"url": check_store_url(value)}
    return value


def _host_port(value: object) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) == 2:
        value = _address(str(value[0]), int(value[1]))  # settings built in code
    if not isinstance(value, str):
        raise problem(f"must be a string host:port, got {type_name(value)}")
    match = _HOST_PORT.match(value.strip())
    port = int(match.group("port")) if match else 0
    if match is None or not 0 < port <= 65535:
        raise problem(f"{value!r} is not host:port (such as redis-0.redis:26379 or [::1]:7000)")
    return match.group("v6") or match.group("host"), port


HostPort = Annotated[
    tuple[str, int],
    PlainValidator(_host_port, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "pattern": _HOST_PATTERN}),
    Label("host:port"),
]
"""``host:port`` (``[v6]:port`` for an IPv6 address), parsed into a pair."""


def _not_empty(value: str) -> str:
    if not value.strip():
        raise problem("must not be empty")
    return value


def _password(value: str) -> str:
    if not value:
        # Redis refuses an empty password as it refuses a wrong one: every request would be
        # 503 once serving, where this names the field before a deploy.
        raise problem("is empty (an ${ENV} placeholder whose variable is set but empty?)")
    return value


Password = Annotated[str, AfterValidator(_password)]


def _check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise problem("'{' and '}' only as one whole hash tag, such as {gw}:")
    return prefix


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class StoreTLS(Section):
    """TLS toward Redis: the data nodes and, with Sentinel, the sentinels too."""

    ca_file: FilePath | None = Field(
        None,
        description="CA bundle Redis's certificate is verified against (default: the system "
        "store).",
    )
    cert_file: FilePath | None = Field(
        None, description="Client certificate, when Redis asks for one (`tls-auth-clients`)."
    )
    key_file: FilePath | None = Field(None, description="Key of `cert_file`.")
    check_hostname: Bool = Field(
        True, description="Verify that the certificate names the host connected to."
    )

    @model_validator(mode="after")
    def _pair(self) -> StoreTLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise problem("cert_file and key_file must be given together")
        return self


class SentinelSettings(Section):
    """A master found (and failed over) by Redis Sentinel."""

    master: Annotated[str, AfterValidator(_not_empty)] = Field(
        description="The name the sentinels monitor the master under (`sentinel monitor NAME`)."
    )
    nodes: tuple[HostPort, ...] = Field(
        min_length=1,
        description="The sentinels, `host:port` (three or more, so that a majority survives "
        "one loss).",
    )
    username: str | None = Field(
        None, description="ACL user of the sentinels themselves, if they require one."
    )
    password: Password | None = Field(
        None, description="Password of the sentinels themselves (their `requirepass`), if any."
    )
    db: Int = Field(0, ge=0, le=15, description="Database number on the master.")


class ClusterSettings(Section):
    """A Redis Cluster, found from seed nodes."""

    nodes: tuple[HostPort, ...] = Field(
        min_length=1,
        description="Seed nodes, `host:port`; the client discovers the others and the slots.",
    )


class StoreSettings(Section):
    """The shared store. `memory` for one process; Redis (one of `url`, `sentinel`,
    `cluster`) for any number of replicas."""

    url: Annotated[str, AfterValidator(check_store_url)] = Field(
        "memory",
        description="`memory`, or a `redis://`, `rediss://` (TLS) or `unix://` URL of a "
        "standalone Redis or a managed endpoint.",
    )
    sentinel: SentinelSettings | None = Field(
        None, description="A Sentinel-managed master, instead of `url`."
    )
    cluster: ClusterSettings | None = Field(None, description="A Redis Cluster, instead of `url`.")
    username: str | None = Field(
        None,
        description="ACL user on the Redis data nodes (with `url`, also possible in the URL).",
    )
    password: Password | None = Field(
        None,
        description="Password on the Redis data nodes (`requirepass`, or the ACL user's); "
        "use an `${ENV}` placeholder.",
    )
    tls: StoreTLS | None = Field(
        None,
        description="Connect with TLS (`{}` for the defaults); with `url`, the `rediss://` "
        "scheme decides and this section adds the files.",
    )
    timeout: Duration = Field(
        0.5,
        ge=0.01,
        le=30,
        description="Bounds every Redis operation on the socket; in a burst a request waits "
        "for one of the 64 pooled connections for up to 4 times `timeout` (at least 2 s). "
        "Mobile-token commands on a standalone Redis share one pipelined connection, where each "
        "must be answered within `timeout`. Past any bound: 503 `service_unavailable`.",
    )
    prefix: Annotated[str, AfterValidator(_check_prefix)] = Field(
        "gw:",
        description="Prefix of every key the gateway writes. A hash tag in it (`{gw}:`) pins "
        "every key to one Cluster slot.",
    )
    min_replicas_ack: Int | None = Field(
        None,
        ge=0,
        le=16,
        description="Replicas that must hold a mobile token's consumption (and every API-key, "
        "relationship and master-key write) before the gateway counts it (`WAIT`). Default: 1 "
        "with `sentinel` or `cluster`, 0 with `url`. Not met within `replica_ack_timeout`: "
        "503, and the mobile token stays usable.",
    )
    replica_ack_timeout: Duration = Field(
        0.2,
        ge=0.001,
        le=5,
        description="How long a write waits for `min_replicas_ack` replicas (less than `timeout`).",
    )

    @model_validator(mode="after")
    def _one_topology(self) -> StoreSettings:
        given = [
            name
            for name, present in (
                ("url", "url" in self.model_fields_set and self.url != "memory"),
                ("sentinel", self.sentinel is not None),
                ("cluster", self.cluster is not None),
            )
            if present
        ]
        if len(given) > 1:
            raise problem(f"give one of url, sentinel or cluster, not {' and '.join(given)}")
        if not self.is_redis:
            for name in ("username", "password", "tls", "min_replicas_ack"):
                if getattr(self, name) is not None:
                    raise problem("only with a Redis store (url, sentinel or cluster)", name)
        if (
            self.tls is not None
            and self.topology == "standalone"
            and not self.url.startswith("rediss://")
        ):
            raise problem("TLS with `url` needs the rediss:// scheme", "tls")
        if self.replica_ack_timeout >= self.timeout:
            raise problem(
                f"must be less than timeout ({format_duration(self.timeout)}): a write waits "
                "for the replicas within one operation",
                "replica_ack_timeout",
            )
        return self

    @property
    def topology(self) -> str:
        """``memory``, ``standalone``, ``sentinel`` or ``cluster``."""
        if self.sentinel is not None:
            return "sentinel"
        if self.cluster is not None:
            return "cluster"
        return "standalone" if self.url.startswith(REDIS_SCHEMES) else "memory"

    @property
    def is_redis(self) -> bool:
        return self.topology != "memory"

    @property
    def replicas_ack(self) -> int:
        """``min_replicas_ack``, its default resolved: replicas exist with Sentinel and Cluster."""
        if self.min_replicas_ack is not None:
            return self.min_replicas_ack
        return 1 if self.topology in ("sentinel", "cluster") else 0

    def describe(self) -> str:
        """The store in words, without a credential: for check-config and logs."""
        if self.sentinel is not None:
            nodes = ", ".join(_address(h, p) for h, p in self.sentinel.nodes)
            return f"redis sentinel {self.sentinel.master} via {nodes}"
        if self.cluster is not None:
            return "redis cluster via " + ", ".join(_address(h, p) for h, p in self.cluster.nodes)
        if self.is_redis:
            url = urlsplit(self.url)
            # SECURITY: the scheme, address and path only: a password can be in the userinfo or
            # in the query (`?password=`), and neither is printed. An '@' the parser did not
            # take as the userinfo's end (a password with an unencoded '/', '?' or '#') leaves
            # the address unknown: not shown, rather than guessed around the password.
            if "@" in self.url and "@" not in url.netloc:
                return f"{url.scheme}:// (address not shown: the URL has an '@' past its host)"
            return f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path}"
        return "memory"
