from __future__ import annotations

import base64
import json
import re

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from gateway import credentials
from gateway.authn.sdk_session import MARKERS as SDK
from gateway.authn.user_token import MARKERS as USER
from gateway.credentials import ASSERTION_TYP, Credential, _bearer, _visible, extract
from gateway.errors import GatewayError, InvalidRequest, InvalidToken
from gateway.principal import CredentialKind
from tests.kinds import K, classify

USER_TOKEN_TYP, SDK_SESSION_TYP = USER.typ, SDK.typ

KEY = "sk_live_" + "a1B2" * 10 + "xyz"
SANDBOX = "sk_sandbox_" + "Q" * 43
TEST = "sk_test_" + "z" * 43
MOBILE = "mt_" + "m" * 43


def headers(*values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict([("Authorization", v) for v in values]))


NOQ: MultiDictProxy[str] = MultiDictProxy(MultiDict())


def present(request_headers: CIMultiDictProxy[str]) -> Credential | None:
    """What the pipeline does: extract the token, then tell its kind by shape."""
    found = extract(request_headers, NOQ, max_bytes=8192)
    return classify(found) if found is not None else None


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token(header: dict[str, object]) -> str:
    return jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers=header)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (f"Bearer {KEY}", K.API_KEY),
        (f"bearer {SANDBOX}", K.API_KEY),
        (f"BEARER   {SANDBOX}", K.API_KEY),
        (f"Bearer {TEST}", K.API_KEY),
        (basic(KEY), K.API_KEY),
        (f"Bearer {MOBILE}", K.MOBILE_TOKEN),
        (f"Bearer {token({'typ': USER_TOKEN_TYP, 'kid': 'gw1'})}", K.USER_TOKEN),
        (f"Bearer {token({'typ': SDK_SESSION_TYP, 'kid': 'gw1'})}", K.SDK_SESSION),
        (f"Bearer {token({'kid': 'key_' + 'a' * 24})}", K.MEMBER_TOKEN),
        (f"Bearer {token({'kid': 'idp-key-1'})}", K.TEAM_SESSION),
    ],
)
def test_kind_is_told_by_shape(value: str, kind: CredentialKind) -> None:
    found = present(headers(value))
    assert found is not None and found.kind is kind


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("Bearer", InvalidToken),
        ("Bearer ", InvalidToken),
        ("Token " + KEY, InvalidToken),
        ("Bearer sk_live_short", InvalidToken),
        ("Bearer sk_prod_" + "a" * 43, InvalidToken),
        ("Bearer mt_short", InvalidToken),
        ("Bearer a.b", InvalidToken),
        ("Bearer " + token({"typ": USER_TOKEN_TYP}) + "=", InvalidToken),
        ("Bearer " + token({"typ": USER_TOKEN_TYP}).replace("-", "+"), InvalidToken),
        ("Bearer " + token({"typ": ASSERTION_TYP}), InvalidToken),
        ("Bearer " + "e30.e30.", InvalidToken),
        (basic(KEY, "password"), InvalidToken),
        (basic("someone"), InvalidToken),
        ("Basic !!!", InvalidToken),
        ("Bearer " + KEY + " extra", InvalidToken),
        ("Bearer\t" + KEY, InvalidToken),
        (" Bearer " + KEY, InvalidToken),
        ("Bearer " + KEY + "\u00e9", InvalidToken),
        ("Bearer " + "x" * 9000, InvalidToken),
    ],
)
def test_malformed_credentials_are_401(value: str, error: type[GatewayError]) -> None:
    with pytest.raises(error):
        present(headers(value))


def test_no_header_is_no_credential() -> None:
    assert extract(headers(), NOQ, max_bytes=8192) is None


def test_a_bearer_token_is_visible_ascii_as_the_regex_said() -> None:
    """_bearer checks ``[\x21-\x7e]+`` without that regex: the same verdict for every code
    point, alone, inside a token, at either end, and for an empty token; and the same again
    for a token it has seen (memoized)."""
    shape = re.compile(r"[\x21-\x7e]+")
    assert _bearer("Bearer ") is None and not _visible("")
    for point in range(0x110000):
        c = chr(point)
        for token in (c, f"ab{c}cd", f"{c}xyz", f"xyz{c}", c * 3):
            expected = bool(shape.fullmatch(token))
            assert _visible(token) is expected, hex(point)
            found = token.lstrip(" ") if shape.fullmatch(token.lstrip(" ")) else None
            assert _bearer("Bearer " + token) == found, hex(point)
            assert _bearer("Bearer " + token) == found, hex(point)


