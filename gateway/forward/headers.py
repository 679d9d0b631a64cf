"""Which request and response headers cross the gateway (RFC 9110 §7.6.1)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import ForbiddenHeader, InvalidRequest
from gateway.observe.redact import looks_secret

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "http2-settings",
    }
)
# Set by the gateway from what it knows, or dropped: a client's copy is never trusted (kept only
# with trust_forwarded, where the proxy in front sets them).
FORWARDED = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
    }
)
# Headers a backend or its framework may take as the request's real method or target:
# method-override middleware (Express, Laravel, Symfony, ASP.NET) and URL rewriting (IIS,
# Symfony's X-Original-URL and X-Rewrite-URL). The policy judged the method and target of the
# request line, so a client's copy could make the backend act on another: a GET allowed, a
# DELETE done. Refused in both modes (decision mode: :func:`refuse_overrides`); in proxy mode
# ``X-Original-URL`` too (decision mode reads it from ingress-nginx, :mod:`.decision`).
# Names as canonical() spells them: any case, and '_' for '-' (a CGI-style backend reads
# X_HTTP_Method_Override as X-HTTP-Method-Override).
OVERRIDES = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override", "x-rewrite-url"}
)
WITH_ORIGINAL_URL = OVERRIDES | {"x-original-url"}
# Recomputed by aiohttp's client for the upstream.
RECOMPUTED = frozenset({"host", "expect", "content-length"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}\Z")


def canonical(name: str) -> str:
    """Header names compared the way a lenient backend might read them: case-insensitively and
    with ``_`` equal to ``-`` (several servers and CGI-style frameworks fold them)."""
    return name.lower().replace("_", "-")


def connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", []):
        tokens.update(canonical(t.strip()) for t in value.split(",") if t.strip())
    return tokens


def request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    owned: frozenset[str],
    forward_authorization: bool,
    trust_forwarded: bool,
) -> CIMultiDict[str]:
    """The client's headers less hop-by-hop ones, those its ``Connection`` names, the
    gateway-owned identity headers in any spelling, and (unless configured) ``Authorization``.

    The identity headers are added afterwards by the caller, so naming them in ``Connection``
    cannot make the gateway drop its own copies.
    """
    drop = HOP_BY_HOP | RECOMPUTED | connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        key = canonical(name)
        # SECURITY: the policy judged the request line's method and target, not this header's
        # (refused even when Connection names it: the client still sent it).
        if key in WITH_ORIGINAL_URL:
            raise _override(key)
        # SECURITY: spoofed identity headers are removed in every case and with '_' for '-'.
        if key in owned or key in drop:
            continue
        if key in FORWARDED and not trust_forwarded:
            continue
        if key == "authorization" and not forward_authorization:
            continue
        if not value.isascii() and not _encodable(value):
            # Bytes aiohttp's pure-Python parser could not decode (kept as surrogates): they
            # cannot be sent on, and are the client's bad input, not a 500.
            raise InvalidRequest(
                "A header value is not valid.", details={"reason": "header", "header": key}
            )
        out.add(name, value)
    return out


def refuse_overrides(headers: CIMultiDictProxy[str], names: frozenset[str] = OVERRIDES) -> None:
    """Raise :class:`ForbiddenHeader` when the request carries one of ``names`` (see
    :data:`OVERRIDES`), in any case and with '_' for '-', as :func:`request_headers` reads
    them in proxy mode."""
    # A request whose header names hold none of the words these names are made of (nearly
    # every one) is passed after a few substring searches in C (a regex took twice as long).
    sent = "\n".join(headers.keys()).lower()
    if not (
        "override" in sent
        or "http-method" in sent
        or "http_method" in sent
        or "rewrite" in sent
        or "original-url" in sent
        or "original_url" in sent
    ):
        return
    for key in headers:
        name = canonical(key)
        # An X-Original-URL spelled with '_' is never a proxy's own (they write '-'), so it is
        # a client's, even behind ingress-nginx, whose own the '-' spelling is.
        if name in names or (name == "x-original-url" and "_" in key):
            raise _override(name)


def _override(name: str) -> ForbiddenHeader:
    # SECURITY: a backend could act on another method or target than the one authorized.
    return ForbiddenHeader(
        f"The {name} header is not accepted: send the method and target themselves.",
        details={"reason": "override_header", "header": name},
    )


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def response_headers(incoming: CIMultiDictProxy[str]) -> Iterable[tuple[str, str]]:
    drop = HOP_BY_HOP | connection_tokens(incoming)
    return [(k, v) for k, v in incoming.items() if canonical(k) not in drop]


def request_id(incoming: str | None, generate: str, authorization: str = "") -> str:
    """Propagate a well-formed ``X-Request-Id``; replace anything else.

    The id is written to every access and audit line and echoed to the client, so one that is
    shaped like a credential, or that is (part of) the request's own credential whatever its
    shape (an opaque OAuth2 token), is replaced too: those lines stay secret-free by
    construction.
    """
    # SECURITY: a key or token sent as a request id would otherwise be logged and echoed.
    if (
        incoming is not None
        and _REQUEST_ID.match(incoming)
        and not looks_secret(incoming)
        and (len(incoming) < 8 or incoming not in authorization)
    ):
        return incoming
    return generate


def forwarded_host(host: str | None) -> str | None:
    return host if host is not None and _HOST.match(host) else None


def request_head(method: str, target: str, fixed: str, headers: CIMultiDict[str]) -> bytes:
    """The request line and header block sent upstream; ``fixed`` holds the gateway's own lines
    (``Host``, the body's framing) already in their wire form, ``Name: value\\r\\n``.

    Raises :class:`InvalidRequest` for a name or value that cannot be sent as it is: one that is
    not UTF-8 encodable, or that holds CR, LF or NUL.
    """
    block = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    lines = len(headers)
    # SECURITY: a CR, LF or NUL inside a name, a value or the target would end a line early
    # and smuggle a header, or a second request, to the upstream: every line must be exactly
    # one of the headers. (aiohttp's parser refuses them from clients; identity values come
    # from credentials.)
    if (
        block.count("\n") != lines
        or block.count("\r") != lines
        or "\0" in block
        or not _clean_target(target)
    ):
        raise InvalidRequest("A header value is not valid.", details={"reason": "header"})
    try:
        return f"{method} {target} HTTP/1.1\r\n{fixed}{block}\r\n".encode()
    except UnicodeEncodeError:
        raise InvalidRequest("A header value is not valid.", details={"reason": "header"}) from None


def _clean_target(target: str) -> bool:
    return not any(c in target for c in " \r\n\0")
