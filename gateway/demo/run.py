"""``gateway demo``: the gateway, its bundled sandbox backend and a working key, in one process."""

from __future__ import annotations

import sys
from typing import TextIO

from aiohttp import web
from yarl import URL

from gateway.config import AdminListener, Listener, Settings, Upstream
from gateway.demo.backend import create_backend
from gateway.runtime import Runtime
from gateway.server import run

DEMO_ACCOUNT = "acc_demo"
DEMO_USER = "usr_demo"


def demo_settings(port: int, admin_port: int, backend_port: int, host: str) -> Settings:
    backend = Upstream(name="sandbox", url=URL(f"http://127.0.0.1:{backend_port}"))
    return Settings(
        listen=Listener(host=host, port=port),
        admin=AdminListener(host="127.0.0.1", port=admin_port),
        upstreams={"sandbox": backend},
        environments={"sandbox": "sandbox"},
    )


async def run_demo(
    port: int = 8080,
    admin_port: int = 9090,
    backend_port: int = 8081,
    host: str = "127.0.0.1",
    out: TextIO = sys.stdout,
) -> None:
    backend = web.AppRunner(
        create_backend({DEMO_USER: DEMO_ACCOUNT, "usr_abc123": DEMO_ACCOUNT}), access_log=None
    )
    await backend.setup()
    await web.TCPSite(backend, "127.0.0.1", backend_port).start()
    settings = demo_settings(port, admin_port, backend_port, host)

    async def announce(runtime: Runtime) -> None:
        key, record = await runtime.keys.create(DEMO_ACCOUNT, "sandbox", label="demo")
        base = f"http://{host}:{port}"
        lines = [
            "",
            "Health gateway demo is running (memory store, bundled sandbox backend).",
            f"  public:  {base}",
            f"  admin:   http://127.0.0.1:{admin_port}  (/healthz /readyz /metrics)",
            f"  backend: http://127.0.0.1:{backend_port}  (synthetic data for {DEMO_USER})",
            "",
            f"Sandbox API key for account {DEMO_ACCOUNT} (key id {record.key_id}):",
            f"  export KEY={key}",
            "",
            "Try:",
            f'  curl -s {base}/v1/users/{DEMO_USER}/scores -H "Authorization: Bearer $KEY"',
            f'  curl -s {base}/v1/users/{DEMO_USER}/sleep -u "$KEY:"',
            f'  curl -s {base}/v1/users/{DEMO_USER}/devices -H "Authorization: Bearer $KEY"',
            f"  curl -s {base}/v1/users/{DEMO_USER}/scores        # no key: 401 invalid_token",
            f'  curl -s -X POST {base}/v1/auth/user-token -H "Authorization: Bearer $KEY" '
            f"-H 'Content-Type: application/json' -d '{{\"user_id\": \"{DEMO_USER}\"}}'",
            f'  curl -s -X POST {base}/v1/auth/mobile-token -H "Authorization: Bearer $KEY" '
            f"-H 'Content-Type: application/json' -d '{{\"user_id\": \"{DEMO_USER}\"}}'",
            "",
            "Ctrl-C stops it.",
        ]
        print("\n".join(lines), file=out, flush=True)

    try:
        await run(settings, on_ready=announce)
    finally:
        await backend.cleanup()
