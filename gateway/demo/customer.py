"""What a customer's own server does with its API key, for the demo: it signs member and
caregiver tokens (Source's "Generating Member Tokens") and asks the gateway for user tokens (the
token document's "Issuing a User Token"). The key stays here; only tokens leave.

The signing is written as a customer would write it with a JWT library, independently of the
gateway (``gateway tokens member`` produces the same shape): header ``{"alg": "HS256", "kid":
KEY_ID}``, payload ``sub``, optional ``act``, ``iat``, ``exp`` and ``scopes``, HMAC-SHA256
keyed with the API key's UTF-8 bytes.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
from yarl import URL


def member_token(key: str, key_id: str, sub: str, *, act: str | None = None, ttl: int = 300) -> str:
    """A member token for ``sub`` (a caregiver token when ``act`` is given), valid ``ttl``
    seconds from now (the gateway accepts at most 24 hours)."""
    issued = int(time.time())
    payload: dict[str, Any] = {"sub": sub}
    if act is not None:
        payload["act"] = act
    payload.update({"iat": issued, "exp": issued + ttl, "scopes": []})
    return jwt.encode(
        payload, key.encode("utf-8"), algorithm="HS256", headers={"kid": key_id, "typ": None}
    )


async def user_token(
    session: aiohttp.ClientSession, gateway: URL, key: str, user_id: str
) -> tuple[int, dict[str, Any]]:
    """``POST /v1/auth/user-token`` with the API key, as the token document's backend does:
    the gateway's status and JSON answer (``{"token", "user_id", "expires_at"}`` on 200, its
    error otherwise)."""
    async with session.post(
        gateway / "v1/auth/user-token",
        json={"user_id": user_id},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        answer: dict[str, Any] = await response.json(content_type=None)
        return response.status, answer
