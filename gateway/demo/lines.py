"""One readable line per request, for the demo's terminal: what the gateway decided.

    18:04:12  GET    /v1/users/usr_demo/scores            api_key        200                 1.9 ms
    18:04:13  GET    /v1/users/usr_abc123/scores          user_token     403 wrong_user      0.4 ms

Method, path, credential kind, status (with the error code of a refusal) and the time to the
response, measured around the whole public app. The JSON access log is the operator's record
and never holds a path; this line is for a person watching the demo, so it shows the path,
but never a credential: the path is cut to printable ASCII and passed through
:func:`~gateway.observe.redact.redact` (a key or token pasted into it prints as
``[redacted]``), the query string is left out, and the method is folded to the known set.
"""

from __future__ import annotations

import time
from typing import TextIO

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.exchange import EXCHANGE
from gateway.observe.metrics import KNOWN_METHODS
from gateway.observe.redact import redact

MAX_PATH = 60


def shown_path(raw_path: str) -> str:
    """The path as the line shows it: no query, printable ASCII, credentials redacted, at most
    ``MAX_PATH`` characters."""
    path = raw_path.partition("?")[0]
    printable = "".join(c if " " < c < "\x7f" else "?" for c in path)
    # SECURITY: redacted before it is cut, so a cut can never leave part of a key unredacted.
    cleaned = redact(printable)
    return cleaned if len(cleaned) <= MAX_PATH else cleaned[: MAX_PATH - 1] + "…"


def format_line(
    method: str, raw_path: str, credential: str, status: int, error: str | None, seconds: float
) -> str:
    """One line: local time, method, path, credential kind, status and error, milliseconds."""
    shown_method = method if method in KNOWN_METHODS else "OTHER"
    outcome = f"{status} {error}" if error else str(status)
    return (
        f"{time.strftime('%H:%M:%S')}  {shown_method:<8}{shown_path(raw_path):<37}"
        f"{credential:<15}{outcome:<22}{seconds * 1000:7.1f} ms"
    )


def request_lines(out: TextIO) -> Middleware:
    """A middleware, outermost on the public app, writing :func:`format_line` to ``out`` once
    each request is answered (the credential kind and error as the pipeline recorded them)."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            exchange = request.get(EXCHANGE)
            credential, error = "none", None
            if exchange is not None:
                credential = exchange.credential.value if exchange.credential else "none"
                error = exchange.error
            line = format_line(
                request.method,
                request.raw_path,
                credential,
                status,
                error,
                time.perf_counter() - started,
            )
            out.write(line + "\n")
            out.flush()

    return impl
