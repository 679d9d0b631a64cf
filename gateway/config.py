"""The gateway's settings: one YAML file parsed once into frozen, typed objects.

Every error names the field (``upstreams.live.url: not a URL``); unknown fields are errors, so a
typo never silently leaves a default in force. ``${ENV}`` and ``${ENV:-default}`` placeholders
are expanded in string values, for secrets. Relative file paths are relative to the config file.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from gateway.authz.policy import METHODS, Policy, parse_policy
from gateway.confignode import ConfigError, Node

DEFAULTS_DIR = Path(__file__).parent / "defaults"
DEFAULT_POLICY = DEFAULTS_DIR / "policy.yaml"
ENVIRONMENTS = ("live", "sandbox")


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: URL
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    max_connections: int = 256
    max_in_flight: int = 1024
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_token_bytes: int = 8 * 1024
    header_timeout: float = 15.0
    body_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class HeaderNames:
    account: str = "X-Auth-Account"
    user: str = "X-Auth-User"
    actor: str = "X-Auth-Actor"
    credential: str = "X-Auth-Credential"
    environment: str = "X-Auth-Environment"
    scopes: str = "X-Auth-Scopes"
    key_id: str = "X-Auth-Key-Id"
    request_id: str = "X-Request-Id"
    assertion: str = "X-Auth-Assertion"

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


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    path: Path
    algorithm: str


@dataclass(frozen=True, slots=True)
class TokenSettings:
    issuer: str = "health-gateway"
    audience: str = "health-api"
    signing_keys: tuple[SigningKey, ...] = ()
    active_kid: str | None = None
    user_token_ttl: float = 3600.0
    mobile_token_ttl: float = 300.0
    sdk_session_ttl: float = 86400.0
    leeway: float = 30.0
    membership_cache_ttl: float = 60.0
    verify_cache_size: int = 100_000
    assertion: bool = False
    assertion_ttl: float = 60.0


@dataclass(frozen=True, slots=True)
class ApiKeySettings:
    lifetime: float = 90 * 86400.0
    cache_ttl: float = 1.0
    stale_window: float = 0.0


@dataclass(frozen=True, slots=True)
class MemberTokenSettings:
    max_lifetime: float = 86400.0
    leeway: float = 30.0


@dataclass(frozen=True, slots=True)
class RelationshipSettings:
    provider: str = "store"
    url_template: str | None = None
    positive_ttl: float = 1.0
    negative_ttl: float = 1.0
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    name: str
    issuer: str
    audience: str
    jwks_url: URL
    algorithms: tuple[str, ...] = ("RS256",)
    account_claim: str = "account"
    actor_claim: str = "sub"
    refresh_interval: float = 60.0
    unknown_kid_refetch_interval: float = 10.0
    leeway: float = 30.0
    environment: str = "live"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """CORS for browser clients, for the route groups named (all groups when empty)."""

    origins: frozenset[str]
    methods: tuple[str, ...] = ("GET",)
    headers: tuple[str, ...] = ("Authorization", "Content-Type")
    expose_headers: tuple[str, ...] = ("X-Request-Id",)
    max_age: int = 600
    allow_credentials: bool = False
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RateLimit:
    group: str
    per: str
    limit: int
    period: float


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    rules: tuple[RateLimit, ...] = ()
    on_store_error: str = "deny"


@dataclass(frozen=True, slots=True)
class AbuseSettings:
    """The budget of failed authentications per client address (:mod:`gateway.abuse`)."""

    enabled: bool = False
    failures_per_minute: int = 60
    burst: int = 30
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    ipv6_prefix: int = 64
    on_store_error: str = "deny"


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    enabled: bool = False
    prefix: str = "/decisions"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = "memory"
    timeout: float = 0.5
    prefix: str = "gw:"

    @property
    def is_redis(self) -> bool:
        return self.url.startswith(("redis://", "rediss://", "unix://"))


@dataclass(frozen=True, slots=True)
class Settings:
    listen: Listener = Listener("0.0.0.0", 8080)  # noqa: S104 - a gateway listens publicly
    admin: Listener = Listener("127.0.0.1", 9090)
    admin_token: str | None = None
    workers: int = 1
    store: StoreSettings = StoreSettings()
    master_key: bytes = b""
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    environments: dict[str, str] = field(default_factory=dict)
    limits: Limits = Limits()
    headers: HeaderNames = HeaderNames()
    forward_authorization: bool = False
    trust_forwarded: bool = False
    tokens: TokenSettings = TokenSettings()
    api_keys: ApiKeySettings = ApiKeySettings()
    member_tokens: MemberTokenSettings = MemberTokenSettings()
    relationships: RelationshipSettings = RelationshipSettings()
    identity_providers: tuple[IdentityProvider, ...] = ()
    decision: DecisionSettings = DecisionSettings()
    cors: tuple[CorsPolicy, ...] = ()
    rate_limits: RateLimitSettings = RateLimitSettings()
    abuse: AbuseSettings = AbuseSettings()
    policy: Policy = field(default_factory=lambda: load_policy(DEFAULT_POLICY))
    log_level: str = "INFO"
    source: Path | None = None


def load_policy(path: Path) -> Policy:
    return parse_policy(Node(_read_yaml(path, "policy.file"), ""))


def _read_yaml(path: Path, field_path: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(field_path, f"cannot read {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(field_path, f"{path} is not valid YAML{where}") from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a config file; :class:`ConfigError` names the bad field."""
    path = Path(path)
    document = _read_yaml(path, "")
    if document is None:
        document = {}
    return parse_settings(Node(document), base_dir=path.parent, source=path)


