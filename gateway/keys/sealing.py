"""Encryption at rest of API keys (AES-256-GCM from ``cryptography``).

A key must be recoverable, because customers sign HS256 member tokens with it, but never readable
from the store alone: it is sealed under the master key given by environment or file, with the key
id as associated data so a sealed blob cannot be moved to another record.

Every process sharing a store must seal and open with the same master key. Its
:attr:`Sealer.fingerprint` (a keyed hash that reveals nothing about the key) is recorded in the
store the first time a master key is used there (:mod:`gateway.keys.fingerprint`), so a process
holding a different key is refused before it can seal a key no other process can open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
FINGERPRINT_LABEL = b"health-gateway master-key fingerprint v1"


class SealingError(Exception):
    """A sealed value could not be opened (wrong master key or tampered record)."""


class Sealer:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(master_key)
        # HMAC-SHA256 under the key itself: a PRF output, so publishing it (in the store, in
        # error messages) tells nothing about the key, yet two different keys never share it.
        self.fingerprint = (
            "mk1:" + hmac.new(master_key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]
        )

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, context: str) -> str:
        """The plaintext, or :class:`SealingError` for any blob this key cannot open (another
        master key, a tampered or truncated record, not base64 at all): never another error."""
        try:
            raw = base64.b64decode(sealed, validate=True)
            if len(raw) <= NONCE_BYTES:
                raise SealingError("cannot open sealed key: the record is truncated")
            return self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()
            ).decode()
        except (InvalidTag, binascii.Error, ValueError, TypeError):
            raise SealingError("cannot open sealed key: wrong master key or tampered") from None


def new_master_key() -> str:
    """A fresh master key, base64, for ``master_key`` / ``GATEWAY_MASTER_KEY``."""
    return base64.b64encode(os.urandom(32)).decode("ascii")
