"""Gateway-signed user tokens and SDK sessions: issued by ``gateway.issue.gateway_tokens``,
verified by ``gateway.authn.gateway_token``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import jwt
import pytest

from gateway.authn.gateway_token import GatewayTokenAuthenticator, TokenMarkers, Verified
from gateway.errors import InvalidToken, TokenExpired
from gateway.issue.gateway_tokens import SDK, USER, GatewayTokens
from gateway.keys.service import KeyService
from gateway.keys.signing import SigningKeys
from tests.conftest import make_settings
from tests.kinds import K, classify
from tests.support import FakeClock

TokenKind = TokenMarkers


class Service(GatewayTokens):
    """Issuing (gateway.issue) and verifying (gateway.authn.gateway_token) with the same keys."""

    def __init__(self, keys: SigningKeys, settings: Any, clock: FakeClock) -> None:
        super().__init__(keys, settings, clock)
        self._verifiers = {
            markers: GatewayTokenAuthenticator(
                kind, markers, keys, settings, cast(KeyService, None), clock
            )
            for kind, markers in ((K.USER_TOKEN, USER), (K.SDK_SESSION, SDK))
        }

    def verify(self, token: str, header: Mapping[str, Any], kind: TokenMarkers) -> Verified:
        return self._verifiers[kind].verify(token, header)


def tokens(active: str = "rs1", **claims: str) -> tuple[Service, FakeClock]:
    settings = make_settings("http://127.0.0.1:9").tokens.model_copy(update=claims)
    clock = FakeClock(1_700_000_000.0)
    keys = SigningKeys.from_settings(settings)
    keys.active = keys.get(active)  # type: ignore[assignment]
    return Service(keys, settings, clock), clock


def issue(service: GatewayTokens, kind: TokenKind = USER, ttl: float = 3600) -> str:
    token, _ = service.issue(
        kind,
        user="usr_a",
        account="acc_1",
        environment="live",
        key_id="key_1",
        ttl=ttl,
        scopes=("sleep",),
    )
    return token


@pytest.mark.parametrize("active", ["rs1", "es1"])
def test_round_trip_with_each_algorithm(active: str) -> None:
    service, _ = tokens(active)
    token = issue(service)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == active and header["alg"] == {"rs1": "RS256", "es1": "ES256"}[active]
    verified = service.verify(token, classify(token).header or {}, USER)
    assert (verified.user, verified.account, verified.environment) == ("usr_a", "acc_1", "live")


def test_any_unicode_issuer_and_audience_round_trip() -> None:
    # The claims are serialized by orjson (UTF-8, not \u escapes): the gateway's verifier and
    # any JWT library read the same text back.
    service, _ = tokens(issuer="Santé-gateway", audience="API-Ω")
    token = issue(service, SDK)
    verified = service.verify(token, classify(token).header or {}, SDK)
    assert verified.user == "usr_a" and verified.scopes == ("sleep",)
    public = service.keys.get("rs1").public  # type: ignore[union-attr]
    claims = jwt.decode(
        token, public, algorithms=["RS256"], audience="API-Ω", options={"verify_exp": False}
    )  # the fake clock is in 2023
    assert claims["iss"] == "Santé-gateway" and claims["scp"] == ["sleep"]


def test_a_user_token_is_not_an_sdk_session_and_back() -> None:
    service, _ = tokens()
    user, sdk = issue(service, USER), issue(service, SDK)
    with pytest.raises(InvalidToken):
        service.verify(user, classify(user).header or {}, SDK)
    with pytest.raises(InvalidToken):
        service.verify(sdk, classify(sdk).header or {}, USER)
    assert service.verify(sdk, classify(sdk).header or {}, SDK).scopes == ("sleep",)


def test_expiry_is_enforced_even_from_the_cache() -> None:
    service, clock = tokens()
    token = issue(service, ttl=60)
    header = classify(token).header or {}
    service.verify(token, header, USER)  # cached now
    clock.advance(60 + 30)  # ttl + leeway
    with pytest.raises(TokenExpired):
        service.verify(token, header, USER)


def test_a_token_signed_by_an_unknown_key_is_refused() -> None:
    service, _ = tokens()
    token = issue(service)
    forged_header = {**(classify(token).header or {}), "kid": "elsewhere"}
    with pytest.raises(InvalidToken) as raised:
        service.verify(token, forged_header, USER)
    assert raised.value.details == {"reason": "unknown_kid"}
