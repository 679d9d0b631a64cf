"""The registry's two refusals that no ordinary request reaches: a kind this deployment does not
configure, and a verifier failing in a way nobody foresaw (logged for operators by type only)."""

from __future__ import annotations

import io

import orjson
import pytest

from gateway.authn import api_key, introspection, team_session
from gateway.authn.base import Kind
from gateway.authn.registry import Registry
from gateway.credentials import Credential
from gateway.errors import InvalidToken
from gateway.principal import CredentialKind, Principal
from tests.conftest import Gateway

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtcGVyc29uIn0.c2lnbmF0dXJlLXNlY3JldA"


async def test_a_kind_without_a_verifier_is_refused_as_unsupported(gateway: Gateway) -> None:
    registry = gateway.runtime.authenticators
    assert registry.authenticator(introspection.KIND.name) is None  # not configured here
    with pytest.raises(InvalidToken) as refused:
        await registry.authenticate(Credential(introspection.KIND, "ory_at_abcdef0123456789"))
    assert refused.value.details == {"reason": "unsupported_kind"}
    # Through the gateway such a token is nobody's shape: malformed, never passed through.
    response = await gateway.client.get(
        "/v1/users", headers={"Authorization": "Bearer ory_at_abcdef0123456789"}
    )
    assert response.status == 401
    assert gateway.recorder.seen == []


class Raising:
    """A verifier failing as PyJWT once did on a hostile header, quoting the token."""

    async def authenticate(self, credential: Credential) -> Principal:
        raise TypeError(f"cannot use this key for {credential.value}")


async def test_an_unforeseen_verifier_error_is_logged_by_type_only(
    log_lines: io.StringIO,
) -> None:
    registry = Registry([Kind(team_session.KIND, team_session.claims, Raising())])
    with pytest.raises(InvalidToken) as refused:
        await registry.authenticate(Credential(team_session.KIND, TOKEN))
    assert refused.value.details == {"reason": "unverifiable"}
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines() if line.strip()]
    warnings = [line for line in lines if str(line.get("level")).lower() == "warning"]
    # Operators see that a verifier raised, and what (its type), for which kind...
    assert any("TypeError" in orjson.dumps(line).decode() for line in warnings), lines
    assert any("team_session" in orjson.dumps(line).decode() for line in warnings), lines
    # ...and never the message, which quoted the credential.
    assert TOKEN not in log_lines.getvalue() and "cannot use this key" not in log_lines.getvalue()


@pytest.mark.parametrize(
    "kind", [api_key.KIND, introspection.KIND, CredentialKind("no_such_kind", user_bound=False)]
)
async def test_only_a_single_use_kind_can_be_consumed(gateway: Gateway, kind: object) -> None:
    """A kind with no consumption (an API key), no verifier here (introspection) or not in the
    registry at all is refused as unsupported when asked to be consumed: never a 500."""
    registry = gateway.runtime.authenticators
    assert isinstance(kind, CredentialKind)
    with pytest.raises(InvalidToken) as refused:
        await registry.consume(Credential(kind, "sk_live_" + "a" * 40))
    assert refused.value.details == {"reason": "unsupported_kind"}
