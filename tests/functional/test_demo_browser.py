"""The demo's web page in a real headless Chromium (Debian's), driven over the DevTools protocol:
opened at the address ``gateway demo`` prints, it draws the recovery trend it read from the
gateway with a user token and shows the ``wrong_user`` error it got for another user; opened at
another origin, the browser blocks it and the page says why."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.functional.test_browser import Browser, browser  # noqa: F401 - a fixture
from tests.functional.test_demo import REQUEST_LINE, Demo, demo, exports  # noqa: F401

STATE = "document.body.dataset.state"
# What the page shows, read from its DOM.
SHOWN = """JSON.stringify({
  state: document.body.dataset.state,
  who: document.getElementById("who").textContent,
  points: [...document.querySelectorAll("#chart circle.point")].map(
    (c) => [c.dataset.date, Number(c.dataset.value)]),
  line: document.querySelector("#chart polyline")?.getAttribute("points").split(" ").length,
  refused: document.getElementById("refused").textContent,
  problem: document.getElementById("problem").textContent,
  steps: [...document.querySelectorAll("#steps li")].map((li) => li.textContent),
})"""


async def settled(chromium: Browser, url: str) -> dict[str, Any]:
    """Open ``url`` and wait until the page is done (or failed); what it shows then."""
    await chromium.open(url)
    for _ in range(200):
        if await chromium.evaluate(f"JSON.stringify({STATE})") != "loading":
            break
        await asyncio.sleep(0.05)
    shown: dict[str, Any] = await chromium.evaluate(SHOWN)
    return shown


async def test_the_page_draws_the_trend_and_shows_wrong_user(
    demo: Demo,  # noqa: F811 - the fixtures imported above
    browser: Browser,  # noqa: F811
) -> None:
    text = "\n".join(await asyncio.to_thread(demo.banner))
    key = exports(text)["KEY"]
    page = f"http://127.0.0.1:{demo.page_port}/"
    assert f"open {page}" in text
    api = f"http://127.0.0.1:{demo.port}"

    shown = await settled(browser, page)
    assert shown["state"] == "done", shown
    # The chart: one point per day the API returned, with its recovery, joined by one line.
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{api}/v1/users/usr_demo/scores", headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        days = (await r.json())["data"]
    assert len(days) == 7
    assert shown["points"] == [[d["date"], d["recovery"]] for d in days]
    assert shown["line"] == 7
    assert shown["who"].startswith("User usr_demo, with a user token that expires at 20")
    # The error another user's path gets, read from JavaScript.
    assert shown["refused"] == (
        "403 wrong_user: This token can only access data for user usr_demo."
    )
    assert shown["problem"] == ""
    assert len(shown["steps"]) == 3 and "POST /v1/auth/user-token" in shown["steps"][0]

    # The page's backend asked for the token with the key; the browser made the API calls.
    printed = await asyncio.to_thread(demo.printed, 5)
    matched = [REQUEST_LINE.match(line) for line in printed]
    seen = [
        (m["method"], m["path"], m["credential"], m["status"], m["error"]) for m in matched if m
    ]
    assert seen == [
        ("POST", "/v1/auth/user-token", "api_key", "200", None),
        ("OPTIONS", "/v1/users/usr_demo/scores", "none", "204", None),
        ("GET", "/v1/users/usr_demo/scores", "user_token", "200", None),
        ("OPTIONS", "/v1/users/usr_abc123/scores", "none", "204", None),
        ("GET", "/v1/users/usr_abc123/scores", "user_token", "403", "wrong_user"),
    ], printed

    # The key never reaches the browser: not in the page, not in what its backend hands it.
    async with aiohttp.ClientSession() as s:
        async with s.get(page) as r:
            source = await r.text()
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        async with s.post(page + "session") as r:
            session = await r.json()
    assert key not in source and "sk_" not in source
    assert key not in json.dumps(session)
    assert set(session) == {"token", "user_id", "expires_at", "api", "origin", "other_user"}


async def test_the_page_at_another_origin_is_blocked_and_says_where_to_open_it(
    demo: Demo,  # noqa: F811 - the fixtures imported above
    browser: Browser,  # noqa: F811
) -> None:
    await asyncio.to_thread(demo.banner)
    origin = f"http://127.0.0.1:{demo.page_port}"
    # The same page, at a host name the gateway's CORS config does not allow.
    shown = await settled(browser, f"http://localhost:{demo.page_port}/")
    assert shown["state"] == "error"
    assert shown["points"] == [] and shown["refused"] == ""
    assert "Failed to fetch" in shown["problem"]
    assert f"Open this page at exactly {origin}" in shown["problem"]
    assert any(f"the gateway allows only {origin}" in step for step in shown["steps"])
