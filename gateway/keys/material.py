"""What an API key is made of: its shape, its randomness, its lookup digest.

``sk_live_…`` keys are live; ``sk_sandbox_…`` and ``sk_test_…`` are sandbox. The secret part is
43 characters of base62, about 256 bits from :mod:`secrets` (:mod:`gateway.base62`). The key is
never stored: the store indexes it by its SHA-256 digest (a key has enough entropy that no salt
or slow hash is needed; the digest only has to be one-way) and keeps it encrypted for HS256
verification.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from gateway.base62 import random_base62

PREFIXES = {"sk_live_": "live", "sk_sandbox_": "sandbox", "sk_test_": "sandbox"}
SECRET_LENGTH = 43  # 43 * log2(62) ≈ 256 bits
KEY_SHAPE = re.compile(r"^sk_(?:live|sandbox|test)_[A-Za-z0-9]{8,128}\Z")
KEY_ID_SHAPE = re.compile(r"^key_[a-f0-9]{24}\Z")


def new_key(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown key prefix {prefix!r}")
    return prefix + random_base62(SECRET_LENGTH)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(12)


def environment_of(key: str) -> str | None:
    for prefix, env in PREFIXES.items():
        if key.startswith(prefix):
            return env
    return None


def prefix_for(environment: str, *, test: bool = False) -> str:
    if environment == "live":
        return "sk_live_"
    return "sk_test_" if test else "sk_sandbox_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
