"""Header handling, as properties: whatever a client sends, no identity header of its own
survives, nothing hop-by-hop crosses, and everything else does."""

from __future__ import annotations

import pytest
from aiohttp.http_parser import SINGLETON_HEADERS
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import HeaderNames
from gateway.errors import ForbiddenHeader, InvalidRequest
from gateway.forward.headers import (
    FORWARDED,
    HOP_BY_HOP,
    OVERRIDES,
    WITH_ORIGINAL_URL,
    canonical,
    refuse_overrides,
    request_head,
    request_headers,
    request_id,
)

OWNED = frozenset(canonical(h) for h in HeaderNames().identity())
TOKEN_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def spellings(name: str) -> st.SearchStrategy[str]:
    """The name in any case, with any '-' possibly written '_'."""
    return st.tuples(
        *[st.sampled_from([c.lower(), c.upper()] if c != "-" else ["-", "_"]) for c in name]
    ).map("".join)


owned_spelled = st.sampled_from(sorted(OWNED)).flatmap(spellings)
names = st.one_of(
    owned_spelled,
    st.text(TOKEN_CHARS, min_size=1, max_size=20),
    st.sampled_from(sorted(HOP_BY_HOP)).flatmap(spellings),
)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@given(
    st.lists(st.tuples(names, values), max_size=20),
    st.lists(st.one_of(owned_spelled, st.text(TOKEN_CHARS, min_size=1, max_size=12)), max_size=5),
)
def test_no_owned_or_hop_by_hop_header_survives(
    headers: list[tuple[str, str]], connection: list[str]
) -> None:
    incoming = CIMultiDict(headers)
    if connection:
        incoming.add("Connection", ", ".join(connection))
    out = request_headers(
        CIMultiDictProxy(incoming), owned=OWNED, forward_authorization=False, trust_forwarded=False
    )
    # Every Connection header names hop-by-hop headers, the generated ones included.
    named = {
        canonical(token.strip())
        for name, value in incoming.items()
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }
    for name in out:
        key = canonical(name)
        assert key not in OWNED
        assert key not in HOP_BY_HOP
        assert key not in named
        assert key != "authorization"
    # Everything else crosses unchanged.
    for name, value in headers:
        key = canonical(name)
        if (
            key in OWNED
            or key in HOP_BY_HOP
            or key in named
            or key in ("authorization", "host", "expect", "content-length")
            or key in FORWARDED  # set by the gateway, from what it knows
        ):
            continue
        assert value in out.getall(name)


OVERRIDE_NAMES = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-rewrite-url",
    "x-original-url",
]


@given(st.sampled_from(OVERRIDE_NAMES).flatmap(spellings), values)
def test_a_header_a_backend_takes_as_the_method_or_target_is_refused(name: str, value: str) -> None:
    """Whatever its case and '_' for '-' (a CGI-style backend reads both alike)."""
    incoming = CIMultiDictProxy(CIMultiDict([("Accept", "*/*"), (name, value)]))
    for trusted in (False, True):
        with pytest.raises(ForbiddenHeader) as refused:
            request_headers(
                incoming, owned=OWNED, forward_authorization=False, trust_forwarded=trusted
            )
        assert refused.value.details == {
            "reason": "override_header",
            "header": canonical(name),
        }


@given(st.sampled_from(OVERRIDE_NAMES).flatmap(spellings), values, st.booleans())
def test_decision_mode_refuses_the_same_headers_in_every_spelling(
    name: str, value: str, with_original_url: bool
) -> None:
    """Decision mode's check (the front proxy passes the header on to the backend) reads names
    as proxy mode does: a '_' for a '-' passed it, and Traefik and Envoy pass such names on."""
    incoming = CIMultiDictProxy(CIMultiDict([("X-Original-URI", "/"), (name, value)]))
    names = WITH_ORIGINAL_URL if with_original_url else OVERRIDES
    if canonical(name) not in names and "_" not in name:
        refuse_overrides(incoming, names)  # ingress-nginx's own X-Original-URL, with '-' only
        return
    with pytest.raises(ForbiddenHeader) as refused:
        refuse_overrides(incoming, names)
    assert refused.value.details == {"reason": "override_header", "header": canonical(name)}


@pytest.mark.parametrize("connection", ["X-HTTP-Method-Override", "close, x_original_url"])
def test_naming_one_in_connection_does_not_pass_it(connection: str) -> None:
    """It would be dropped as hop-by-hop, but the client sent it: refused all the same."""
    name = connection.rsplit(", ", 1)[-1]
    incoming = CIMultiDictProxy(CIMultiDict([("Connection", connection), (name, "DELETE")]))
    with pytest.raises(ForbiddenHeader):
        request_headers(incoming, owned=OWNED, forward_authorization=False, trust_forwarded=False)


