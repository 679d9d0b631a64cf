"""``gateway demo``: the gateway, its bundled sandbox backend, a web page on an origin of its
own and a working key, in one process.

What it sets up, all in memory: a sandbox API key for ``acc_demo``; the users ``usr_demo`` and
``usr_abc123`` in the backend; one caregiver relationship (``usr_caregiver`` may act for
``usr_demo``; ``usr_stranger`` has none); CORS for exactly the page's origin. It prints how to
use each (curl lines that run as printed once the ``export`` lines are pasted), then one line per
request as the gateway answers it (:mod:`gateway.demo.lines`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TextIO

from aiohttp import web
from yarl import URL

from gateway.app import create_app
from gateway.config import (
    AdminListener,
    ConfigError,
    CorsPolicy,
    Listener,
    Settings,
    Upstream,
)
from gateway.demo.backend import create_backend
from gateway.demo.customer import member_token
from gateway.demo.lines import request_lines
from gateway.demo.page import PageBackend, create_page
from gateway.runtime import Current, Runtime, build_runtime
from gateway.server import run
from gateway.settings import MODEL

DEMO_ACCOUNT = "acc_demo"
DEMO_USER = "usr_demo"
OTHER_USER = "usr_abc123"
CAREGIVER = "usr_caregiver"  # has a relationship with DEMO_USER
STRANGER = "usr_stranger"  # has none
CAREGIVER_TOKEN_TTL = 86400  # the longest a member token may live


def local_host(host: str) -> str:
    """The address to reach a listener on ``host`` from this machine, as a URL's host."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard is reached on loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def page_origin(host: str, page_port: int) -> str:
    """The page's origin as the printed address opens it: the one origin CORS allows."""
    return f"http://{local_host(host)}:{page_port}"


def demo_settings(
    port: int, admin_port: int, backend_port: int, host: str, page_port: int = 8082
) -> Settings:
    """The demo's settings: the backend as the sandbox upstream, CORS for the page's origin
    only, caregiver relationships in the (memory) store, everything else the defaults."""
    backend = Upstream(name="sandbox", url=URL(f"http://127.0.0.1:{backend_port}"))
    return MODEL(
        listen=Listener(host=host, port=port),
        admin=AdminListener(host="127.0.0.1", port=admin_port),
        upstreams={"sandbox": backend},
        environments={"sandbox": "sandbox"},
        cors=(CorsPolicy(origins=frozenset({page_origin(host, page_port)})),),
    )


def with_request_lines(out: TextIO) -> Callable[[Current], web.Application]:
    """The public app, with :func:`~gateway.demo.lines.request_lines` outermost."""

    def factory(current: Current) -> web.Application:
        app = create_app(current)
        app.middlewares.insert(0, request_lines(out))
        return app

    return factory


