"""The whole config file: :class:`Settings`, one field per top-level section."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from gateway.authz.policy import Policy
from gateway.config.abuse import AbuseSettings
from gateway.config.api_keys import ApiKeySettings
from gateway.config.base import (
    Int,
    Label,
    MasterKey,
    OneOf,
    Section,
    context_dir,
    decode_master_key,
)
from gateway.config.cors import CorsPolicy
from gateway.config.decision import DecisionSettings
from gateway.config.errors import problem
from gateway.config.headers import HeaderSettings
from gateway.config.identity_providers import IdentityProvider
from gateway.config.limits import Limits
from gateway.config.listeners import AdminListener, Listener
from gateway.config.loader import document_of, read_yaml, validate
from gateway.config.member_tokens import MemberTokenSettings
from gateway.config.policy import Compiled, PolicySection, default_policy
from gateway.config.rate_limits import RateLimitSettings
from gateway.config.relationships import RelationshipSettings
from gateway.config.store import StoreSettings, store_from_url
from gateway.config.tokens import TokenSettings
from gateway.config.upstreams import (
    Environment,
    Upstream,
    name_upstreams,
    route_environments,
)

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")


class Settings(Section):
    """The gateway's config file (`gateway serve --config FILE`)."""

    derived = frozenset({"source"})

    listen: Listener = Field(default_factory=Listener, description="The public listener.")
    admin: AdminListener = Field(default_factory=AdminListener, description="The admin listener.")
    workers: Int = Field(1, ge=1, le=256, description="Worker processes.")
    store: Annotated[
        StoreSettings,
        BeforeValidator(store_from_url, json_schema_input_type=str | StoreSettings),
        Label("`memory`, URL or mapping"),
    ] = Field(
        default_factory=StoreSettings,
        description="`memory`, a Redis URL (`redis://…`, `rediss://…`, `unix://…`), or the "
        "mapping below.",
    )
    master_key: MasterKey = Field(
        b"",
        description="32 bytes, base64 (`gateway master-key`). Required with Redis: API keys are "
        "stored encrypted under it. With `memory` an ephemeral key is used.",
    )
    master_key_file: (
        Annotated[Path, WithJsonSchema({"type": "string"}), Label("file path")] | None
    ) = Field(
        None, description="A file holding `master_key`, instead of it (relative to this file)."
    )
    upstreams: dict[str, Upstream] = Field(
        json_schema_extra={"minProperties": 1},
        description="The backends, by name; `live` and `sandbox` are routed to by default.",
    )
    environments: dict[Environment, str] = Field(
        default_factory=dict,
        validate_default=True,
        description="Which upstream a key environment's traffic goes to (default: the upstream "
        "of that name, if defined). A sandbox credential with no sandbox upstream gets 503; "
        "it never falls back to live.",
    )
    limits: Limits = Field(default_factory=Limits, description="Request limits.")
    headers: HeaderSettings = Field(
        default_factory=HeaderSettings, description="Identity header names and forwarding."
    )
    tokens: TokenSettings = Field(
        default_factory=TokenSettings,
        description="Signing keys and token lifetimes (the token sections of the README).",
    )
    api_keys: ApiKeySettings = Field(default_factory=ApiKeySettings, description="API keys.")
    member_tokens: MemberTokenSettings = Field(
        default_factory=MemberTokenSettings, description="Member-token claim rules."
    )
    relationships: RelationshipSettings = Field(
        default_factory=RelationshipSettings, description="Caregiver relationships."
    )
    identity_providers: tuple[IdentityProvider, ...] = Field(
        (), description="Issuers of team session tokens (every field in tokens.md)."
    )
    policy: Annotated[Policy, Compiled(PolicySection)] = Field(
        default_factory=default_policy, description="The route policy."
    )
    log_level: Annotated[str, OneOf(LOG_LEVELS)] = Field("INFO", description="Log level.")
    decision: DecisionSettings = Field(
        default_factory=DecisionSettings,
        description="Decision mode (forward auth, see operations.md).",
    )
    cors: tuple[CorsPolicy, ...] = Field(
        (), description="CORS policies for browser clients (below)."
    )
    rate_limits: RateLimitSettings = Field(
        default_factory=RateLimitSettings, description="Rate limits (below)."
    )
    abuse: AbuseSettings = Field(
        default_factory=AbuseSettings,
        description="A budget of failed authentications per client address (below).",
    )
    source: SkipJsonSchema[Path | None] = Field(None, description="The file read.")

    @property
    def admin_token(self) -> str | None:
        return self.admin.token

    @property
    def forward_authorization(self) -> bool:
        return self.headers.forward_authorization

    @property
    def trust_forwarded(self) -> bool:
        return self.headers.trust_forwarded

    @classmethod
    def prepare(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        base = context_dir(info)
        if base is not None:
            data.setdefault("upstreams", {})  # so that a missing one says what to write
        if "master_key_file" in data:
            if "master_key" in data:
                raise problem("give master_key or master_key_file, not both", "master_key_file")
            data["master_key"] = _read_master_key(data["master_key_file"], base or Path.cwd())
        return data

    @field_validator("upstreams")
    @classmethod
    def _named(cls, upstreams: dict[str, Upstream]) -> dict[str, Upstream]:
        return name_upstreams(upstreams)

    @field_validator("environments")
    @classmethod
    def _routed(cls, environments: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return route_environments(environments, info.data.get("upstreams"))

    @field_validator("identity_providers")
    @classmethod
    def _distinct_issuers(
        cls, providers: tuple[IdentityProvider, ...]
    ) -> tuple[IdentityProvider, ...]:
        if len({p.issuer for p in providers}) != len(providers):
            raise problem("two providers have the same issuer")
        return providers


def _read_master_key(value: object, base: Path) -> bytes:
    if not isinstance(value, str | Path):
        raise problem("must be a string", "master_key_file")
    path = base / value  # relative to the config file, like every path
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise problem(f"cannot read {path}", "master_key_file") from None
    return decode_master_key(text, "master_key_file")


_SETTINGS: Final = TypeAdapter(Settings)


def parse_settings(document: object, *, base_dir: Path, source: Path | None = None) -> Settings:
    """Validate a config document (or a :class:`Node` of one); :class:`ConfigError` names the
    bad field. Relative file paths are relative to ``base_dir``."""
    value, prefix = document_of(document)
    settings = validate(_SETTINGS, value, base_dir=base_dir, prefix=prefix)
    return settings if source is None else settings.model_copy(update={"source": source})


def load_settings(path: str | Path) -> Settings:
    """Read and validate a config file; :class:`ConfigError` names the bad field."""
    path = Path(path)
    return parse_settings(read_yaml(path, ""), base_dir=path.parent, source=path)
