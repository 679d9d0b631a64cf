"""What every config section shares: the :class:`Section` base model and the field types.

A section is a frozen pydantic model that refuses unknown fields; each field is declared once,
with its type, its default and its description. The field types here parse what the YAML file
holds (``30s``, ``5m``, ``"8080"`` from an ``${ENV}``) into what the code reads (seconds, ints,
yarl URLs, paths relative to the config file) and fail with the wording
:class:`~gateway.config.loader` turns into ``field.path: problem``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema
from yarl import URL

from gateway.config.durations import Seconds
from gateway.config.errors import problem, type_name

# The HTTP methods a route rule or a CORS policy may name.
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def context_dir(info: ValidationInfo) -> Path | None:
    """The config file's directory while a file is loaded; None for settings built in code."""
    context = info.context
    if isinstance(context, dict):
        base = context.get("base_dir")
        if isinstance(base, Path):
            return base
    return None


class Section(BaseModel):
    """A frozen config section: unknown fields are errors (a typo never leaves a default in
    force), a field given as ``~`` (null) keeps its default."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    # Fields the loader fills in (never read from the file): not in the schema, refused there.
    derived: ClassVar[frozenset[str]] = frozenset()
    # List fields where an empty list keeps the default, as leaving the field out does.
    empty_is_default: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _read_mapping(cls, data: object, info: ValidationInfo) -> object:
        if isinstance(data, BaseModel):
            return data
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise problem(f"must be a mapping, got {type_name(data)}")
        from_file = context_dir(info) is not None
        accepted = cls.file_fields()
        for key in data:
            if not isinstance(key, str):
                raise problem(f"keys must be strings, got {key!r}")
            if from_file and key not in accepted:
                raise problem(f"unknown field (expected one of: {', '.join(accepted)})", key)
        kept = {
            key: value
            for key, value in data.items()
            if value is not None and not (value == [] and key in cls.empty_is_default)
        }
        return cls.prepare(kept, info)

    @classmethod
    def prepare(cls, data: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """A hook for sections whose file shape differs a little from their fields."""
        return data

    @classmethod
    def file_fields(cls) -> tuple[str, ...]:
        """The keys the file may use, in declaration order."""
        return tuple(
            field.alias or name
            for name, field in cls.model_fields.items()
            if name not in cls.derived
        )


# -- scalars --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Label:
    """What a field type is called in docs/configuration.md's table (pydantic ignores it)."""

    text: str


def _bool(value: object) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # from an ${ENV} placeholder
    if not isinstance(value, bool):
        raise problem(f"must be true or false, got {type_name(value)}")
    return value


def _int(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)  # from an ${ENV} placeholder
    if isinstance(value, bool) or not isinstance(value, int):
        raise problem(f"must be an integer, got {type_name(value)}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise problem(f"must be a string, got {type_name(value)}")
    return value


Bool = Annotated[bool, PlainValidator(_bool, json_schema_input_type=bool), Label("boolean")]
"""``true`` or ``false`` (also as the strings an ``${ENV}`` expands to)."""

Int = Annotated[int, BeforeValidator(_int), Label("integer")]
"""An integer (also as the digits an ``${ENV}`` expands to); bounds go on the field."""


_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds, from a number or a string such as ``500ms``, ``30s``, ``5m``, ``24h``, ``90d``
    (a :class:`~gateway.config.durations.Seconds`, so that a bound's error shows units)."""
    if isinstance(value, bool):
        raise problem("must be a duration such as 30s, 5m, 24h")
    if isinstance(value, int | float):
        return Seconds(value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return Seconds(float(match.group(1)) * _UNIT[match.group(2)])
    raise problem(f"must be a duration such as 30s, 5m, 24h, got {value!r}")


@dataclass(frozen=True, slots=True)
class _DurationSchema:
    """In the JSON Schema a duration is a number of seconds (with the field's bounds) or a
    string with a unit."""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [handler(schema), {"type": "string", "pattern": _DURATION.pattern}]}


Duration = Annotated[float, BeforeValidator(parse_duration), _DurationSchema(), Label("duration")]
"""Seconds; bounds go on the field (``Field(30.0, ge=0.001, le=3600)``)."""


@dataclass(frozen=True, slots=True)
class OneOf:
    """A string from a closed list, named in the error: ``'ldap' is not one of store, http``."""

    choices: tuple[str, ...]

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "enum": list(self.choices)}

    def check(self, value: str) -> str:
        if value not in self.choices:
            raise problem(
                f"{value!r} is not one of {', '.join(self.choices)}", choices=self.choices
            )
        return value


def _header_name(value: str) -> str:
    if not value or not all(c.isalnum() or c == "-" for c in value):
        raise problem(f"{value!r} is not a valid header name (letters, digits, '-')")
    return value


HeaderName = Annotated[
    str,
    PlainValidator(_str, json_schema_input_type=str),
    AfterValidator(_header_name),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z0-9-]+$"}),
    Label("header name"),
]
"""An HTTP header name: letters, digits and ``-``."""


