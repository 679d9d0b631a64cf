"""The registry's kinds, by name, for tests; and classification by shape alone."""

from __future__ import annotations

from gateway.authn import api_key, member_token, mobile_token, sdk_session, team_session, user_token
from gateway.authn.base import Kind
from gateway.authn.registry import Registry
from gateway.credentials import Credential
from gateway.principal import CredentialKind


class K:
    API_KEY: CredentialKind = api_key.KIND
    USER_TOKEN: CredentialKind = user_token.KIND
    MOBILE_TOKEN: CredentialKind = mobile_token.KIND
    SDK_SESSION: CredentialKind = sdk_session.KIND
    MEMBER_TOKEN: CredentialKind = member_token.KIND
    TEAM_SESSION: CredentialKind = team_session.KIND


# The built-in kinds' shape tests in the registry's order, with no verifiers.
SHAPES = Registry(
    [
        Kind(module.KIND, module.claims, None)
        for module in (api_key, mobile_token, user_token, sdk_session, member_token, team_session)
    ]
)


def classify(token: str) -> Credential:
    return SHAPES.classify(token)
