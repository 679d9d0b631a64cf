"""The whole config file: :class:`Settings`, one field per top-level section."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

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
from gateway.config.decision import DecisionSettings, own_port, routed
from gateway.config.errors import problem
from gateway.config.headers import HeaderSettings
from gateway.config.limits import Limits
from gateway.config.listeners import AdminListener, Listener
from gateway.config.loader import document_of, read_yaml, validate
from gateway.config.rate_limits import RateLimitSettings
from gateway.config.relationships import RelationshipSettings
from gateway.config.store import StoreSettings, store_from_url
from gateway.config.tokens import TokenSettings
from gateway.config.tracing import TracingSettings
from gateway.config.upstreams import (
    Environment,
    Upstream,
    name_upstreams,
    route_environments,
)

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
S = TypeVar("S")


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
    relationships: RelationshipSettings = Field(
        default_factory=RelationshipSettings, description="Caregiver relationships."
    )
    log_level: Annotated[str, OneOf(LOG_LEVELS)] = Field(
        "INFO",
        description="Log level (applies on reload); `WARNING` and `ERROR` turn the access and "
        "audit lines off too.",
    )
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
    tracing: TracingSettings = Field(
        default_factory=TracingSettings,
        description="OpenTelemetry tracing over OTLP/HTTP (operations.md, Tracing).",
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

    @field_validator("admin")
    @classmethod
    def _admin_port(cls, admin: AdminListener, info: ValidationInfo) -> AdminListener:
        """The admin listener's port is not the public one: the public listener would bind it
        first, and the admin listener's failure would blame another program."""
        listen = info.data.get("listen")
        if listen is not None and admin.port != 0 and admin.port == listen.port:
            raise problem(f"port {admin.port} is already listen.port", "port")
        return admin

    @field_validator("decision")
    @classmethod
    def _decision_port(cls, decision: DecisionSettings, info: ValidationInfo) -> DecisionSettings:
        decision = routed(decision, info.data.get("environments"))
        return own_port(decision, info.data.get("listen"), info.data.get("admin"))

    @field_validator("environments")
    @classmethod
    def _routed(cls, environments: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        return route_environments(environments, info.data.get("upstreams"))

    def section(self, name: str, model: type[S]) -> S:
        """The section ``name`` a credential kind declared (its settings live in its module,
        :mod:`gateway.authn`), typed as that kind's model."""
        value = getattr(self, name)
        if not isinstance(value, model):
            raise TypeError(f"settings.{name} is {type(value).__name__}, not {model.__name__}")
        return value

    @classmethod
    def extended(cls, sections: Mapping[str, tuple[Any, Any]]) -> type[Settings]:
        """This model with more top-level sections (``name: (type, Field(...))``): the
        sections the credential kinds declare, added by :mod:`gateway.settings`."""
        model: type[Settings] = create_model(  # type: ignore[call-overload]
            "Settings", __base__=cls, __module__=cls.__module__, **sections
        )
        model.__doc__ = cls.__doc__
        return model


def _read_master_key(value: object, base: Path) -> bytes:
    if not isinstance(value, str | Path):
        raise problem("must be a string", "master_key_file")
    path = base / value  # relative to the config file, like every path
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise problem(f"cannot read {path}", "master_key_file") from None
    return decode_master_key(text, "master_key_file")


@functools.cache
def _adapter(model: type[Settings]) -> TypeAdapter[Settings]:
    return TypeAdapter(model)


def parse_settings(
    document: object,
    *,
    model: type[Settings],
    base_dir: Path,
    source: Path | None = None,
    context: Mapping[str, object] | None = None,
) -> Settings:
    """Validate a config document (or a :class:`Node` of one) as ``model`` (the gateway's is
    :data:`gateway.settings.MODEL`); :class:`ConfigError` names the bad field. Relative file
    paths are relative to ``base_dir``."""
    value, prefix = document_of(document)
    settings = validate(_adapter(model), value, base_dir=base_dir, prefix=prefix, context=context)
    return settings if source is None else settings.model_copy(update={"source": source})


def load_settings(
    path: str | Path, *, model: type[Settings], context: Mapping[str, object] | None = None
) -> Settings:
    """Read and validate a config file as ``model``; :class:`ConfigError` names the bad field."""
    path = Path(path)
    return parse_settings(
        read_yaml(path, ""), model=model, base_dir=path.parent, source=path, context=context
    )
