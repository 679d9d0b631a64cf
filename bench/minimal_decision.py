"""A reference floor: the least an aiohttp + uvloop decision service can do per request.

It answers 200 when the bearer token is in a dictionary of known tokens (a verification cache
that always hits) and 401 otherwise: no policy, no metrics, no logs, no identity headers. The
gateway's decision endpoint is compared with it to separate the framework's cost from the
gateway's own.

    python bench/minimal_decision.py PORT TOKENS_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvloop
from aiohttp import web

KNOWN = web.AppKey("known", dict)


async def decide(request: web.Request) -> web.Response:
    token = request.headers.get("Authorization", "")[7:]
    user = request.app[KNOWN].get(token)
    if user is None:
        return web.Response(status=401)
    return web.Response(status=200, headers={"X-Auth-User": user})


def main() -> None:
    port, tokens = int(sys.argv[1]), Path(sys.argv[2]).read_text().split()
    app = web.Application()
    app[KNOWN] = dict.fromkeys(tokens, "usr_a")
    app.router.add_route("*", "/{tail:.*}", decide)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
