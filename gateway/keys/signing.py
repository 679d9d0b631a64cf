"""The gateway's signing keys: one signs, every configured key verifies, all are published.

Keys are PEM private keys (EdDSA: Ed25519, the default for new deployments; ES256: P-256;
RS256: RSA ≥ 2048 bits) named in
``tokens.signing_keys`` with a ``kid``; ``tokens.active_kid`` signs. Rotating means adding a new
key, making it active, and removing the old one after the longest token lifetime has passed:
tokens signed by the old key keep verifying until then. JWK conversion is PyJWT's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.config import ConfigError, TokenSettings

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
# Cost per token with cryptography 50 on the benchmark machine (docs/performance.md, seventh
# round): signing EdDSA 34 µs, ES256 23 µs, RS256 (2048) 255 µs; verifying EdDSA 117 µs,
# ES256 77 µs. EdDSA stays the default: a whole mobile pair under load measured 8 % cheaper
# with it than with ES256, side by side.
ALGORITHMS = ("EdDSA", "ES256", "RS256")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    private: PrivateKey
    public: PublicKey

    def jwk(self) -> dict[str, Any]:
        if isinstance(self.public, rsa.RSAPublicKey):
            jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.public))
        elif isinstance(self.public, ed25519.Ed25519PublicKey):
            jwk = json.loads(OKPAlgorithm.to_jwk(self.public))
        else:
            jwk = json.loads(ECAlgorithm.to_jwk(self.public))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return jwk


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {algorithm}")


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load(path: Path, algorithm: str, field: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise ConfigError(field, f"{path} is not an unencrypted PEM private key") from None
    if algorithm == "RS256" and isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(field, "RS256 keys must be at least 2048 bits")
        return key
    if (
        algorithm == "ES256"
        and isinstance(key, ec.EllipticCurvePrivateKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    if algorithm == "EdDSA" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError(field, f"{path} is not a key for {algorithm}{_is_for(key)}")


def _is_for(key: object) -> str:
    """What the key in the file is for, as a hint (``algorithm`` defaults to RS256, and `gateway
    init` writes EdDSA keys)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return " (it is an Ed25519 key: set algorithm: EdDSA)"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return " (it is a P-256 key: set algorithm: ES256)"
    if isinstance(key, rsa.RSAPrivateKey):
        return " (it is an RSA key: set algorithm: RS256)"
    return ""


class SigningKeys:
    def __init__(self, keys: list[SigningKey], active_kid: str) -> None:
        self._by_kid = {k.kid: k for k in keys}
        self.active = self._by_kid[active_kid]

    @classmethod
    def from_settings(cls, settings: TokenSettings) -> SigningKeys:
        """The configured keys; with none configured, one ephemeral EdDSA key (one process
        only: tokens it signs do not verify on other replicas or after a restart)."""
        if not settings.signing_keys:
            private = generate_private_key("EdDSA")
            return cls(
                [SigningKey("ephemeral", "EdDSA", private, private.public_key())], "ephemeral"
            )
        keys = []
        for i, configured in enumerate(settings.signing_keys):
            private = _load(configured.path, configured.algorithm, f"tokens.signing_keys[{i}].file")
            keys.append(
                SigningKey(configured.kid, configured.algorithm, private, private.public_key())
            )
        assert settings.active_kid is not None  # validated with the config
        return cls(keys, settings.active_kid)

    def get(self, kid: object) -> SigningKey | None:
        # SECURITY: a kid is only ever a dictionary key here: never a path, URL or query.
        return self._by_kid.get(kid) if isinstance(kid, str) else None

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self._by_kid.values()]}