def test_decision_mode_passes_a_request_without_them() -> None:
    incoming = CIMultiDictProxy(
        CIMultiDict(
            [("X-Original-URI", "/x"), ("X-Original-Method", "GET"), ("X-Forwarded-Uri", "/x")]
        )
    )
    refuse_overrides(incoming, WITH_ORIGINAL_URL)


@pytest.mark.parametrize(
    "name", ["X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Scheme", "X-Forwarded-Ssl"]
)
def test_a_clients_forwarding_headers_cross_only_when_trusted(name: str) -> None:
    incoming = CIMultiDictProxy(CIMultiDict([(name, "x"), ("Accept", "*/*")]))
    for trusted in (False, True):
        out = request_headers(
            incoming, owned=OWNED, forward_authorization=False, trust_forwarded=trusted
        )
        assert out.get(name) == ("x" if trusted else None)


@given(st.text(max_size=200))
def test_request_ids_are_propagated_only_when_well_formed(incoming: str) -> None:
    chosen = request_id(incoming, "generated")
    assert chosen in (incoming, "generated")
    if chosen == incoming:
        assert 1 <= len(incoming) <= 128 and all(
            c.isascii() and (c.isalnum() or c in "._:-") for c in incoming
        )


HOST = "Host: up:8080\r\n"


def parsed(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """The request line and headers the upstream's parser (aiohttp's C one) reads in ``head``."""
    import asyncio
    from unittest import mock

    from aiohttp.base_protocol import BaseProtocol
    from aiohttp.http_parser import HttpRequestParser

    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(mock.Mock(spec=BaseProtocol), loop, 2**16)
        messages, _, _ = parser.feed_data(head)
    finally:
        loop.close()
    assert len(messages) == 1
    message = messages[0][0]
    return message.method, message.path, list(message.headers.items())


@pytest.mark.parametrize(
    ("name", "value", "target"),
    [
        ("X-Auth-User-Id", "usr_a\r\nX-Auth-Scopes: admin", "/x"),
        ("X-Auth-User-Id", "usr_a\nX-Auth-Scopes: admin", "/x"),
        ("X-Auth-User-Id", "usr_a\rX-Auth-Scopes: admin", "/x"),
        ("X-Auth-User-Id", "usr_a\0", "/x"),
        ("X-Evil\r\nX-Auth-Scopes", "admin", "/x"),
        ("X-Auth-User-Id", "usr_a", "/x HTTP/1.1\r\nHost: a\r\n\r\nGET /admin"),
        ("X-Auth-User-Id", "usr_a", "/x y"),
        ("X-Auth-User-Id", "\udcff", "/x"),
    ],
    ids=[
        "crlf",
        "lf",
        "cr",
        "nul",
        "crlf-in-name",
        "request-in-target",
        "space-in-target",
        "not-encodable",
    ],
)
def test_a_head_that_would_not_mean_what_it_says_is_refused(
    name: str, value: str, target: str
) -> None:
    # SECURITY: a value that would end its line early smuggles a header or a request upstream.
    with pytest.raises(InvalidRequest):
        request_head("GET", target, HOST, CIMultiDict([("Accept", "*/*"), (name, value)]))


header_values = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
)


plain_names = st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda n: canonical(n) not in {"host", "content-length", "transfer-encoding"}
)


def _no_singleton_twice(headers: list[tuple[str, str]]) -> bool:
    """aiohttp's parsers refuse a second Content-Type, User-Agent, … (SINGLETON_HEADERS): on
    the gateway's own listener such a request is a 400 before anything is forwarded, and as
    the oracle here it would refuse the head for that reason alone."""
    names = [name.lower() for name, _ in headers if name.lower() in SINGLETON_HEADERS]
    return len(names) == len(set(names))


@given(st.lists(st.tuples(plain_names, header_values), max_size=20).filter(_no_singleton_twice))
def test_the_upstream_reads_exactly_the_headers_sent(headers: list[tuple[str, str]]) -> None:
    head = request_head("POST", "/v1/x?a=1", HOST + "Content-Length: 0\r\n", CIMultiDict(headers))
    method, path, seen = parsed(head)
    assert (method, path) == ("POST", "/v1/x?a=1")
    # Names compare without case (the parser gives well-known ones their usual spelling).
    assert [(k.lower(), v) for k, v in seen] == [
        ("host", "up:8080"),
        ("content-length", "0"),
        *[(k.lower(), v) for k, v in headers],
    ]
