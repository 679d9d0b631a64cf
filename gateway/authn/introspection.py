"""Opaque OAuth2 access tokens, checked by RFC 7662 token introspection.

A token of the configured shape (``introspection.token_pattern``) is posted to the operator's
introspection endpoint (``token=…&token_type_hint=access_token``, the gateway authenticating
with HTTP Basic client credentials, RFC 7662 §2.1). The answer decides:

- ``active`` must be ``true`` (anything else is 401 ``invalid_token``, reason ``inactive``);
- ``exp``, when present, must be in the future (401 ``token_expired``); ``nbf`` must have passed;
- ``aud``, when ``introspection.audience`` is set, must name it; ``iss`` likewise;
- ``sub`` is the user the token is for (required: a token for no user reaches nothing), the
  account is read from ``account_claim``, and ``scope`` (space-separated ``RESOURCE:ACTION``
  scopes, the member-token grammar) narrows what the policy allows; a token without scopes
  reaches nothing.

Answers are cached until the token's ``exp`` and at most ``cache_ttl`` (default 1 s, the
gateway's revocation bound), inactive ones too, so a flood of one bad token costs one call per
``cache_ttl``. When the endpoint is down, slow or answers anything but a JSON object with status
200, the request fails closed: 503 ``service_unavailable``, never admitted.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import re
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Final
from urllib.parse import quote_plus

import aiohttp
import orjson
from pydantic import Field, PlainValidator, WithJsonSchema

from gateway.authn.base import Dependencies, Kind, KindSection, never
from gateway.authn.claims import numeric_date, scope_tokens
from gateway.bodies import read_at_most
from gateway.clock import Clock
from gateway.config.base import Duration, HttpUrl, Int, Label, Section
from gateway.config.errors import problem
from gateway.config.upstreams import Environment
from gateway.credentials import Credential
from gateway.errors import GatewayError, InvalidToken, ServiceUnavailable, TokenExpired
from gateway.identifiers import is_identifier
from gateway.observe import logs
from gateway.pools import HelperPool
from gateway.principal import CredentialKind, Principal
from gateway.ttlcache import TTLCache, token_key

KIND = CredentialKind(
    "oauth2_token",
    user_bound=True,
    refusal="OAuth2 access tokens cannot be used for this operation.",
    rate_identity="user",
    narrowing="resource_required",
)
MAX_RESPONSE_BYTES = 64 * 1024


def _pattern(value: object) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str) or not value:
        raise problem("must be a regular expression")
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise problem(f"not a regular expression: {exc}") from None
    # SECURITY: the shape must tell these tokens apart from every other kind; a pattern that
    # would take API keys, mobile tokens or gateway JWTs is refused (the registry tries this
    # kind after those, but a pattern that broad is a mistake, not a choice).
    for sample in (*_OTHER_KINDS, *_JWS_SAMPLES):
        if pattern.fullmatch(sample):
            raise problem(f"also matches tokens of another kind (such as {sample[:12]}…)")
    return pattern


_OTHER_KINDS: Final = (
    "sk_live_" + "a" * 43,
    "sk_sandbox_" + "a" * 43,
    "sk_test_" + "a" * 43,
    "mt_" + "a" * 43,
)
# SECURITY: every JWS-shaped token belongs to a JWS kind (a team session at the least): a
# pattern that takes any of these would send identity-provider JWTs to the introspection
# endpoint instead of verifying them.
_JWS_SAMPLES: Final = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6Imd3LXVzZXIrand0In0.eyJzdWIiOiJ1In0." + "a" * 43,
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIn0.eyJzdWIiOiJ1In0." + "b" * 86,
    "eyJhbGciOiJIUzI1NiIsImtpZCI6ImtleV8xIn0.e30." + "c" * 43,
    "ICB7ImFsZyI6IlJTMjU2In0.eyJzdWIiOiJ1In0." + "d" * 43,
    "ab.cd.ef",
    # A team session of a few claims and an RS256 signature is 500-700 characters; some
    # identity providers' are several kilobytes.
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImlkcC0xIn0." + "e" * 300 + "." + "f" * 342,
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImlkcC0xIn0." + "g" * 3000 + "." + "h" * 683,
)

TokenPattern = Annotated[
    re.Pattern[str],
    PlainValidator(_pattern, json_schema_input_type=str),
    WithJsonSchema({"type": "string", "format": "regex"}),
    Label("regular expression"),
]


class IntrospectionSettings(Section):
    """``introspection``: opaque OAuth2 access tokens, checked by RFC 7662 introspection
    (absent: the kind is off)."""

    url: HttpUrl = Field(description="The introspection endpoint (RFC 7662 §2).")
    client_id: str = Field(min_length=1, description="The gateway's client id there.")
    client_secret: str = Field(min_length=1, description="Its secret (use `${ENV}`).")
    token_pattern: TokenPattern = Field(
        description="The shape of these tokens, a regular expression the whole token must "
        "match (e.g. `ory_at_[A-Za-z0-9_.-]+`); it may not match any other kind's tokens."
    )
    account_claim: str = Field("account", description="The answer's member naming the account.")
    environment: Environment = Field("live", description="The environment its tokens act in.")
    audience: str | None = Field(None, description="When set, `aud` must name it.")
    issuer: str | None = Field(None, description="When set, `iss` must equal it.")
    cache_ttl: Duration = Field(
        1.0,
        ge=0,
        le=300,
        description="Answers are cached until the token's `exp` and at most this long "
        "(the revocation delay for these tokens).",
    )
    timeout: Duration = Field(2.0, ge=0.05, le=30, description="Per introspection call.")
    cache_size: Int = Field(100_000, ge=0, le=10_000_000, description="Cached answers, at most.")


SECTION = KindSection(
    "introspection",
    IntrospectionSettings | None,
    Field(None, description="Opaque OAuth2 access tokens checked by RFC 7662 introspection."),
)


def _bad(message: str, reason: str) -> InvalidToken:
    return InvalidToken(message, details={"reason": reason})


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The token introspection service is unavailable. Retry later.",
        details={"reason": "introspection"},
    )


class IntrospectionAuthenticator:
    def __init__(self, settings: IntrospectionSettings, clock: Clock, helper: HelperPool) -> None:
        self._settings = settings
        self._clock = clock
        self._helper = helper
        # RFC 6749 §2.3.1: client id and secret form-urlencoded, then HTTP Basic.
        pair = f"{quote_plus(settings.client_id)}:{quote_plus(settings.client_secret)}"
        self._headers = {
            "Accept": "application/json",
            "Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii"),
        }
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        # token -> the principal, or the refusal it earned (cached alike, see the docstring)
        self.cache: TTLCache[str, Principal | InvalidToken] = TTLCache(
            settings.cache_size, key=token_key
        )
        self.calls = 0
        # token -> the call in flight for it (bounded by the requests in flight)
        self._pending: dict[str, asyncio.Future[Principal | InvalidToken]] = {}

    def claims(self, token: str, header: Mapping[str, Any] | None) -> bool:
        # SECURITY: a JWS is never an opaque token, whatever the pattern admits: it is verified
        # by its own kind, never posted to a third party (check-config refuses such patterns
        # too, for the JWS shapes it knows).
        return header is None and self._settings.token_pattern.fullmatch(token) is not None

    async def authenticate(self, credential: Credential) -> Principal:
        now = self._clock.now()
        cached = self.cache.get(credential.value, now)
        if cached is None:
            cached = await self._shared(credential.value, now)
        if isinstance(cached, InvalidToken):
            raise InvalidToken(cached.message, details=dict(cached.details))
        if cached.expires_at is not None and now >= cached.expires_at:
            raise TokenExpired(details={"reason": "expired"})
        return cached

    async def _shared(self, token: str, now: float) -> Principal | InvalidToken:
        """The endpoint's verdict on ``token``, asked once however many requests carry it at
        the same time: SECURITY: a flood of one token (a bad one included) costs the endpoint
        one call per ``cache_ttl``, not one per request. The call runs as a task of its own,
        so a requester that goes away does not cancel it for the others."""
        pending = self._pending.get(token)
        if pending is None:
            pending = self._pending[token] = asyncio.ensure_future(self._verdict(token, now))
            pending.add_done_callback(lambda done: self._settled(token, done))
        try:
            return await asyncio.shield(pending)
        except GatewayError as exc:  # one instance shared: each waiter raises its own copy
            raise copy.copy(exc) from None

    def _settled(self, token: str, done: asyncio.Future[Principal | InvalidToken]) -> None:
        self._pending.pop(token, None)
        if not done.cancelled():
            done.exception()  # retrieved here: every requester of it may have gone away

    async def _verdict(self, token: str, now: float) -> Principal | InvalidToken:
        verdict, until = self._judge(await self._introspect(token), now)
        self.cache.put(token, verdict, until)
        return verdict

    async def _introspect(self, token: str) -> dict[str, Any]:
        self.calls += 1
        try:
            async with self._helper.client().post(
                self._settings.url,
                data={"token": token, "token_type_hint": "access_token"},
                timeout=self._timeout,
                allow_redirects=False,
                headers=self._headers,
            ) as response:
                body = await read_at_most(response.content, MAX_RESPONSE_BYTES)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            logs.event("token introspection failed", logging.WARNING, error=type(exc).__name__)
            raise _unavailable() from None
        # SECURITY: only a complete JSON object with status 200 is an answer; anything else
        # (an error page, a redirect to a login form, a truncated body) fails closed.
        if status != 200 or len(body) > MAX_RESPONSE_BYTES:
            logs.event("token introspection failed", logging.WARNING, status=status)
            raise _unavailable()
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            logs.event("token introspection failed", logging.WARNING, error="not_json")
            raise _unavailable()
        return answer

    def _judge(self, answer: dict[str, Any], now: float) -> tuple[Principal | InvalidToken, float]:
        """The principal an answer proves (or the refusal it earns), and how long it holds."""
        settings = self._settings
        until = now + settings.cache_ttl
        # SECURITY: exactly the JSON boolean true; "true", 1 or a missing member are inactive.
        if answer.get("active") is not True:
            return _bad("The token is not active.", "inactive"), until
        # SECURITY: only an access token is a credential here; a refresh token (Ory's token_use,
        # Keycloak's typ) that the endpoint calls active is refused like any other kind.
        if answer.get("token_use", "access_token") != "access_token" or (
            str(answer.get("token_type", "")).lower() in ("refresh_token", "refresh")
            or str(answer.get("typ", "")).lower() in ("refresh", "offline")
        ):
            return _bad("This is not an access token.", "wrong_token_type"), until
        exp, nbf = answer.get("exp"), answer.get("nbf")
        if exp is not None:
            if not numeric_date(exp):
                return _bad("The token's exp is not a NumericDate.", "claims"), until
            until = min(until, float(exp))
        if nbf is not None and (not numeric_date(nbf) or nbf > now):
            return _bad("The token is not valid yet.", "claims"), until
        if settings.audience is not None:
            aud = answer.get("aud")
            audiences = aud if isinstance(aud, list) else [aud]
            if settings.audience not in audiences:
                return _bad("The token is not meant for this API.", "audience"), until
        if settings.issuer is not None and answer.get("iss") != settings.issuer:
            return _bad("The token's issuer is not trusted here.", "issuer"), until
        sub, account = answer.get("sub"), answer.get(settings.account_claim)
        if not is_identifier(sub):
            return _bad("The token has no usable sub.", "claims"), until
        if not is_identifier(account):
            return _bad(
                f"The token's {settings.account_claim} is not an account id.", "claims"
            ), until
        scope = answer.get("scope", "")
        # RFC 7662 §2.2: scope-tokens separated by spaces (RFC 6749 §3.3: one; a run of them is
        # tolerated), never by another character.
        scopes = (
            scope_tokens([s for s in scope.split(" ") if s]) if isinstance(scope, str) else None
        )
        if scopes is None:
            return _bad("The token's scope is not a list of scopes.", "claims"), until
        assert isinstance(sub, str) and isinstance(account, str)
        principal = Principal(
            account=sys.intern(account),
            credential=KIND,
            environment=settings.environment,
            actor=sys.intern(sub),
            user=sys.intern(sub),
            scopes=scopes,
            expires_at=float(exp) if exp is not None else None,
        )
        return principal, until


def build(deps: Dependencies) -> Kind:
    settings: IntrospectionSettings | None = getattr(deps.settings, SECTION.name)
    if settings is None:
        return Kind(KIND, never, None)
    authenticator = IntrospectionAuthenticator(settings, deps.clock, deps.helper)
    return Kind(
        KIND,
        authenticator.claims,
        authenticator,
        # As long as its own cache keeps the endpoint's answer (at most `cache_ttl`).
        fresh_until=lambda credential, _: authenticator.cache.fresh_until(credential.value),
        configured_shape=settings.token_pattern,
    )
