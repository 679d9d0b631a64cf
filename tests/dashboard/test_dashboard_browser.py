"""The key dashboard in a real browser: Debian's Chromium, headless, driven by Playwright for
Python (Playwright's own browser download is never used: ``executable_path`` is Debian's
binary). The admin app and the public app run in this process on real sockets; the keys the
page creates, rotates and revokes are then used against the public listener. Nothing is written
to the repository (no screenshots)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_admin_app
from tests.conftest import Gateway, GatewayFactory
from tests.support import ADMIN_TOKEN, base_url, require_binary

playwright_api = pytest.importorskip("playwright.async_api")

SCORES = "/v1/users/usr_a/scores"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium = require_binary("chromium", "chromium")
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Seen:
    """Every URL the browser asked for and the body of every HTML answer it got."""

    urls: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    def watch(self, context: Any) -> None:
        context.on("request", lambda request: self.urls.append(request.url))
        context.on("response", self._response)

    def _response(self, response: Any) -> None:
        if "text/html" in response.headers.get("content-type", ""):
            task = asyncio.ensure_future(self._read(response))
            self.pending.add(task)

    async def _read(self, response: Any) -> None:
        # A redirect's body is not available; there is nothing to read then.
        with contextlib.suppress(Exception):
            self.html.append(await response.text())

    async def settle(self) -> None:
        await asyncio.gather(*self.pending)


@dataclass
class Setup:
    gw: Gateway
    admin: TestServer
    url: str


@pytest.fixture
async def setup(make_gateway: GatewayFactory, aiohttp_server: Any) -> Setup:
    gw = await make_gateway(admin={"token": ADMIN_TOKEN})
    admin = await aiohttp_server(create_admin_app(gw.current))
    return Setup(gw, admin, base_url(admin))


async def status_of_key(gw: Gateway, key: str) -> int:
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    return response.status


async def new_page(browser: Any, seen: Seen | None = None) -> tuple[Any, Any]:
    context = await browser.new_context()
    if seen is not None:
        seen.watch(context)
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the rotate/revoke confirmations
    return context, page


async def sign_in(page: Any, url: str, token: str = ADMIN_TOKEN) -> None:
    await page.goto(f"{url}/dashboard")
    assert page.url == f"{url}/dashboard/login"  # signed out: sent to the sign-in form
    await page.fill("#token", token)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_load_state()


def row(page: Any, key_id: str) -> Any:
    return page.locator(f'tr[data-key-id="{key_id}"]')


async def test_create_rotate_revoke_through_the_page_then_use_the_keys(
    browser: Any, setup: Setup
) -> None:
    gw, url = setup.gw, setup.url
    context, page = await new_page(browser)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    await sign_in(page, url)
    assert page.url == f"{url}/dashboard"
    assert await page.inner_text("h1") == "Accounts"
    assert "No API keys yet." in await page.inner_text("main")

    # Create: the secret is shown once, with a copy button.
    await page.fill("#new-account", "acc_web")
    await page.select_option("#environment", "live")
    await page.fill("#label", "web backend")
    await page.click("button:has-text('Create key')")
    await page.wait_for_load_state()
    assert page.url == f"{url}/dashboard/accounts/acc_web"
    first = await page.inner_text("#new-key")
    assert first.startswith("sk_live_")
    await page.click("button[data-copy='new-key']")
    await page.wait_for_selector(".copied:not([hidden])")
    assert await page.evaluate("navigator.clipboard.readText()") == first
    (record,) = await gw.runtime.keys.list("acc_web")
    cells = await row(page, record.key_id).locator("td").all_inner_texts()
    assert cells[1:5] == ["web backend", "live", "sk_live_…", "active"]
    assert cells[5] == "< 1 min" and "(in 90 d)" in cells[6]
    assert await status_of_key(gw, first) == 200
    await page.reload()
    assert await page.locator("#new-key").count() == 0  # never shown again

    # Rotate (no grace): a new key, and the old one refused at once.
    await row(page, record.key_id).locator("button.rotate").click()
    await page.wait_for_load_state()
    second = await page.inner_text("#new-key")
    assert second.startswith("sk_live_") and second != first
    assert "rotated to" in await page.inner_text(".flash.ok")
    assert await status_of_key(gw, first) == 401
    assert await status_of_key(gw, second) == 200

    # Revoke the new key.
    new_id = next(r.key_id for r in await gw.runtime.keys.list("acc_web") if not r.rotated_to)
    await row(page, new_id).locator("button.revoke").click()
    await page.wait_for_load_state()
    assert f"Key {new_id} revoked." in await page.inner_text(".flash.ok")
    gw.clock.advance(1.1)  # the revocation bound
    assert await status_of_key(gw, second) == 401
    assert await row(page, record.key_id).locator("td.status").inner_text() == "rotated"
    assert await row(page, new_id).locator("td.status").inner_text() == "revoked"
    assert await page.locator("button.revoke").count() == 0  # nothing left to revoke

    # The audit window: the public requests just made, and the page's own actions.
    await page.goto(f"{url}/dashboard/audit?account=acc_web")
    text = await page.inner_text("#audit")
    # Two authenticated requests (the refused keys authenticated no one: no audit line).
    assert text.count("\tapi_key\t") == 2 and "dashboard:revoke_key" in text
    await context.close()


async def test_caregiver_relationships_through_the_page(browser: Any, setup: Setup) -> None:
    gw, url = setup.gw, setup.url
    context, page = await new_page(browser)
    await sign_in(page, url)
    await page.goto(f"{url}/dashboard/accounts/acc_web")
    await page.fill("#subject", "mem_1")
    await page.fill("#actor", "cg_1")
    await page.click("#grant button")
    await page.wait_for_load_state()
    rows = page.locator("#relationships tbody tr")
    assert await rows.count() == 1
    assert await rows.locator("td").all_inner_texts() == ["mem_1", "cg_1", "Revoke"]
    assert await gw.runtime.store.relationship_active("acc_web", "mem_1", "cg_1")
    await page.click("#relationships button:has-text('Revoke')")
    await page.wait_for_load_state()
    assert "No active relationships." in await page.inner_text("main")
    assert not await gw.runtime.store.relationship_active("acc_web", "mem_1", "cg_1")
    await context.close()


ATTACKER_PAGE = """<!doctype html><html><body>
<form id="f" method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="account" value="acc_evil">
<input type="hidden" name="environment" value="live">
</form><script>document.getElementById("f").submit();</script></body></html>"""


async def attacker_site(aiohttp_server: Any, action: str, csrf: str) -> str:
    """A page on another origin (same host, another port: the same *site*, so even a
    SameSite=Strict cookie goes along) that posts a form to the dashboard on load."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text=ATTACKER_PAGE.format(action=action, csrf=csrf), content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", handler)
    server: TestServer = await aiohttp_server(app)
    return base_url(server)


