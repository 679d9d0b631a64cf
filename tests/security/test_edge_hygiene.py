"""No secret in any log line, no 5xx and no non-JSON answer from any byte a client sends.

Real gateway processes (aiohttp's C parser and its pure-Python parser), a recording upstream,
raw sockets. Every request of the corpus carries a known live API key somewhere in its bytes;
afterwards everything the process wrote (stdout and stderr, through a reload and a shutdown) is
read back: each line must be one JSON object and the key must appear nowhere.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import (
    GatewayProcess,
    ThreadedUpstream,
    admin_create_key,
    env_with,
    free_port,
    iter_lines,
    raw_http,
    status_of,
    wait_for_port,
    write_config,
)

SCORES = "/v1/users/usr_a/scores"
POLICY = {
    "routes": [
        {
            "id": "read",
            "methods": ["GET"],
            "paths": ["/v1/users/{user_id}/scores"],
            "allow": ["api_key"],
        },
        {"id": "write", "methods": ["POST"], "paths": ["/v1/users"], "allow": ["api_key"]},
    ]
}


class Edge:
    """A gateway process, and the listener the bytes go to: the public one, or the decision
    listener (``decision_port``), where a request for ``/v1/…`` becomes a decision about it
    (``/decisions/v1/…``, Envoy's style) and nothing is ever forwarded."""

    def __init__(
        self,
        proc: GatewayProcess,
        upstream: ThreadedUpstream,
        key: str,
        decision_port: int | None = None,
    ) -> None:
        self.proc, self.upstream, self.key = proc, upstream, key
        self.decision_port = decision_port
        self.port = decision_port or proc.port

    async def send(self, data: bytes, *, then: bytes = b"") -> bytes:
        if self.decision_port is not None:
            data = data.replace(b" /v1/", b" /decisions/v1/", 1)
        if not then:
            return await raw_http(self.port, data, read_timeout=1.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(0.2)  # the headers are parsed and the handler runs first
        writer.write(then)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(65536), 2.0)
        finally:
            writer.close()


def decision_section(param: str) -> tuple[dict[str, Any], int | None]:
    """The ``decision`` section for a parameter, and the decision listener's port (None: the
    bytes go to the public listener, whose decisions are asked as nginx asks). The decision
    listener is asked as Envoy asks (:meth:`Edge.send` moves ``/v1/…`` below the prefix)."""
    if param != "decision-listener":
        return {"enabled": True, "proxy": "nginx"}, None
    port = free_port()
    return {"enabled": True, "proxy": "envoy", "listen": {"host": "127.0.0.1", "port": port}}, port


@pytest.fixture(scope="module", params=["c-parser", "python-parser", "decision-listener"])
def edge(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream_thread: ThreadedUpstream,
) -> Iterator[Edge]:
    decision, decision_port = decision_section(request.param)
    proc = write_config(
        tmp_path_factory.mktemp("edge"),
        upstream_thread.url,
        extra={"policy": POLICY, "decision": decision},
    )
    proc.start(env_with(AIOHTTP_NO_EXTENSIONS="1") if request.param == "python-parser" else None)
    try:
        if decision_port is not None:
            wait_for_port(decision_port)
        yield Edge(proc, upstream_thread, admin_create_key(proc, "acc_1"), decision_port)
    finally:
        proc.stop()


def _allowed_decision(edge: Edge, raw: bytes) -> bool:
    """An allowed decision is a 200 with the identity headers and no body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return (
        edge.decision_port is not None
        and status_of(raw) == 200
        and b"\r\nX-Auth-Account: acc_1\r\n" in head
        and body == b""
    )


def _answer(raw: bytes) -> tuple[int, dict[str, object] | None]:
    body = raw.partition(b"\r\n\r\n")[2]
    status = status_of(raw)
    try:
        document = json.loads(body) if body else None
    except ValueError:
        document = None
    return status, document if isinstance(document, dict) else None


# Each case: (name, request bytes with {key} where the live key goes).
MALFORMED = [
    (
        "space before colon",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer {key}\r\n\r\n",
    ),
    (
        "control char in value",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer {key}\x01\r\n\r\n",
    ),
    (
        "tab in name",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Author\tization: Bearer {key}\r\n\r\n",
    ),
    (
        "bad name char",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\nAuth(orization: Bearer {key}\r\n\r\n",
    ),
    (
        "line without colon",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\nBearer {key}\r\n\r\n",
    ),
    (
        "folded line",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\nX-A: b\r\n"
        b" Authorization: Bearer {key}\r\n\r\n",
    ),
    (
        "basic with bad name",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Authorization\x7f: Basic {basic}\r\n\r\n",
    ),
    ("key in request line", b"GET /{key} HTTP/1.1 x\r\nHost: x\r\n\r\n"),
    # No version: read as HTTP/0.9 with headers, judged and forwarded, its answer "HTTP/0.9 200".
    (
        "no HTTP version",
        b"GET " + SCORES.encode() + b"\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    (
        "HTTP/0.9",
        b"GET " + SCORES.encode() + b" HTTP/0.9\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    (
        "HTTP/1.2",
        b"GET " + SCORES.encode() + b" HTTP/1.2\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    (
        "HTTP/2.0",
        b"GET " + SCORES.encode() + b" HTTP/2.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    ("key as method", b"{key} " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    (
        "bad chunk size",
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "non-ascii chunk size",
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"\xd9\xa3\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "invalid utf-8 %FF",
        b"GET /v1/users/%FF/scores HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    (
        "overlong %C0%AF",
        b"GET /v1/users/%C0%AF/scores HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    (
        "surrogate %ED%A0%80",
        b"GET /v1/users/%ED%A0%80/scores HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer {key}\r\n\r\n",
    ),
    (
        "decision: invalid utf-8",
        b"GET /decisions HTTP/1.1\r\nHost: x\r\nX-Original-Method: GET\r\n"
        b"X-Original-URI: /v1/users/%FF/scores\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    (
        "decision: surrogate in path",
        b"GET /decisions/v1/users/%ED%A0%80/scores HTTP/1.1\r\n"
        b"Host: x\r\nAuthorization: Bearer {key}\r\n\r\n",
    ),
    (
        "control byte before the key",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Note: \x01{key}\r\n\r\n",
    ),
    (
        "key glued to the method",
        b"\x01{key} " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    (
        "key in a chunk size",
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nz{key}\r\n",
    ),
    (
        "decision: unparseable X-Original-URL",
        b"GET /decisions HTTP/1.1\r\nHost: x\r\nX-Original-URL: http://[zz]/x\r\n"
        b"Authorization: Bearer {key}\r\n\r\n",
    ),
    (
        "undecodable byte in the query",
        b"GET " + SCORES.encode() + b"?a=\xff HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer {key}\r\n\r\n",
    ),
    (
        "key as request id",
        b"GET " + SCORES.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"X-Request-Id: {key}\r\nAuthorization: Bearer sk_live_wrongwrongwrong\r\n\r\n",
    ),
]


def _fill(template: bytes, key: str) -> bytes:
    import base64

    basic = base64.b64encode(f"{key}:".encode())
    return template.replace(b"{key}", key.encode()).replace(b"{basic}", basic)


@pytest.mark.parametrize(("name", "template"), MALFORMED, ids=[n for n, _ in MALFORMED])
async def test_malformed_bytes_get_a_json_4xx_and_are_never_forwarded(
    edge: Edge, name: str, template: bytes
) -> None:
    before = len(edge.upstream.recorder.seen)
    raw = await edge.send(_fill(template, edge.key))
    status, document = _answer(raw)
    assert 400 <= status < 500, (name, raw[:300])
    assert document is not None and isinstance(document.get("error"), str), raw[:300]
    assert edge.key.encode() not in raw  # never echoed
    assert len(edge.upstream.recorder.seen) == before


# What the parsers quote after their words: a header line, a request line, one with a quote.
QUOTED = [
    "GET /v1/users HTTP/1.1\r\nHost: x\r\nX-Password: {secret}\x01\r\n\r\n",
    "GET /{secret} private HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /{secret}'s x HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET {secret} HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{secret}\r\n",
]


@pytest.mark.parametrize(
    "template", QUOTED, ids=["header", "request-line", "with-quote", "target", "chunk-size"]
)
async def test_a_refused_line_is_logged_by_the_parsers_words_only(
    edge: Edge, template: str
) -> None:
    """The parser's message quotes the refused bytes, which may hold a secret no redaction
    recognises (a password in some header): the log line keeps only the message's words, up
    to the first quote or colon."""
    refused = "request refused by the HTTP parser"

    def refusals() -> list[dict[str, object]]:
        lines = iter_lines(edge.proc.output())
        return [json.loads(line) for line in lines if refused in line]

    before = len(refusals())
    secret = f"hunter2-{uuid.uuid4().hex}"
    raw = await edge.send(template.format(secret=secret).encode())
    assert _answer(raw)[0] == 400
    for _ in range(200):
        if len(refusals()) > before:
            break
        await asyncio.sleep(0.05)
    line = refusals()[before]
    reason = line["reason"]
    assert line["exc_type"] and isinstance(reason, str) and reason.strip(), line
    assert line["level"] == "info", line  # a client's malformed bytes are not the gateway's error
    assert not set(reason) & set("'\":"), reason  # the words, nothing they quote
    assert secret not in edge.proc.output()
    assert secret[8:20] not in edge.proc.output()


async def test_a_method_made_up_by_the_client_is_never_logged(edge: Edge) -> None:
    """The pure-Python parser takes any token as a method: a secret sent as the method, with a
    valid key, is answered and logged as OTHER (the C parser refuses it with a 400)."""
    secret = f"HUNTER2{uuid.uuid4().hex.upper()}"
    before = len(list(iter_lines(edge.proc.output())))
    raw = await edge.send(
        f"{secret} {SCORES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {edge.key}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    assert _answer(raw)[0] in (400, 403), raw[:200]
    assert secret[7:].encode() not in raw  # nor echoed in the answer
    for _ in range(200):  # the access line (or the parser's refusal) is written after the answer
        if len(list(iter_lines(edge.proc.output()))) > before:
            break
        await asyncio.sleep(0.05)
    assert len(list(iter_lines(edge.proc.output()))) > before
    assert secret[7:] not in edge.proc.output()


async def test_malformed_bytes_after_a_whole_request_leave_that_request_whole(
    tmp_path: Path, aiohttp_server: Any, upstream_thread: ThreadedUpstream
) -> None:
    """A request whose body arrived whole, still waiting to be authenticated when the client
    sends bytes the parser refuses: that request is forwarded with its whole body; the refusal
    answers what followed it (only a body the refusal cut short stops being read)."""
    from tests.authn import test_introspection as oauth2

    idp = oauth2.IntrospectionServer()
    idp.gate = asyncio.Event()
    idp_server = await aiohttp_server(idp.app())
    introspection = {
        "url": str(idp_server.make_url("/introspect")),
        "client_id": oauth2.CLIENT_ID,
        "client_secret": oauth2.CLIENT_SECRET,
        "token_pattern": oauth2.PATTERN,
    }
    proc = write_config(
        tmp_path,
        upstream_thread.url,
        extra={"policy": oauth2.POLICY, "introspection": introspection},
    )
    await asyncio.to_thread(proc.start)
    try:
        idp.tokens[oauth2.ACTIVE] = {
            "active": True,
            "sub": "usr_a",
            "account": "acc_1",
            "scope": "sleep:read sleep:write",
            "exp": int(time.time()) + 600,
        }
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(
            f"POST /v1/users/usr_a/sleep HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            f"Authorization: Bearer {oauth2.ACTIVE}\r\n\r\nhello".encode()
        )
        await writer.drain()
        for _ in range(500):  # the request is whole, and its handler waits for the answer
            if idp.calls:
                break
            await asyncio.sleep(0.01)
        assert idp.calls
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\nAuth(orization: y\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)  # refused by the parser while the handler still waits
        idp.gate.set()
        answers = b""
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            answers += chunk
        writer.close()
    finally:
        proc.stop()
    # The request's answer (the upstream got all five bytes), then the refusal's.
    assert answers.startswith(b"HTTP/1.1 200 "), answers[:300]
    assert b'"received":5' in answers.replace(b" ", b""), answers
    statuses = re.findall(rb"HTTP/1\.\d (\d{3}) ", answers)
    assert statuses == [b"200", b"400"] and b'"malformed_http"' in answers, answers


@pytest.mark.parametrize("late", [b"zz\r\nabc\r\n0\r\n\r\n", b"\xd9\xa3\r\nabc\r\n0\r\n\r\n"])
async def test_a_bad_chunk_after_the_headers_is_a_json_4xx(edge: Edge, late: bytes) -> None:
    """The headers pass, the handler starts streaming the body upstream, then the framing
    breaks: the client still gets the gateway's JSON 4xx, not a 500."""
    head = (
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + edge.key.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    raw = await edge.send(head, then=late)
    status, document = _answer(raw)
    assert 400 <= status < 500, raw[:300]
    assert document is not None and isinstance(document.get("error"), str), raw[:300]


_TOKEN_CHARS = st.sampled_from(
    [
        b"GET",
        b"POST",
        b"g\xc3\xa9t",
        b"",
        b" ",
        b"\t",
        b"\x00",
        b"\r",
        b"\n",
        b":",
        b"%",
        b"%FF",
        b"%ED%A0%80",
        b"%2F",
        b"/",
        b"..",
        b"?",
        b"#",
        b"\x7f",
        b"\xff",
        b"HTTP/1.1",
        b"HTTP/9",
        b"Authorization",
        b"Bearer",
        b"Transfer-Encoding",
        b"chunked",
        b"Content-Length",
        b"-1",
        b"{key}",
        b"v1",
        b"users",
        b"scores",
        b"decisions",
        b"X-Original-URI",
        b"a",
        b"0",
    ]
)
_PIECE = st.lists(_TOKEN_CHARS, min_size=0, max_size=6).map(b"".join)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.one_of(st.sampled_from([b"GET", b"POST", b"PATCH"]), _PIECE))
    path = b"/" + draw(_PIECE)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b""])) or draw(_PIECE)
    headers = draw(st.lists(st.tuples(_PIECE, _PIECE), max_size=4))
    lines = [method + b" " + path + b" " + version, b"Host: x"]
    lines += [name + b": " + value for name, value in headers]
    if draw(st.booleans()):
        lines.append(b"Authorization: Bearer {key}")
    body = draw(st.sampled_from([b"", b"3\r\nabc\r\n0\r\n\r\n", b"zz\r\n", b"\xd9\xa3\r\n"]))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=requests())
