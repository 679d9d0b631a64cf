"""User tokens and SDK sessions: the two kinds of token the gateway signs itself.

One authenticator class serves both, parametrized by kind (typ header, tkn claim, credential
name), because their verification is the same code: pinned algorithm, the gateway's own kid,
issuer, audience, expiry, and the issuing API key not explicitly revoked.
"""

from __future__ import annotations

from gateway.credentials import Credential
from gateway.issue.gateway_tokens import GatewayTokens, TokenKind
from gateway.keys.service import KeyService
from gateway.principal import CredentialKind, Principal


class GatewayTokenAuthenticator:
    def __init__(
        self, kind: CredentialKind, token_kind: TokenKind, tokens: GatewayTokens, keys: KeyService
    ) -> None:
        self.kind = kind
        self._token_kind = token_kind
        self._tokens = tokens
        self._keys = keys

    async def authenticate(self, credential: Credential) -> Principal:
        verified = self._tokens.verify(credential.value, credential.header or {}, self._token_kind)
        await self._keys.ensure_not_revoked(verified.key_id)
        return Principal(
            account=verified.account,
            credential=self.kind,
            environment=verified.environment,
            actor=verified.user,
            user=verified.user,
            scopes=verified.scopes,
            key_id=verified.key_id,
            expires_at=verified.expires_at,
            token_id=verified.jti,
        )
