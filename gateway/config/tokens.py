"""``tokens``: the keys the gateway signs its own tokens with, and their lifetimes."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from gateway.config.base import Bool, Duration, FilePath, Int, OneOf, Section
from gateway.config.errors import problem


def _kid(kid: str) -> str:
    if not kid or kid.startswith("key_") or len(kid) > 64:
        raise problem(
            "must be 1-64 characters and not start with 'key_' (reserved for API key ids)"
        )
    return kid


def _utf8(text: str) -> str:
    # A lone surrogate (a YAML "\ud800" escape, or undecodable bytes through ${ENV}) cannot be
    # written into a token's claims: refused here, not as a 500 on every token issued.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise problem("must be valid Unicode text (no lone surrogates)") from None
    return text


Claim = Annotated[str, AfterValidator(_utf8)]


class SigningKey(Section):
    """A private key the gateway signs user tokens, SDK sessions and assertions with
    (`gateway signing-key` makes one)."""

    kid: Annotated[str, AfterValidator(_kid)] = Field(
        description="Key id in the JWT header and the JWKS; not starting with `key_`."
    )
    path: FilePath = Field(alias="file", description="Unencrypted PEM private key.")
    algorithm: Annotated[str, OneOf(("RS256", "ES256", "EdDSA"))] = Field(
        "RS256",
        description="EdDSA (Ed25519: the fastest to sign, what `gateway signing-key` makes by "
        "default), ES256 (P-256) or RS256 (RSA, at least 2048 bits; the default when the field "
        "is left out, as in configs written before EdDSA).",
    )


class TokenSettings(Section):
    """Tokens the gateway issues: user tokens, mobile tokens, SDK sessions, assertions."""

    issuer: Claim = Field(
        "health-gateway", description="`iss` of every token the gateway signs (any Unicode text)."
    )
    audience: Claim = Field(
        "health-api", description="`aud` of every token the gateway signs (any Unicode text)."
    )
    signing_keys: tuple[SigningKey, ...] = Field(
        (),
        description="Every key verifies and is published in the JWKS; with none, one "
        "ephemeral key per process (no Redis store only).",
    )
    active_kid: str | None = Field(
        None,
        validate_default=True,
        description="The key that signs (default: the first of `signing_keys`).",
    )
    user_token_ttl: Duration = Field(3600.0, ge=10, le=86400, description="User token lifetime.")
    mobile_token_ttl: Duration = Field(
        300.0, ge=10, le=3600, description="Mobile token lifetime (single use)."
    )
    sdk_session_ttl: Duration = Field(
        86400.0, ge=60, le=30 * 86400, description="SDK session lifetime."
    )
    leeway: Duration = Field(30.0, ge=0, le=300, description="Clock skew allowed on `exp`/`nbf`.")
    membership_cache_ttl: Duration = Field(
        60.0,
        ge=0,
        le=3600,
        description="How long the backend's answer that a user belongs to an account is kept.",
    )
    verify_cache_size: Int = Field(
        100_000, ge=0, le=10_000_000, description="Verified tokens kept in memory (0: none)."
    )
    assertion: Bool = Field(
        False, description="Add `X-Auth-Assertion` (a signed JWT over the principal) upstream."
    )
    assertion_ttl: Duration = Field(60.0, ge=5, le=3600, description="Assertion lifetime.")

    @field_validator("signing_keys")
    @classmethod
    def _distinct(cls, keys: tuple[SigningKey, ...]) -> tuple[SigningKey, ...]:
        if len({key.kid for key in keys}) != len(keys):
            raise problem("kids must be distinct")
        return keys

    @field_validator("active_kid")
    @classmethod
    def _active(cls, active: str | None, info: ValidationInfo) -> str | None:
        keys: tuple[SigningKey, ...] | None = info.data.get("signing_keys")
        if keys is None:  # the keys failed; their error is the one reported
            return active
        if active is None:
            return keys[0].kid if keys else None
        if active not in {key.kid for key in keys}:
            raise problem(f"{active!r} is not one of the signing_keys")
        return active