def _http_url(value: object) -> URL:
    if isinstance(value, URL):
        url = value
    else:
        try:
            url = URL(_str(value))
        except (ValueError, TypeError):
            raise problem("not a URL") from None
    if url.scheme and url.scheme not in ("http", "https") and url.host:
        # A URL, of another scheme: said so (the scheme names no secret; the rest is not quoted).
        raise problem(f"the scheme must be http or https, not {url.scheme[:16]}")
    if url.scheme not in ("http", "https") or not url.host:
        raise problem("not a URL (expected http or https://host…)")
    return url


def check_url(value: str) -> str:
    """A string that must read as an http(s) URL (a template, kept as text)."""
    _http_url(value)
    return value


HttpUrl = Annotated[
    URL,
    PlainValidator(_http_url, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https?://"}),
    Label("http(s) URL"),
]
"""An ``http://`` or ``https://`` URL with a host, as a :class:`yarl.URL`."""


def _file(value: object, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        value = str(value)
    text = _str(value)
    base = context_dir(info)
    if base is None:
        return Path(text)  # settings built in code name their files as they are
    resolved = Path(text) if Path(text).is_absolute() else base / text
    if not resolved.is_file():
        raise problem(f"file {text} does not exist")
    return resolved


FilePath = Annotated[
    Path,
    PlainValidator(_file, json_schema_input_type=str),
    WithJsonSchema({"type": "string"}),
    Label("file path"),
]
"""An existing file; a relative path is relative to the config file."""


def decode_master_key(text: str, *at: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise problem("must be 32 bytes, base64-encoded (gateway master-key)", *at) from None
    if len(raw) != 32:
        raise problem(f"must decode to 32 bytes, got {len(raw)}", *at)
    return raw


def _master_key(value: object) -> bytes:
    if isinstance(value, bytes):
        return value  # already decoded (settings built in code, or read from master_key_file)
    return decode_master_key(_str(value))


MasterKey = Annotated[
    bytes,
    PlainValidator(_master_key, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "minLength": 44}),
    Label("base64, 32 bytes"),
]
"""32 bytes, base64-encoded in the file (``gateway master-key`` makes one)."""


Network = IPv4Network | IPv6Network


def _network(value: object) -> Network:
    if isinstance(value, IPv4Network | IPv6Network):
        network: Network = value
    else:
        text = _str(value)
        try:
            network = ip_network(text, strict=True)
        except ValueError as exc:
            raise problem(f"{text!r} is not a network such as 10.0.0.0/8 ({exc})") from None
    if network.prefixlen == 0:
        # SECURITY: trusting every address would let any client name its own address.
        raise problem("trusting every address lets any client choose its X-Forwarded-For")
    return network


Cidr = Annotated[
    Network,
    PlainValidator(_network, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "description": "a CIDR network such as 10.0.0.0/8"}),
    Label("CIDR network"),
]
"""An IPv4 or IPv6 network in CIDR notation, host bits clear; never ``/0``."""


# -- sections validated as one shape and kept as another ------------------------------------


@dataclass(frozen=True, slots=True)
class ValidatedAs:
    """A field validated as the section ``source`` (its shape is what the JSON Schema and the
    docs table show), then turned by ``convert`` (given the section and the validation
    context) into the ``result`` the code reads (the route policy: rules in the file, a compiled
    trie in the settings). A ``result`` given as is (in code) is kept."""

    source: type[Section]
    convert: Callable[[Any, dict[str, Any]], Any]
    result: type
    default_text: str = ""  # the default as docs/configuration.md's table names it

    def __get_pydantic_core_schema__(
        self, _type: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_wrap_validator_function(
            self._validate, handler.generate_schema(self.source)
        )

    def _validate(
        self, value: object, validate_source: Callable[[object], Any], info: ValidationInfo
    ) -> Any:
        if isinstance(value, self.result):
            return value
        context = info.context if isinstance(info.context, dict) else {}
        return self.convert(validate_source(value), context)


@dataclass(frozen=True, slots=True)
class ContextChoices:
    """A string from a list the caller gives in the validation context under ``key`` (the
    credential kinds are known above the config layer), named in the error like
    :class:`OneOf`; without a list in the context, any identifier."""

    key: str

    def __get_pydantic_core_schema__(
        self, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_after_validator_function(self.check, handler(source))

    def check(self, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        choices = context.get(self.key)
        if choices is None:
            if not value.isidentifier():
                raise problem(f"{value!r} is not a name")
            return value
        if value not in choices:
            raise problem(f"{value!r} is not one of {', '.join(choices)}", choices=tuple(choices))
        return value