async def test_without_the_session_or_with_a_forged_token_nothing_changes(
    browser: Any, setup: Setup, aiohttp_server: Any
) -> None:
    gw, url = setup.gw, setup.url
    key, record = await gw.runtime.keys.create("acc_web", "live")

    # 1. No session: a browser that never signed in posts the create form.
    context, page = await new_page(browser)
    await page.goto(f"{url}/dashboard/login")
    await page.evaluate(
        """(url) => { const f = document.createElement('form'); f.method = 'post';
        f.action = url + '/dashboard/keys';
        for (const [k, v] of [['account', 'acc_evil'], ['environment', 'live'], ['csrf', 'x']]) {
          const i = document.createElement('input'); i.name = k; i.value = v; f.append(i); }
        document.body.append(f); f.submit(); }""",
        url,
    )
    await page.wait_for_url(f"{url}/dashboard/keys")
    assert await page.inner_text("h1") == "Refused"
    assert "Your session has ended" in await page.inner_text("main")
    await context.close()

    # 2. Signed in, but the form's CSRF token replaced by a forged one (create and revoke).
    context, page = await new_page(browser)
    await sign_in(page, url)
    await page.goto(f"{url}/dashboard/accounts/acc_web")
    await page.eval_on_selector_all(
        "input[name=csrf]", "(inputs) => inputs.forEach((i) => { i.value = 'A'.repeat(43); })"
    )
    await row(page, record.key_id).locator("button.revoke").click()
    await page.wait_for_load_state()
    assert await page.inner_text("h1") == "Refused"
    assert "security token is wrong" in await page.inner_text("main")
    await page.goto(f"{url}/dashboard/accounts/acc_web")
    await page.eval_on_selector_all(
        "input[name=csrf]", "(inputs) => inputs.forEach((i) => { i.value = ''; })"
    )
    await page.click("button:has-text('Create key')")
    await page.wait_for_load_state()
    assert await page.inner_text("h1") == "Refused"

    # 3. Signed in, and another site's page posts to the dashboard (the session cookie goes
    #    along: same site), even with the right CSRF token: refused by its Origin.
    await page.goto(f"{url}/dashboard")
    csrf = await page.locator("input[name=csrf]").first.input_value()
    evil = await attacker_site(aiohttp_server, f"{url}/dashboard/keys", csrf)
    await page.goto(evil)
    await page.wait_for_url(f"{url}/dashboard/keys")
    assert await page.inner_text("h1") == "Refused"
    assert "not sent by the dashboard" in await page.inner_text("main")

    # Nothing changed: one key, still working; no key for the attacker's account.
    assert [r.key_id for r in await gw.runtime.keys.list()] == [record.key_id]
    assert await status_of_key(gw, key) == 200
    # The control: the same session, through the page as it is, does work.
    await page.goto(f"{url}/dashboard/accounts/acc_web")
    await row(page, record.key_id).locator("button.revoke").click()
    await page.wait_for_load_state()
    gw.clock.advance(1.1)
    assert await status_of_key(gw, key) == 401
    await context.close()


