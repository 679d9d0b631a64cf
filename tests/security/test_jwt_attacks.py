"""JWT attacks, black-box over real sockets: each forged token is sent through the real gateway
to a recording upstream, and must get 401 with the upstream (and a canary listener that the
token points at) receiving nothing. Sources: RFC 8725, RFC 7515/7519, PortSwigger's JWT labs,
jwt_tool's attack modes, PyJWT's and python-jose's advisories (alg confusion, none)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from gateway.keys.signing import generate_private_key
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.functional.test_team_sessions import AUDIENCE, ISSUER, IdentityProvider
from tests.support import base_url

SCORES = "/v1/users/usr_a/scores"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@dataclass
class Context:
    gw: Gateway
    canary: list[str]
    canary_url: str
    key: str
    key_id: str
    idp: IdentityProvider
    tokens: dict[str, str]

    def now(self) -> int:
        return int(self.gw.clock.now())

    def gateway_key(self) -> Any:
        return self.gw.runtime.tokens.keys.active


def raw(
    header: dict[str, Any],
    payload: dict[str, Any] | str,
    sign: Callable[[bytes], bytes] | None = None,
    raw_payload: bytes | None = None,
) -> str:
    body = raw_payload if raw_payload is not None else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def hs(secret: bytes, digest: Any = hashlib.sha256) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, digest).digest()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    return json.loads(unb64(h)), json.loads(unb64(p)), s


def user_claims(ctx: Context, **changes: Any) -> dict[str, Any]:
    _, claims, _ = parts(ctx.tokens["user"])
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def gw_sign(ctx: Context, claims: dict[str, Any], **header: Any) -> str:
    key = ctx.gateway_key()
    return jwt.encode(
        claims,
        key.private,
        algorithm="RS256",
        headers={"kid": key.kid, "typ": "gw-user+jwt", **header},
    )


def public_pem(ctx: Context) -> bytes:
    public: Any = ctx.gateway_key().public
    return public.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(ctx: Context) -> bytes:
    public: Any = ctx.gateway_key().public
    return public.public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def confusion(secret_of: Callable[[Context], bytes]) -> Callable[[Context], str]:
    def build(ctx: Context) -> str:
        header = {"alg": "HS256", "typ": "gw-user+jwt", "kid": ctx.gateway_key().kid}
        return raw(header, user_claims(ctx), hs(secret_of(ctx)))

    return build


def none_alg(spelling: str, keep_signature: bool = False) -> Callable[[Context], str]:
    def build(ctx: Context) -> str:
        header = {"alg": spelling, "typ": "gw-user+jwt", "kid": ctx.gateway_key().kid}
        forged = raw(header, user_claims(ctx, sub="usr_a"))
        if keep_signature:
            forged = forged[: -0 or None] + ctx.tokens["user"].split(".")[2]
        return forged

    return build


def attacker_key_header(kind: str) -> Callable[[Context], str]:
    """A token signed with the attacker's own key, telling the verifier where that key is."""

    def build(ctx: Context) -> str:
        private = generate_private_key("RS256")
        public: Any = private.public_key()
        jwk = json.loads(RSAAlgorithm.to_jwk(public))
        extra: dict[str, Any] = {
            "jku": {"jku": ctx.canary_url + "/jwks.json"},
            "x5u": {"x5u": ctx.canary_url + "/cert.pem"},
            "jwk": {"jwk": jwk},
            "x5c": {"x5c": [b64(b"not really a certificate")]},
        }[kind]
        return jwt.encode(
            user_claims(ctx),
            private,
            algorithm="RS256",
            headers={"kid": ctx.gateway_key().kid, "typ": "gw-user+jwt", **extra},
        )

    return build


def kid(value: Any) -> Callable[[Context], str]:
    def build(ctx: Context) -> str:
        header = {"alg": "HS256", "typ": "gw-user+jwt", "kid": value}
        return raw(header, user_claims(ctx), hs(b""))

    return build


def member(
    changes: dict[str, Any],
    header: dict[str, Any] | None = None,
    secret: Callable[[Context], bytes] | None = None,
) -> Callable[[Context], str]:
    def build(ctx: Context) -> str:
        claims = {"sub": "usr_a", "iat": ctx.now(), "exp": ctx.now() + 300, "scopes": []}
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        h = {"alg": "HS256", "kid": ctx.key_id, **(header or {})}
        key = secret(ctx) if secret else ctx.key.encode()
        return raw(h, claims, hs(key))

    return build


