"""The authenticator registry's contract (``gateway.authn.registry``): a principal, a gateway
error, or a 401, whatever a verifier raises."""

from __future__ import annotations

import pytest

from gateway.authn import team_session
from gateway.authn.base import Kind
from gateway.authn.registry import Registry
from gateway.credentials import Credential
from gateway.errors import InvalidToken, StoreUnavailable
from gateway.principal import Principal


class Raising:
    """A verifier that fails the way PyJWT did on an RS256 header with an EC key (issue 17):
    with an exception that is not the gateway's."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def authenticate(self, credential: Credential) -> Principal:
        raise self.error


CREDENTIAL = Credential(team_session.KIND, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")


def registry(verifier: Raising) -> Registry:
    return Registry([Kind(team_session.KIND, team_session.claims, verifier)])


@pytest.mark.parametrize("error", [TypeError("Expecting a PEM-formatted key."), ValueError("x")])
async def test_unforeseen_verifier_errors_are_invalid_token(error: Exception) -> None:
    with pytest.raises(InvalidToken) as info:
        await registry(Raising(error)).authenticate(CREDENTIAL)
    assert info.value.status == 401
    assert info.value.details == {"reason": "unverifiable"}
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_gateway_errors_pass_through_unchanged() -> None:
    # A verifier's 503 (its store is down) stays a 503: only unforeseen errors become 401.
    down = StoreUnavailable(details={"store": "redis"})
    with pytest.raises(StoreUnavailable) as info:
        await registry(Raising(down)).authenticate(CREDENTIAL)
    assert info.value is down