def test_no_byte_sequence_gets_a_5xx_or_a_non_json_answer(edge: Edge, data: bytes) -> None:
    """Property: whatever the bytes, the answer (if any) is JSON with a status below 500, and a
    request answered with a 4xx never reached the upstream."""
    before = len(edge.upstream.recorder.seen)
    raw = asyncio.run(edge.send(_fill(data, edge.key)))
    if not raw:
        return  # the peer may close on an incomplete request: nothing answered, nothing sent
    status, document = _answer(raw)
    assert 0 < status < 500, raw[:300]
    assert document is not None or _allowed_decision(edge, raw), raw[:300]
    assert edge.key.encode() not in raw
    if status >= 400:
        assert len(edge.upstream.recorder.seen) == before, raw[:300]


def test_every_line_the_process_wrote_is_json_and_holds_no_secret(
    tmp_path_factory: pytest.TempPathFactory, upstream_thread: ThreadedUpstream
) -> None:
    """One process through the corpus, a reload and a shutdown; then read all it wrote."""
    for parser in ("c-parser", "python-parser", "decision-listener"):
        decision, decision_port = decision_section(parser)
        proc = write_config(
            tmp_path_factory.mktemp("lines"),
            upstream_thread.url,
            extra={"policy": POLICY, "decision": decision},
        )
        proc.start(env_with(AIOHTTP_NO_EXTENSIONS="1") if parser == "python-parser" else None)
        try:
            if decision_port is not None:
                wait_for_port(decision_port)
            key = admin_create_key(proc, "acc_1")
            edge = Edge(proc, upstream_thread, key, decision_port)

            async def corpus(edge: Edge = edge, key: str = key) -> None:
                for _, template in MALFORMED:
                    await edge.send(_fill(template, key))
                # a valid request, so that an upstream pool exists to be replaced on reload
                await edge.send(
                    f"GET {SCORES} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )

            asyncio.run(corpus())
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            asyncio.run(corpus())
        finally:
            proc.stop()
        text = proc.output()
        assert key not in text, parser
        assert key[8:] not in text, parser  # the secret part alone, in any spelling around it
        lines = list(iter_lines(text))
        assert any('"config reloaded"' in line for line in lines), parser
        assert any('"stopped"' in line for line in lines), parser
        for line in lines:
            assert isinstance(json.loads(line), dict), (parser, line)


@pytest.mark.parametrize(
    "extra",
    [b"X-A: \xff\xc3\r\n", b"Expect: something-else\r\n", b"X-A: caf\xc3\xa9\r\n"],
)
async def test_odd_but_parseable_headers_get_the_gateways_answer(edge: Edge, extra: bytes) -> None:
    """Bytes one parser accepts and the other may not: never a 5xx, never aiohttp's plain-text
    answer (an unknown Expect was a plain 417 echoing the header, before any authentication)."""
    for authorization in (b"", b"Authorization: Bearer " + edge.key.encode() + b"\r\n"):
        raw = await edge.send(
            b"GET "
            + SCORES.encode()
            + b" HTTP/1.1\r\nHost: x\r\n"
            + extra
            + authorization
            + b"Connection: close\r\n\r\n"
        )
        status, document = _answer(raw)
        assert 0 < status < 500 and status != 417, raw[:300]
        assert document is not None or _allowed_decision(edge, raw), raw[:300]
        if not authorization:
            assert status == 401


async def test_a_compressed_body_reaches_the_upstream_as_it_was_sent(edge: Edge) -> None:
    """The gateway forwards the body it received, not aiohttp's decompression of it under
    the client's Content-Encoding and Content-Length (which reached the backend corrupted)."""
    import gzip

    if edge.decision_port is not None:
        pytest.skip("the decision listener forwards nothing (its bodies are read and dropped)")
    plain = b'{"note": "' + b"a" * 2000 + b'"}'
    body = gzip.compress(plain)
    before = len(edge.upstream.recorder.seen)
    raw = await edge.send(
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + edge.key.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    assert status_of(raw) == 200, raw[:300]
    seen = edge.upstream.recorder.seen[before]
    assert seen.headers["content-encoding"] == ["gzip"]
    # the upstream (aiohttp) decompressed the intact gzip stream to the original bytes
    assert seen.body_size == len(plain)