async def _serve(app: web.Application, host: str, port: int, option: str) -> web.AppRunner:
    """Serve ``app`` on ``host:port``; a port that cannot be bound is a
    :class:`~gateway.config.ConfigError` naming the option (``--page-port: cannot listen on
    127.0.0.1:8082: address already in use; …``), one line from the CLI."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            option,
            f"cannot listen on {host}:{port}: {reason[:1].lower()}{reason[1:]}; stop what holds "
            f"it (another demo?) or choose another port with {option}",
        ) from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def run_demo(
    port: int = 8080,
    admin_port: int = 9090,
    backend_port: int = 8081,
    host: str = "127.0.0.1",
    page_port: int = 8082,
    out: TextIO = sys.stdout,
) -> None:
    """Serve the demo until SIGINT or SIGTERM; its instructions and request lines go to
    ``out``. The backend listens on loopback only; the gateway and the page on ``host``."""
    settings = demo_settings(port, admin_port, backend_port, host, page_port)
    runtime = build_runtime(settings)
    await runtime.store.set_relationship(DEMO_ACCOUNT, DEMO_USER, CAREGIVER, True)
    base = f"http://{local_host(host)}:{port}"
    origin = page_origin(host, page_port)
    page_backend = PageBackend(
        gateway=URL(base), api=base, origin=origin, user=DEMO_USER, other_user=OTHER_USER
    )
    runners: list[web.AppRunner] = []
    try:
        users = {DEMO_USER: DEMO_ACCOUNT, OTHER_USER: DEMO_ACCOUNT}
        runners.append(
            await _serve(
                create_backend(users, relationships=runtime.store),
                "127.0.0.1",
                backend_port,
                "--backend-port",
            )
        )
        runners.append(await _serve(create_page(page_backend), host, page_port, "--page-port"))

        async def announce(runtime: Runtime) -> None:
            key, record = await runtime.keys.create(DEMO_ACCOUNT, "sandbox", label="demo")
            page_backend.key = key
            print(
                banner(base, admin_port, backend_port, origin, key, record.key_id),
                file=out,
                flush=True,
            )

        await run(settings, runtime=runtime, on_ready=announce, app_factory=with_request_lines(out))
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def banner(
    base: str, admin_port: int, backend_port: int, origin: str, key: str, key_id: str
) -> str:
    """What the demo prints once it is ready: addresses, the key, and how to try each flow."""
    bearer = '-H "Authorization: Bearer $KEY"'
    json_body = "-H 'Content-Type: application/json' -d"
    caregiver = member_token(key, key_id, DEMO_USER, act=CAREGIVER, ttl=CAREGIVER_TOKEN_TTL)
    stranger = member_token(key, key_id, DEMO_USER, act=STRANGER, ttl=CAREGIVER_TOKEN_TTL)
    lines = [
        "",
        "Health gateway demo is running (memory store, bundled sandbox backend).",
        f"  public:  {base}",
        f"  admin:   http://127.0.0.1:{admin_port}  (/healthz /readyz /metrics)",
        f"  backend: http://127.0.0.1:{backend_port}  (synthetic data for {DEMO_USER} "
        f"and {OTHER_USER})",
        f"  page:    {origin}/  (a web app calling the API from the browser)",
        "",
        f"Sandbox API key for account {DEMO_ACCOUNT} (key id {key_id}):",
        f"  export KEY={key}",
        "",
        "Try, with the key (a backend's credential: everything in its account):",
        f"  curl -s {base}/v1/users/{DEMO_USER}/scores {bearer}",
        f'  curl -s {base}/v1/users/{DEMO_USER}/sleep -u "$KEY:"',
        f"  curl -s {base}/v1/users/{DEMO_USER}/devices {bearer}",
        f"  curl -s {base}/v1/users/{DEMO_USER}/scores        # no key: 401 invalid_token",
        f"  curl -s -X POST {base}/v1/auth/user-token {bearer} "
        f'{json_body} \'{{"user_id": "{DEMO_USER}"}}\'',
        f"  curl -s -X POST {base}/v1/auth/mobile-token {bearer} "
        f'{json_body} \'{{"user_id": "{DEMO_USER}"}}\'',
        "",
        "Webhooks and events (account-wide: API keys only):",
        f"  curl -s {base}/v1/webhooks {bearer}",
        f"  curl -s -X POST {base}/v1/webhooks {bearer} "
        f'{json_body} \'{{"url": "https://example.com/hooks", "events": ["scores.updated"]}}\'',
        f'  curl -s "{base}/v1/events?limit=3" {bearer}',
        "",
        f"Caregivers: {CAREGIVER} may act for {DEMO_USER} (a relationship, listed by the first",
        f"line below); {STRANGER} may not. Their tokens are member tokens with act, signed as a",
        f"customer's server signs them: HS256 with the key, kid {key_id}, valid 24 h",
        "(`gateway tokens member --help` makes the same).",
        f"  export CAREGIVER_TOKEN={caregiver}",
        f"  export STRANGER_TOKEN={stranger}",
        f"  curl -s {base}/v1/relationships {bearer}",
        f'  curl -s {base}/v1/users/{DEMO_USER}/sleep -H "Authorization: Bearer $CAREGIVER_TOKEN"'
        "   # 200",
        f'  curl -s {base}/v1/users/{DEMO_USER}/sleep -H "Authorization: Bearer $STRANGER_TOKEN"'
        "    # 403 insufficient_scope",
        "",
        f"In a browser, open {origin}/ : its backend gets a user token with the key (which stays",
        f"on the server), the page reads {DEMO_USER}'s scores with fetch and draws the recovery",
        f"trend, then shows the 403 wrong_user it gets for {OTHER_USER}. The gateway's CORS",
        "config allows exactly that origin.",
        "",
        "Each request is printed below as it is answered: time, method, path, credential,",
        "status, milliseconds.",
        "Ctrl-C stops it.",
    ]
    return "\n".join(lines)