def parse_settings(root: Node, *, base_dir: Path, source: Path | None = None) -> Settings:
    root.fields(
        "listen",
        "admin",
        "workers",
        "store",
        "master_key",
        "master_key_file",
        "upstreams",
        "environments",
        "limits",
        "headers",
        "tokens",
        "api_keys",
        "member_tokens",
        "relationships",
        "identity_providers",
        "policy",
        "log_level",
        "decision",
        "cors",
        "rate_limits",
        "abuse",
    )

    def file_path(node: Node) -> Path | None:
        value = node.str(None)
        if value is None:
            return None
        resolved = (base_dir / value) if not os.path.isabs(value) else Path(value)
        if not resolved.is_file():
            raise node.error(f"file {value} does not exist")
        return resolved

    def listener(node: Node, host: str, port: int, *extra: str) -> Listener:
        node.fields("host", "port", "tls_cert", "tls_key", *extra)
        cert, key = file_path(node["tls_cert"]), file_path(node["tls_key"])
        if (cert is None) != (key is None):
            raise node.error("tls_cert and tls_key must be given together")
        return Listener(
            node["host"].str(host), node["port"].int(port, minimum=0, maximum=65535), cert, key
        )

    upstreams: dict[str, Upstream] = {}
    for name, node in root["upstreams"].items():
        node.fields(
            "url",
            "connect_timeout",
            "read_timeout",
            "max_connections",
            "max_in_flight",
            "ca_file",
            "client_cert",
            "client_key",
        )
        url = node["url"].url()
        if url.path not in ("", "/") or url.query_string:
            raise node["url"].error("must be scheme://host[:port] without a path or query")
        upstreams[name] = Upstream(
            name=name,
            url=url.with_path(""),
            connect_timeout=node["connect_timeout"].duration(2.0, minimum=0.001, maximum=300),
            read_timeout=node["read_timeout"].duration(30.0, minimum=0.001, maximum=3600),
            max_connections=node["max_connections"].int(256, minimum=1, maximum=100_000),
            max_in_flight=node["max_in_flight"].int(1024, minimum=1, maximum=1_000_000),
            ca_file=file_path(node["ca_file"]),
            client_cert=file_path(node["client_cert"]),
            client_key=file_path(node["client_key"]),
        )
    if not upstreams:
        raise root["upstreams"].error("at least one upstream is required (e.g. upstreams.live.url)")

    env_node = root["environments"].fields(*ENVIRONMENTS)
    environments: dict[str, str] = {}
    for env in ENVIRONMENTS:
        # SECURITY: a sandbox credential never falls back to the live upstream; routing sandbox
        # traffic to `live` must be written down explicitly.
        target = env_node[env].str(env if env in upstreams else None)
        if target is not None and target not in upstreams:
            raise env_node[env].error(f"upstream {target!r} is not defined under upstreams")
        if target is not None:
            environments[env] = target

    store_node = root["store"]
    if isinstance(store_node.value, str) or not store_node.present:
        store = StoreSettings(url=store_node.str("memory"))
    else:
        store_node.fields("url", "timeout", "prefix")
        store = StoreSettings(
            url=store_node["url"].str("memory"),
            timeout=store_node["timeout"].duration(0.5, minimum=0.01, maximum=30),
            prefix=store_node["prefix"].str("gw:"),
        )
    if store.url != "memory" and not store.is_redis:
        raise Node(
            store.url, "store.url" if not isinstance(store_node.value, str) else "store"
        ).error("must be 'memory' or a redis://, rediss:// or unix:// URL")

    master_key = _master_key(root, base_dir)

    lim = root["limits"].fields(
        "max_body_bytes", "max_header_bytes", "max_token_bytes", "header_timeout", "body_timeout"
    )
    limits = Limits(
        max_body_bytes=lim["max_body_bytes"].int(Limits().max_body_bytes, minimum=0),
        max_header_bytes=lim["max_header_bytes"].int(
            Limits().max_header_bytes, minimum=1024, maximum=1024 * 1024
        ),
        max_token_bytes=lim["max_token_bytes"].int(
            Limits().max_token_bytes, minimum=256, maximum=64 * 1024
        ),
        header_timeout=lim["header_timeout"].duration(15.0, minimum=0.1, maximum=3600),
        body_timeout=lim["body_timeout"].duration(30.0, minimum=0.1, maximum=3600),
    )

    hdr = root["headers"].fields(
        *HeaderNames.__dataclass_fields__, "forward_authorization", "trust_forwarded"
    )
    names = {k: hdr[k].str(getattr(HeaderNames(), k)) for k in HeaderNames.__dataclass_fields__}
    for key, value in names.items():
        if not value or not all(c.isalnum() or c == "-" for c in value):
            raise hdr[key].error(f"{value!r} is not a valid header name (letters, digits, '-')")
    if len({v.lower() for v in names.values()}) != len(names):
        raise hdr.error("header names must be distinct")
    headers = HeaderNames(**names)

    tokens = _tokens(root["tokens"], file_path)
    ak = root["api_keys"].fields("lifetime", "cache_ttl", "stale_window")
    api_keys = ApiKeySettings(
        lifetime=ak["lifetime"].duration(
            ApiKeySettings().lifetime, minimum=60, maximum=ApiKeySettings().lifetime
        ),
        cache_ttl=ak["cache_ttl"].duration(1.0, minimum=0, maximum=1.0),
        stale_window=ak["stale_window"].duration(0.0, minimum=0, maximum=3600),
    )
    mt = root["member_tokens"].fields("max_lifetime", "leeway")
    member_tokens = MemberTokenSettings(
        max_lifetime=mt["max_lifetime"].duration(86400.0, minimum=1, maximum=86400),
        leeway=mt["leeway"].duration(30.0, minimum=0, maximum=300),
    )
    rel = root["relationships"].fields(
        "provider", "url_template", "positive_ttl", "negative_ttl", "timeout"
    )
    provider = rel["provider"].str("store", choices=("store", "http"))
    url_template = rel["url_template"].str(None)
    if provider == "http":
        if url_template is None:
            raise rel["url_template"].error("is required when provider is http")
        if "{subject}" not in url_template or "{actor}" not in url_template:
            raise rel["url_template"].error("must contain {subject} and {actor}")
        rel["url_template"].url()
    relationships = RelationshipSettings(
        provider=provider,
        url_template=url_template,
        # With the store provider a revocation must reach every replica within one second.
        positive_ttl=rel["positive_ttl"].duration(
            1.0, minimum=0, maximum=1.0 if provider == "store" else 3600
        ),
        negative_ttl=rel["negative_ttl"].duration(1.0, minimum=0, maximum=3600),
        timeout=rel["timeout"].duration(2.0, minimum=0.01, maximum=60),
    )

    idps: list[IdentityProvider] = []
    for node in root["identity_providers"].list():
        node.fields(
            "name",
            "issuer",
            "audience",
            "jwks_url",
            "algorithms",
            "account_claim",
            "actor_claim",
            "refresh_interval",
            "unknown_kid_refetch_interval",
            "leeway",
            "environment",
        )
        algs = tuple(
            a.str(choices=("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"))
            for a in node["algorithms"].list()
        ) or ("RS256",)
        idps.append(
            IdentityProvider(
                name=node["name"].str(),
                issuer=node["issuer"].str(),
                audience=node["audience"].str(),
                jwks_url=node["jwks_url"].url(),
                algorithms=algs,
                account_claim=node["account_claim"].str("account"),
                actor_claim=node["actor_claim"].str("sub"),
                refresh_interval=node["refresh_interval"].duration(60.0, minimum=1, maximum=86400),
                # SECURITY: at least a second apart, so made-up kids cannot flood the provider.
                unknown_kid_refetch_interval=node["unknown_kid_refetch_interval"].duration(
                    10.0, minimum=1, maximum=3600
                ),
                leeway=node["leeway"].duration(30.0, minimum=0, maximum=300),
                environment=node["environment"].str("live", choices=ENVIRONMENTS),
            )
        )
    if len({i.issuer for i in idps}) != len(idps):
        raise root["identity_providers"].error("two providers have the same issuer")

    pol = root["policy"]
    if pol.present and isinstance(pol.value, dict) and "routes" in pol.value:
        pol.fields("routes")
        policy = parse_policy(pol)
    else:
        pol.fields("file")
        policy_file = file_path(pol["file"]) or DEFAULT_POLICY
        policy = load_policy(policy_file)

    dec = root["decision"].fields("enabled", "prefix")
    prefix = dec["prefix"].str("/decisions")
    if not prefix.startswith("/") or prefix.endswith("/") or len(prefix) < 2:
        raise dec["prefix"].error("must start with '/' and not end with '/', e.g. /decisions")
    decision = DecisionSettings(enabled=dec["enabled"].bool(False), prefix=prefix)
    cors = _cors(root["cors"])
    rate_limits = _rate_limits(root["rate_limits"])
    abuse = _abuse(root["abuse"])

    admin = listener(root["admin"], "127.0.0.1", 9090, "token")
    return Settings(
        listen=listener(root["listen"], "0.0.0.0", 8080),  # noqa: S104
        admin=admin,
        admin_token=_admin_token(root["admin"]["token"]),
        workers=root["workers"].int(1, minimum=1, maximum=256),
        store=store,
        master_key=master_key,
        upstreams=upstreams,
        environments=environments,
        limits=limits,
        headers=headers,
        forward_authorization=hdr["forward_authorization"].bool(False),
        trust_forwarded=hdr["trust_forwarded"].bool(False),
        tokens=tokens,
        api_keys=api_keys,
        member_tokens=member_tokens,
        relationships=relationships,
        identity_providers=tuple(idps),
        policy=policy,
        decision=decision,
        cors=cors,
        rate_limits=rate_limits,
        abuse=abuse,
        log_level=root["log_level"].str("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        source=source,
    )


def _admin_token(node: Node) -> str | None:
    token: str | None = node.str(None)
    if token is not None and len(token) < 16:
        raise node.error("must be at least 16 characters")
    return token


def _master_key(root: Node, base_dir: Path) -> bytes:
    key_node, file_node = root["master_key"], root["master_key_file"]
    if key_node.present and file_node.present:
        raise file_node.error("give master_key or master_key_file, not both")
    if file_node.present:
        path = base_dir / file_node.str()  # relative to the config file, like every path
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            raise file_node.error(f"cannot read {path}") from None
        return _decode_master(text, file_node)
    if key_node.present:
        return _decode_master(key_node.str(), key_node)
    return b""


def _decode_master(text: str, node: Node) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise node.error("must be 32 bytes, base64-encoded (gateway master-key)") from None
    if len(raw) != 32:
        raise node.error(f"must decode to 32 bytes, got {len(raw)}")
    return raw


def _tokens(node: Node, file_path: Any) -> TokenSettings:
    node.fields(
        "issuer",
        "audience",
        "signing_keys",
        "active_kid",
        "user_token_ttl",
        "mobile_token_ttl",
        "sdk_session_ttl",
        "leeway",
        "membership_cache_ttl",
        "verify_cache_size",
        "assertion",
        "assertion_ttl",
    )
    keys: list[SigningKey] = []
    for key_node in node["signing_keys"].list():
        key_node.fields("kid", "file", "algorithm")
        kid = key_node["kid"].str()
        if not kid or kid.startswith("key_") or len(kid) > 64:
            raise key_node["kid"].error(
                "must be 1-64 characters and not start with 'key_' (reserved for API key ids)"
            )
        path = file_path(key_node["file"])
        if path is None:
            raise key_node["file"].error("is required")
        keys.append(
            SigningKey(kid, path, key_node["algorithm"].str("RS256", choices=("RS256", "ES256")))
        )
    if len({k.kid for k in keys}) != len(keys):
        raise node["signing_keys"].error("kids must be distinct")
    active = node["active_kid"].str(keys[0].kid if keys else None)
    if active is not None and active not in {k.kid for k in keys}:
        raise node["active_kid"].error(f"{active!r} is not one of the signing_keys")
    return TokenSettings(
        issuer=node["issuer"].str("health-gateway"),
        audience=node["audience"].str("health-api"),
        signing_keys=tuple(keys),
        active_kid=active,
        user_token_ttl=node["user_token_ttl"].duration(3600.0, minimum=10, maximum=86400),
        mobile_token_ttl=node["mobile_token_ttl"].duration(300.0, minimum=10, maximum=3600),
        sdk_session_ttl=node["sdk_session_ttl"].duration(86400.0, minimum=60, maximum=30 * 86400),
        leeway=node["leeway"].duration(30.0, minimum=0, maximum=300),
        membership_cache_ttl=node["membership_cache_ttl"].duration(60.0, minimum=0, maximum=3600),
        verify_cache_size=node["verify_cache_size"].int(100_000, minimum=0, maximum=10_000_000),
        assertion=node["assertion"].bool(False),
        assertion_ttl=node["assertion_ttl"].duration(60.0, minimum=5, maximum=3600),
    )


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$")
RATE_LIMIT_PER = ("credential", "account")


def _cors(node: Node) -> tuple[CorsPolicy, ...]:
    policies = []
    for entry in node.list():
        entry.fields(
            "origins",
            "methods",
            "headers",
            "expose_headers",
            "max_age",
            "allow_credentials",
            "groups",
        )
        origins = []
        for origin_node in entry["origins"].list(allow_empty=False):
            origin = origin_node.str()
            if origin != "*" and not _ORIGIN.match(origin):
                raise origin_node.error(f"{origin!r} is not an origin (scheme://host[:port])")
            origins.append(origin)
        credentials = entry["allow_credentials"].bool(False)
        if credentials and "*" in origins:
            # SECURITY: a wildcard origin with credentials would let any site act as the user.
            raise entry["origins"].error("'*' cannot be combined with allow_credentials")
        methods = tuple(m.str(choices=METHODS) for m in entry["methods"].list()) or ("GET",)
        policies.append(
            CorsPolicy(
                origins=frozenset(origins),
                methods=methods,
                headers=tuple(h.str() for h in entry["headers"].list())
                or ("Authorization", "Content-Type"),
                expose_headers=tuple(h.str() for h in entry["expose_headers"].list())
                or ("X-Request-Id",),
                max_age=entry["max_age"].int(600, minimum=0, maximum=86400),
                allow_credentials=credentials,
                groups=frozenset(g.str() for g in entry["groups"].list()),
            )
        )
    return tuple(policies)


def _rate_limits(node: Node) -> RateLimitSettings:
    node.fields("rules", "on_store_error")
    rules = []
    for rule in node["rules"].list():
        rule.fields("group", "per", "limit", "period")
        rules.append(
            RateLimit(
                group=rule["group"].str("default"),
                per=rule["per"].str("credential", choices=RATE_LIMIT_PER),
                limit=rule["limit"].int(minimum=1, maximum=10_000_000),
                period=rule["period"].duration(minimum=0.001, maximum=86400),
            )
        )
    return RateLimitSettings(
        rules=tuple(rules),
        on_store_error=node["on_store_error"].str("deny", choices=("deny", "allow")),
    )


def _abuse(node: Node) -> AbuseSettings:
    node.fields(
        "enabled",
        "failures_per_minute",
        "burst",
        "trusted_proxies",
        "ipv6_prefix",
        "on_store_error",
    )
    proxies: list[IPv4Network | IPv6Network] = []
    for entry in node["trusted_proxies"].list():
        text = entry.str()
        try:
            network = ip_network(text, strict=True)
        except ValueError as exc:
            raise entry.error(f"{text!r} is not a network such as 10.0.0.0/8 ({exc})") from None
        if network.prefixlen == 0:
            # SECURITY: trusting every address would let any client name its own address.
            raise entry.error("trusting every address lets any client choose its X-Forwarded-For")
        proxies.append(network)
    return AbuseSettings(
        enabled=node["enabled"].bool(False),
        failures_per_minute=node["failures_per_minute"].int(60, minimum=1, maximum=1_000_000),
        burst=node["burst"].int(30, minimum=1, maximum=1_000_000),
        trusted_proxies=tuple(proxies),
        ipv6_prefix=node["ipv6_prefix"].int(64, minimum=32, maximum=128),
        on_store_error=node["on_store_error"].str("deny", choices=("deny", "allow")),
    )
