"""Reading a body a peer sends: bounded in size and in stall, and a broken one answered by rule.

Two readers of a client's request body share these rules: the proxy, which streams the body to
the upstream (:mod:`gateway.forward.proxy`), and the token endpoints, which read a small JSON
body whole (:mod:`gateway.issue.endpoints`). A client that stalls, hangs up or misframes its body
gets the same answer from both (:func:`client_body_error`), never a 500; and both answer
``Expect: 100-continue`` just before they first read (:func:`expect_continue`), so a client is
asked for its body only once its request has been authenticated and authorized.
:func:`read_at_most` also reads the gateway's own helper answers (JWKS, introspection), bounded.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import GatewayError, InvalidRequest, RequestTimeout

#: What reading a client's body can raise that is the client's doing (caught by each reader and
#: given to :func:`client_body_error`): a stall past the reader's timeout, a hang-up, or framing
#: that broke mid-stream (a bad chunk size; aiohttp's C parser raises the first of the last two,
#: its Python parser the second).
CLIENT_BODY_FAILURES = (
    TimeoutError,
    ConnectionError,
    web.RequestPayloadError,
    HttpProcessingError,
)


async def expect_continue(request: web.Request) -> None:
    """``Expect: 100-continue`` answered with ``100 Continue`` (HTTP/1.1 and later), by the
    reader of the body just before it reads: never before the pipeline admitted the request, so a
    refused one (401, 403, 413 on its Content-Length) is answered without inviting its body.
    Any other expectation is ignored (RFC 9110 §10.1.1 lets a server do so) rather than
    answered by aiohttp's plain-text 417, which echoed the header and bypassed the pipeline."""
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


def client_body_error(failure: BaseException) -> GatewayError:
    """The answer to a client whose body failed with ``failure`` (one of
    :data:`CLIENT_BODY_FAILURES`): 408 for a stall, 400 ``body_incomplete`` for a hang-up, 400
    ``malformed_body`` for broken framing. Each closes the connection: what is left of the body
    on it cannot be trusted to frame the next request."""
    if isinstance(failure, TimeoutError):
        return RequestTimeout(headers={"Connection": "close"})
    if isinstance(failure, ConnectionError):
        return InvalidRequest(
            "The request body ended early.",
            details={"reason": "body_incomplete"},
            headers={"Connection": "close"},
        )
    return InvalidRequest(
        "The request body's framing is malformed.",
        details={"reason": "malformed_body"},
        headers={"Connection": "close"},
    )


async def read_at_most(
    stream: aiohttp.StreamReader, limit: int, stall: float | None = None
) -> bytes:
    """The whole body of ``stream``, or its first ``limit + 1`` bytes when it is longer (the
    caller refuses it then). ``StreamReader.read(n)`` returns what one segment brought, so a body
    split across TCP segments would be cut short: this reads until the end or past the limit.
    ``stall``: seconds any one read may wait before ``TimeoutError``."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        if stall is None:
            chunk = await stream.read(limit + 1 - size)
        else:
            # SECURITY: a sender that stalls mid-body is given up on; it cannot hold the reader.
            chunk = await asyncio.wait_for(stream.read(limit + 1 - size), stall)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