def team(header_changes: dict[str, Any], sign: str = "idp") -> Callable[[Context], str]:
    def build(ctx: Context) -> str:
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "p@example.test",
            "account": "acc_1",
            "iat": ctx.now(),
            "exp": ctx.now() + 300,
        }
        _, private = ctx.idp.keys["idp-1"]
        if sign == "hs-public":
            pem = private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return raw({"alg": "HS256", "kid": "idp-1", **header_changes}, claims, hs(pem))
        if sign == "none":
            return raw({"alg": "none", "kid": "idp-1", **header_changes}, claims)
        attacker = generate_private_key("RS256")
        return jwt.encode(
            claims, attacker, algorithm="RS256", headers={"kid": "idp-1", **header_changes}
        )

    return build


def variant(change: Callable[[str], str], of: str = "user") -> Callable[[Context], str]:
    return lambda ctx: change(ctx.tokens[of])


def duplicate_claim(ctx: Context) -> str:
    h, _, _ = parts(ctx.tokens["user"])
    body = json.dumps(user_claims(ctx))[:-1] + ', "sub": "usr_b"}'
    key = ctx.gateway_key()
    signing_input = f"{b64(json.dumps(h).encode())}.{b64(body.encode())}".encode()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = key.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(signature)}"


ATTACKS: dict[str, Callable[[Context], str]] = {
    # alg none, every spelling, with and without the original signature
    **{f"alg {s}": none_alg(s) for s in ("none", "None", "NONE", "nOnE")},
    "alg none keeping the signature": none_alg("none", keep_signature=True),
    # RS256 -> HS256 with the public key in every encoding
    "HS256 with the public key (PEM)": confusion(public_pem),
    "HS256 with the public key (PEM, stripped)": confusion(lambda c: public_pem(c).strip()),
    "HS256 with the public key (DER)": confusion(public_der),
    "HS256 with the public key (base64 DER)": confusion(lambda c: base64.b64encode(public_der(c))),
    "HS256 with the public key (JWK)": confusion(
        lambda c: RSAAlgorithm.to_jwk(c.gateway_key().public).encode()
    ),
    "HS256 with an empty key": confusion(lambda c: b""),
    # signatures
    "empty signature": variant(lambda t: t.rsplit(".", 1)[0] + "."),
    "zeroed signature": variant(lambda t: t.rsplit(".", 1)[0] + "." + b64(bytes(256))),
    "truncated signature": variant(lambda t: t[:-10]),
    # kid
    **{
        f"kid {v!r}"[:60]: kid(v)
        for v in (
            "../../../../../../dev/null",
            "/dev/null",
            "rs1/../rs1",
            "rs1' OR '1'='1",
            "rs1\r\nX-Injected: 1",
            "*",
            1,
            ["rs1"],
            {"a": 1},
            None,
            "k" * 4000,
        )
    },
    # keys offered by the token itself: the canary must receive nothing
    "jku header": attacker_key_header("jku"),
    "x5u header": attacker_key_header("x5u"),
    "jwk header": attacker_key_header("jwk"),
    "x5c header": attacker_key_header("x5c"),
    # headers and forms
    "crit header on a validly signed token": lambda c: gw_sign(
        c, user_claims(c), crit=["exp"], exp=1
    ),
    "nested JWT (cty)": lambda c: gw_sign(c, user_claims(c), cty="JWT"),
    "JWE compact form": lambda c: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.YQ.YQ.YQ.YQ",
    "duplicate sub in a validly signed payload": duplicate_claim,
    # encodings of the same token
    "padding appended": variant(lambda t: t + "="),
    "padding inside": variant(lambda t: t.replace(".", "=.", 1)),
    "standard base64 alphabet": variant(
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+"
    ),
    "whitespace inside": variant(lambda t: t[:20] + " " + t[20:]),
    # claims of wrong types, missing, future (validly signed by the gateway's key)
    "sub a number": lambda c: gw_sign(c, user_claims(c, sub=7)),
    "exp a string": lambda c: gw_sign(c, user_claims(c, exp=str(c.now() + 60))),
    "exp a float": lambda c: gw_sign(c, user_claims(c, exp=c.now() + 60.5)),
    "no exp": lambda c: gw_sign(c, {k: v for k, v in user_claims(c).items() if k != "exp"}),
    "no tkn": lambda c: gw_sign(c, user_claims(c, tkn=None)),
    "iat in the future": lambda c: gw_sign(
        c, user_claims(c, iat=c.now() + 600, exp=c.now() + 1200)
    ),
    "nbf in the future": lambda c: gw_sign(c, user_claims(c, nbf=c.now() + 600)),
    "wrong audience": lambda c: gw_sign(c, user_claims(c, aud="someone-else")),
    "wrong issuer": lambda c: gw_sign(c, user_claims(c, iss="evil")),
    # member tokens
    "member: alg none": lambda c: raw(
        {"alg": "none", "kid": c.key_id}, {"sub": "usr_a", "iat": c.now(), "exp": c.now() + 60}
    ),
    "member: signed with another secret": member({}, secret=lambda c: b"x" * 64),
    "member: HS512": member({}, header={"alg": "HS512"}),
    "member: kid traversal": member({}, header={"kid": "key_../../etc/passwd"}),
    "member: crit": member({}, header={"crit": ["b64"], "b64": False}),
    "member: jku": lambda c: member({}, header={"jku": c.canary_url + "/jwks.json"})(c),
    "member: scopes an object": member({"scopes": {"sleep": "read"}}),
    "member: exp far away": member({"exp": 2**62}),
    # team sessions
    "team: HS256 with the provider's public key": team({}, sign="hs-public"),
    "team: alg none": team({}, sign="none"),
    "team: attacker key offered as jwk": lambda c: team(
        {
            "jwk": json.loads(
                RSAAlgorithm.to_jwk(cast(Any, generate_private_key("RS256")).public_key())
            )
        }
    )(c),
    "team: attacker key at jku": lambda c: team({"jku": c.canary_url + "/jwks.json"})(c),
    "team: attacker key, known kid": team({}),
}