async def test_the_admin_token_is_in_no_page_and_no_url(browser: Any, setup: Setup) -> None:
    seen = Seen()
    context, page = await new_page(browser, seen)
    await sign_in(page, setup.url, token="x" + ADMIN_TOKEN[1:])  # a wrong one first
    assert "That is not the admin token." in await page.inner_text("main")
    assert await page.input_value("#token") == ""  # the field is not refilled
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_load_state()
    await page.fill("#new-account", "acc_web")
    await page.click("button:has-text('Create key')")
    await page.wait_for_load_state()
    for path in ("/dashboard", "/dashboard/audit", "/dashboard/accounts/acc_web"):
        await page.goto(setup.url + path)
        assert ADMIN_TOKEN not in await page.content()
    await page.click("button:has-text('Sign out')")
    await page.wait_for_load_state()
    assert page.url == f"{setup.url}/dashboard/login"
    await seen.settle()
    assert len(seen.html) >= 7 and len(seen.urls) >= 10
    assert all(ADMIN_TOKEN not in body for body in seen.html)
    assert all(ADMIN_TOKEN not in u and "token=" not in u for u in seen.urls)
    assert all(u.startswith(setup.url) for u in seen.urls)  # nothing from a CDN
    cookies = await context.cookies()
    assert all(ADMIN_TOKEN not in c["value"] for c in cookies)
    assert all(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies)
    assert await page.evaluate("document.cookie") == ""  # no cookie is readable by script
    await context.close()


async def test_a_hostile_label_is_shown_as_text_and_never_runs(browser: Any, setup: Setup) -> None:
    context, page = await new_page(browser)
    await sign_in(page, setup.url)
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    await page.fill("#new-account", "acc_web")
    await page.fill("#label", hostile)
    await page.click("button:has-text('Create key')")
    await page.wait_for_load_state()
    (record,) = await setup.gw.runtime.keys.list("acc_web")
    assert record.label == hostile
    label_cell = row(page, record.key_id).locator("td").nth(1)
    assert await label_cell.inner_text() == hostile  # shown as the text it is
    assert await page.locator("main img").count() == 0
    assert await page.evaluate("window.pwned") is None
    await context.close()
