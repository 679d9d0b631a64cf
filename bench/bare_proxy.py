"""The baseline: a bare aiohttp + uvloop reverse proxy with no authentication.

It does what any aiohttp proxy must (pooled client session, streamed body both ways, hop-by-hop
headers dropped) and nothing else, so the gateway's ratio to it is the cost of authentication,
policy, identity headers, metrics and logs.

    python bench/bare_proxy.py PORT UPSTREAM_URL [--lean]

``--lean``: the same proxy forwarding with the gateway's own client
(``gateway.forward.upstream``) instead of aiohttp's ``ClientSession``: a reference row that
separates what the gateway's forwarding client saves from what its authentication costs.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import Upstream
from gateway.forward.headers import request_head
from gateway.forward.upstream import UpstreamClient, framing

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "host",
}
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
LEAN = web.AppKey("lean", UpstreamClient)


async def relay(
    request: web.Request,
    status: int,
    headers: CIMultiDictProxy[str],
    content: aiohttp.StreamReader,
) -> web.StreamResponse:
    """The upstream's answer streamed back, hop-by-hop headers dropped."""
    response = web.StreamResponse(status=status)
    for k, v in headers.items():
        if k.lower() not in HOP:
            response.headers[k] = v
    await response.prepare(request)
    async for chunk in content.iter_chunked(65536):
        await response.write(chunk)
    await response.write_eof()
    return response


async def proxy(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    url = URL(request.app[UPSTREAM] + request.raw_path, encoded=True)
    async with request.app[SESSION].request(
        request.method,
        url,
        headers=headers,
        data=request.content if request.body_exists else None,
        allow_redirects=False,
    ) as upstream:
        return await relay(request, upstream.status, upstream.headers, upstream.content)


async def lean_proxy(request: web.Request) -> web.StreamResponse:
    client = request.app[LEAN]
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP)
    body = request.content.iter_any() if request.body_exists else None
    line, chunked = framing(request.method, body is not None, "Content-Length" in headers)
    head = request_head(request.method, request.raw_path, client.host_line + line, headers)
    upstream = await client.exchange(request.method, head, body, chunked)
    try:
        return await relay(request, upstream.status, upstream.headers, upstream.content)
    finally:
        upstream.release()


async def lean_ctx(app: web.Application) -> object:
    app[LEAN] = UpstreamClient(Upstream(name="up", url=URL(app[UPSTREAM])))
    yield
    await app[LEAN].close()


async def session_ctx(app: web.Application) -> object:
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    )
    yield
    await app[SESSION].close()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    lean = "--lean" in sys.argv[3:]
    app = web.Application()
    app[UPSTREAM] = upstream
    app.cleanup_ctx.append(lean_ctx if lean else session_ctx)  # type: ignore[arg-type]
    app.router.add_route("*", "/{tail:.*}", lean_proxy if lean else proxy)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
