"""The token doc's browser flow in a real headless Chromium (Debian's), driven over the DevTools
protocol: a page on one origin calls the gateway on another with a user token."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.demo.backend import create_backend
from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import OwnedProcess, base_url, free_port, require_binary

PAGE = """<!doctype html><html><body><script>
// The token doc's frontend example, as a function the test calls.
async function scores(base, userToken) {
  try {
    const resp = await fetch(`${base}/v1/users/usr_abc123/scores`, {
      headers: { Authorization: `Bearer ${userToken}` },
    });
    return JSON.stringify({ status: resp.status, body: await resp.json() });
  } catch (e) {
    return JSON.stringify({ blocked: String(e) });
  }
}
</script></body></html>"""


class Browser:
    """Just enough of the Chrome DevTools protocol: open a page, evaluate an expression."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._ws.send_json({"id": message_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self._ws.receive_json(), 30)
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                result: dict[str, Any] = message["result"]
                return result

    async def open(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)
        # Until the new document (not the one navigated away from) has loaded.
        for _ in range(100):
            state = await self.send(
                "Runtime.evaluate",
                expression="[location.href, document.readyState]",
                returnByValue=True,
            )
            if state["result"].get("value") == [url, "complete"]:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("page did not load")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return json.loads(result["result"]["value"])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require_binary("chromium", "chromium")
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        # stop() ends the browser, its renderers (its process group) and its crash handlers
        # (which leave the group, but carry the process's mark), and nothing else.
        proc = OwnedProcess(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as session:
                targets: list[dict[str, Any]] = []
                for _ in range(200):
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                            targets = [t for t in await r.json() if t["type"] == "page"]
                        if targets:
                            break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
                assert targets, "chromium did not start"
                async with session.ws_connect(
                    targets[0]["webSocketDebuggerUrl"], max_msg_size=0
                ) as ws:
                    yield Browser(ws)
        finally:
            await asyncio.to_thread(proc.stop)


async def serve_page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def page_server(aiohttp_server: Any) -> TestServer:
    app = web.Application()
    app.router.add_get("/", serve_page)
    server: TestServer = await aiohttp_server(app)
    return server


async def test_browser_reads_scores_is_blocked_elsewhere_and_reads_401s(
    browser: Browser, make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    allowed_page, other_page = await page_server(aiohttp_server), await page_server(aiohttp_server)
    backend = await aiohttp_server(create_backend({"usr_abc123": "acc_1"}))
    url = base_url(backend)
    allowed_origin = f"http://127.0.0.1:{allowed_page.port}"
    gw: Gateway = await make_gateway(
        settings=make_settings(
            url,
            cors=[{"origins": [allowed_origin], "methods": ["GET"], "headers": ["Authorization"]}],
        )
    )
    key = await gw.key("acc_1", "live")
    issued = await gw.client.post(
        "/v1/auth/user-token",
        json={"user_id": "usr_abc123"},
        headers={"Authorization": f"Bearer {key}"},
    )
    token = (await issued.json())["token"]
    # A different host name than the pages' makes the call cross-origin for certain.
    base = f"http://localhost:{gw.port}"

    await browser.open(f"{allowed_origin}/")
    result = await browser.evaluate(f"scores({json.dumps(base)}, {json.dumps(token)})")
    assert result["status"] == 200
    assert result["body"]["user_id"] == "usr_abc123" and len(result["body"]["data"]) == 7

    await browser.open(f"http://127.0.0.1:{other_page.port}/")
    result = await browser.evaluate(f"scores({json.dumps(base)}, {json.dumps(token)})")
    assert "blocked" in result and "Failed to fetch" in result["blocked"]

    gw.clock.advance(3600 + 60)
    await browser.open(f"{allowed_origin}/")
    result = await browser.evaluate(f"scores({json.dumps(base)}, {json.dumps(token)})")
    assert result["status"] == 401
    assert result["body"]["error"] == "token_expired"
