"""Token issuance: gateway signing keys, JWKS, user tokens, mobile tokens and SDK sessions."""
