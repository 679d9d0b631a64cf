"""Each verifier of a gateway-signed token re-checks both of its kind's markers.

A token reaches a verifier because its ``typ`` header says so, and the verifier checks the
``typ`` again together with the signed ``tkn`` claim. The second ``typ`` check is defence in
depth: through the gateway a token whose header names another kind is routed to that kind's
verifier, so it shows only when a token is handed to the wrong verifier, which is what these
tests do, with tokens signed by the gateway's own key.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from gateway.authn import sdk_session, user_token
from gateway.credentials import Credential
from gateway.errors import InvalidToken
from tests.conftest import Gateway
from tests.support import signing_key_files


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def issued_claims(gw: Gateway) -> dict[str, dict[str, Any]]:
    """The claims of a real user token and a real SDK session for usr_a."""
    key = await gw.key()
    user = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers=bearer(key)
    )
    mobile = await gw.client.post(
        "/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=bearer(key)
    )
    session = await gw.client.post(
        "/v1/sdk/initialize", headers=bearer((await mobile.json())["token"])
    )
    tokens = {"user": (await user.json())["token"], "sdk": (await session.json())["session_token"]}
    return {name: jwt.decode(t, options={"verify_signature": False}) for name, t in tokens.items()}


def signed(claims: dict[str, Any], typ: str) -> str:
    """Signed with the gateway's own active key (rs1), under the given ``typ``."""
    private = signing_key_files()["rs1"].read_bytes()
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": "rs1", "typ": typ})


@pytest.mark.parametrize(
    ("verifier", "claims_of", "other_typ"),
    [
        (user_token, "user", sdk_session.MARKERS.typ),
        (sdk_session, "sdk", user_token.MARKERS.typ),
    ],
)
async def test_a_verifier_refuses_its_own_claim_under_another_kinds_typ(
    gateway: Gateway, verifier: Any, claims_of: str, other_typ: str
) -> None:
    claims = (await issued_claims(gateway))[claims_of]
    entry = next(k for k in gateway.runtime.authenticators.kinds if k.kind is verifier.KIND)
    assert entry.authenticator is not None
    # The control: the same claims under the right typ are this verifier's.
    genuine = signed(claims, verifier.MARKERS.typ)
    header = jwt.get_unverified_header(genuine)
    principal = await entry.authenticator.authenticate(Credential(entry.kind, genuine, header))
    assert principal.user == "usr_a"
    # The right `tkn` claim but another kind's `typ`: refused by this verifier too.
    forged = signed(claims, other_typ)
    header = jwt.get_unverified_header(forged)
    with pytest.raises(InvalidToken) as refused:
        await entry.authenticator.authenticate(Credential(entry.kind, forged, header))
    assert refused.value.details == {"reason": "wrong_token_type"}
    # Through the gateway the header routes it to the other kind, whose claim check refuses it.
    response = await gateway.client.get("/v1/users/usr_a/scores", headers=bearer(forged))
    body = await response.json()
    assert (response.status, body["error"]) == (401, "invalid_token")
    assert body["details"]["reason"] == "wrong_token_type"


@pytest.mark.parametrize("missing", ["iss", "aud", "sub", "iat", "exp", "jti", "tkn", "kid"])
async def test_a_gateway_signed_token_missing_a_claim_is_refused(
    gateway: Gateway, missing: str
) -> None:
    """Each required claim is enforced twice (PyJWT's ``require`` and the checks after it), so
    removing one enforcement changes nothing a client sees; removing both fails here."""
    claims = (await issued_claims(gateway))["user"]
    assert missing in claims
    del claims[missing]
    token = signed(claims, user_token.MARKERS.typ)
    forwarded = len(gateway.recorder.seen)  # the membership question of the issuance
    response = await gateway.client.get("/v1/users/usr_a/scores", headers=bearer(token))
    body = await response.json()
    assert (response.status, body["error"]) == (401, "invalid_token"), body
    assert len(gateway.recorder.seen) == forwarded
