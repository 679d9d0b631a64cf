"""Encryption at rest of API keys (AES-256-GCM from ``cryptography``).

A key must be recoverable, because customers sign HS256 member tokens with it, but never readable
from the store alone: it is sealed under the master key given by environment or file, with the key
id as associated data so a sealed blob cannot be moved to another record.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SealingError(Exception):
    """A sealed value could not be opened (wrong master key or tampered record)."""


class Sealer:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, context: str) -> str:
        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise SealingError("cannot open sealed key: wrong master key or tampered") from None


def new_master_key() -> str:
    """A fresh master key, base64, for ``master_key`` / ``GATEWAY_MASTER_KEY``."""
    return base64.b64encode(os.urandom(32)).decode("ascii")
