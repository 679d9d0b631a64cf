"""Member tokens cannot be used to probe which key ids exist or what state a key is in: a token
with a refused header gets the same answer whether its ``kid`` names an active key, a revoked
one, or no key at all."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.conftest import Gateway

SCORES = "/v1/users/mem_1/scores"
MISSING_KID = "key_" + "0" * 24


def member(secret: str, kid: str, now: float, header: dict[str, Any]) -> str:
    claims = {"sub": "mem_1", "iat": int(now), "exp": int(now) + 300, "scopes": []}
    return jwt.encode(claims, secret.encode(), algorithm="HS256", headers={"kid": kid, **header})


async def answer(gw: Gateway, token: str) -> tuple[int, dict[str, Any]]:
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {token}"})
    body = await response.json() if response.status != 200 else {}
    return response.status, body


@pytest.mark.parametrize(
    "header",
    [{"jku": "https://evil.example/jwks.json"}, {"crit": ["exp"]}, {"cty": "JWT"}],
    ids=["jku", "crit", "nested"],
)
async def test_a_refused_header_answers_alike_for_any_kid(
    gateway: Gateway, header: dict[str, Any]
) -> None:
    active, active_record = await gateway.runtime.keys.create("acc_1", "live")
    revoked, revoked_record = await gateway.runtime.keys.create("acc_1", "live")
    await gateway.runtime.keys.revoke(revoked_record.key_id)
    now = gateway.clock.now()
    answers = {
        "active key": await answer(gateway, member(active, active_record.key_id, now, header)),
        "revoked key": await answer(gateway, member(revoked, revoked_record.key_id, now, header)),
        "no such key": await answer(gateway, member(active, MISSING_KID, now, header)),
    }
    status, body = answers["active key"]
    assert (status, body["error"]) == (401, "invalid_token"), body
    assert body["details"]["reason"] in ("header", "malformed")  # refused before the key
    for label, (other_status, other_body) in answers.items():
        assert (other_status, other_body) == (status, body), label
    assert gateway.recorder.seen == []


async def test_the_control_a_clean_header_is_admitted(gateway: Gateway) -> None:
    key, record = await gateway.runtime.keys.create("acc_1", "live")
    assert (await answer(gateway, member(key, record.key_id, gateway.clock.now(), {})))[0] == 200