@pytest.fixture
async def ctx(
    make_gateway: GatewayFactory, aiohttp_server: Any, upstream: tuple[Any, TestServer]
) -> Context:
    canary: list[str] = []

    async def record(request: web.Request) -> web.Response:
        canary.append(request.path)
        return web.json_response({"keys": []})

    canary_app = web.Application()
    canary_app.router.add_route("*", "/{tail:.*}", record)
    canary_server = await aiohttp_server(canary_app)
    idp = IdentityProvider()
    idp_server = await aiohttp_server(idp.app())
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            identity_providers=[
                {
                    "name": "corp",
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_url": str(idp_server.make_url("/.well-known/jwks.json")),
                }
            ],
        )
    )
    key, record_ = await gw.runtime.keys.create("acc_1", "live")
    response = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_a"}, headers={"Authorization": f"Bearer {key}"}
    )
    user = (await response.json())["token"]
    gw.recorder.seen.clear()
    return Context(
        gw,
        canary,
        base_url(canary_server),
        key,
        record_.key_id,
        idp,
        {"user": user},
    )


async def test_the_genuine_tokens_work(ctx: Context) -> None:
    """The control: without it, every refusal below could be a broken fixture."""
    for token in (ctx.tokens["user"], member({})(ctx), ctx.idp.token(now=ctx.now())):
        response = await ctx.gw.client.get(SCORES, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
    assert len(ctx.gw.recorder.seen) == 3


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_forged_token_is_refused(ctx: Context, name: str) -> None:
    forged = ATTACKS[name](ctx)
    response = await ctx.gw.client.get(SCORES, headers={"Authorization": f"Bearer {forged}"})
    body = await response.json()
    assert (response.status, body["error"]) in ((401, "invalid_token"), (401, "token_expired")), (
        name,
        body,
    )
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ctx.gw.recorder.seen == [], name
    assert ctx.canary == [], name


async def test_revoked_and_used_tokens_stay_dead_in_every_encoding(ctx: Context) -> None:
    gw = ctx.gw
    auth = {"Authorization": f"Bearer {ctx.key}"}
    mobile = (
        await (
            await gw.client.post("/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=auth)
        ).json()
    )["token"]
    assert (
        await gw.client.post("/v1/sdk/initialize", headers={"Authorization": f"Bearer {mobile}"})
    ).status == 200
    user = ctx.tokens["user"]
    await gw.runtime.keys.revoke(ctx.key_id)
    gw.clock.advance(1)
    for token in (
        mobile,
        mobile + "=",
        mobile + "%3D",
        user,
        user + "=",
        user + "==",
        user.replace(".", "=.", 1),
    ):
        for path in ("/v1/sdk/initialize", SCORES):
            response = (
                await gw.client.post(path, headers={"Authorization": f"Bearer {token}"})
                if path.endswith("initialize")
                else await gw.client.get(path, headers={"Authorization": f"Bearer {token}"})
            )
            assert response.status == 401, (token[-6:], path)
    assert [s.path for s in gw.recorder.seen].count(SCORES) == 0


@pytest.mark.parametrize("value", [1, ["rs1"], {"a": 1}, None])
async def test_a_kid_that_is_not_a_string_is_malformed(
    ctx: Context, value: object, log_lines: io.StringIO
) -> None:
    """A kid is looked up only as a string: any other JSON value is a malformed token (not an
    error the verifier did not foresee)."""
    token = kid(value)(ctx)
    response = await ctx.gw.client.get(SCORES, headers={"Authorization": f"Bearer {token}"})
    assert (response.status, (await response.json())["details"]) == (401, {"reason": "malformed"})
    assert "unforeseen" not in log_lines.getvalue()