def test_the_memo_of_visible_tokens_is_bounded() -> None:
    for i in range(credentials._VISIBLE_SEEN_MAX * 2 + 1):
        assert _bearer(f"Bearer t{i}") == f"t{i}"
    assert len(credentials._VISIBLE_SEEN) <= credentials._VISIBLE_SEEN_MAX
    long = "a" * (credentials.MEMO_MAX_CHARS + 1)
    assert _bearer("Bearer " + long) == long and long not in credentials._VISIBLE_SEEN
    assert _bearer("Bearer t1\x00") is None and _bearer("Bearer t\x7f") is None


def test_two_authorization_headers_are_400() -> None:
    with pytest.raises(InvalidRequest):
        extract(headers(f"Bearer {KEY}", f"Bearer {KEY}"), NOQ, max_bytes=8192)


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c3JfYSJ9." + "s" * 40


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("access_token", KEY),
        ("ACCESS_TOKEN", "anything"),
        ("api_key", KEY),
        ("token", SANDBOX),
        ("key", TEST),
        ("t", MOBILE),
        ("jwt", JWT),
        (KEY, ""),  # a key as a bare parameter name
        ("note", f"abc{KEY}xyz"),  # inside a longer value
        ("q", f"Bearer {KEY}"),
    ],
)
def test_a_credential_in_the_query_is_400_under_any_name(name: str, value: str) -> None:
    """It would reach the backend's logs with the URL; the Authorization header is the place."""
    with pytest.raises(InvalidRequest) as refused:
        extract(headers(), MultiDictProxy(MultiDict({name: value})), max_bytes=8192)
    assert refused.value.details["reason"] == "token_in_query"


@pytest.mark.parametrize(
    "value", ["7", "sk_other", "mt_everest", "eyJpbmZvIjoxfQ", "a.b.c", "sk_live"]
)
def test_query_values_that_are_no_credential_pass(value: str) -> None:
    query = MultiDictProxy(MultiDict({"days": value, "cursor": value}))
    assert extract(headers(f"Bearer {KEY}"), query, max_bytes=8192) == KEY


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Compact JWS shapes whose header is anything: random bytes (not UTF-8, not JSON), JSON that is
# not an object, or an object with odd members. Random text alone almost never has this shape.
JWS_LIKE = st.builds(
    lambda header, payload: f"{header}.{b64url(payload)}.c2lnbmF0dXJl",
    st.one_of(
        st.binary(min_size=2, max_size=40).map(b64url),
        JSON_VALUES.map(lambda v: b64url(json.dumps(v).encode())),
    ),
    st.binary(min_size=2, max_size=40),
)


@given(st.one_of(st.text(max_size=300), JWS_LIKE))
def test_extraction_never_fails_unexpectedly(value: str) -> None:
    request_headers = headers("Bearer " + value)  # built first: only extract() is under test
    try:
        found = present(request_headers)
    except GatewayError:
        return
    # Anything else raised (a ValueError from a decoder included) fails the test: it would be
    # a 500 for a client's bytes. What was accepted is exactly the token that was sent.
    assert found is not None and found.value == value.lstrip(" ")


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
    )
)
def test_classify_is_total_and_consistent(value: str) -> None:
    try:
        found = classify(value)
    except InvalidToken:
        return
    if found.kind is K.API_KEY:
        assert value.startswith(("sk_live_", "sk_sandbox_", "sk_test_"))
    elif found.kind is K.MOBILE_TOKEN:
        assert value.startswith("mt_")
    else:
        assert value.count(".") == 2 and "=" not in value


def test_jws_kinds_are_memoized_within_bounds() -> None:
    from gateway.credentials import MEMO_MAX_CHARS, _memo_jws

    _memo_jws.cache_clear()
    user = token({"typ": USER_TOKEN_TYP})
    assert classify(user) == classify(user)
    assert _memo_jws.cache_info().hits == 1
    # Past the length bound a token is classified every time and never held.
    long = token({"typ": SDK_SESSION_TYP, "pad": "p" * MEMO_MAX_CHARS})
    assert classify(long).kind is K.SDK_SESSION
    assert _memo_jws.cache_info().currsize == 1
    # A refused kind is refused again: errors are never memoized.
    assertion = token({"typ": ASSERTION_TYP})
    for _ in range(2):
        with pytest.raises(InvalidToken):
            classify(assertion)
    # SECURITY: bounded, however many distinct tokens arrive.
    for i in range(5000):
        classify(token({"kid": f"key_{i:024d}"}))
    assert _memo_jws.cache_info().currsize <= 1024


def test_a_memoized_header_cannot_be_changed_by_a_verifier() -> None:
    user = token({"typ": USER_TOKEN_TYP, "kid": "gw1"})
    header = classify(user).header
    assert header is not None and header["kid"] == "gw1"
    with pytest.raises(TypeError):
        header["kid"] = "other"  # type: ignore[index]
    assert classify(user).header == {"typ": USER_TOKEN_TYP, "kid": "gw1", "alg": "HS256"}
