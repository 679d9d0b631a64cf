"""The key dashboard (``gateway.dashboard.routes``, ``gateway.dashboard.session``) over plain
HTTP, aiohttp's client against the real admin app: its session, CSRF, origin and sign-in
controls, the headers on every page, escaping, the audit window, and the keys it manages used
against the public listener. The browser tests are in ``test_dashboard_browser.py``."""

from __future__ import annotations

import dataclasses
import hmac
import io
import re
import ssl
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestClient

from gateway.app import create_admin_app
from gateway.dashboard import session as session_module
from gateway.dashboard.session import SignInBudget
from gateway.observe.recent import CAPACITY, RECENT, latest
from gateway.stores.base import Store
from tests.conftest import Gateway, GatewayFactory
from tests.dashboard.support import csrf_of, sign_in
from tests.support import ADMIN_TOKEN, base_url

SCORES = "/v1/users/usr_a/scores"

Admin = tuple[Gateway, TestClient[Any, Any]]


@pytest.fixture
async def dash(make_gateway: GatewayFactory, aiohttp_client: Any) -> Admin:
    RECENT.clear()
    gw = await make_gateway(admin={"token": ADMIN_TOKEN})
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    return gw, client


async def another_client(aiohttp_client: Any, gw: Gateway) -> TestClient[Any, Any]:
    """A second browser: its own cookie jar, against its own admin app (same runtime)."""
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    return client


async def status_of_key(gw: Gateway, key: str) -> int:
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    return response.status


async def create(client: TestClient[Any, Any], csrf: str, **fields: str) -> aiohttp.ClientResponse:
    data = {"csrf": csrf, "account": "acc_1", "environment": "live", **fields}
    return await client.post("/dashboard/keys", data=data, allow_redirects=False)


def new_key_on(page: str) -> str:
    found: list[str] = re.findall(r'<code id="new-key">([^<]+)</code>', page)
    assert len(found) == 1, page
    return found[0]


# --- sign-in and the session cookie ---------------------------------------------------------


async def test_sign_in_sets_a_strict_http_only_cookie_for_the_dashboard_only(
    dash: Admin,
) -> None:
    _, client = dash
    form = await client.get("/dashboard/login")
    response = await client.post(
        "/dashboard/login",
        data={"csrf": csrf_of(await form.text()), "token": ADMIN_TOKEN},
        allow_redirects=False,
    )
    assert response.status == 303
    cookies = [v for k, v in response.headers.items() if k == "Set-Cookie"]
    session = next(c for c in cookies if c.startswith("gw_dashboard="))
    attributes = {a.strip().split("=")[0].lower() for a in session.split(";")[1:]}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "Path=/dashboard" in session and "SameSite=Strict" in session
    assert "secure" not in attributes  # plain HTTP here; see the TLS test
    assert "max-age" not in attributes and "expires" not in attributes  # a browser-session cookie
    # The admin token is in no header of the answer and no page.
    assert ADMIN_TOKEN not in str(response.headers)
    assert ADMIN_TOKEN not in await (await client.get("/dashboard")).text()


async def test_over_tls_the_cookies_are_secure(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    gw = await make_gateway(admin={"token": ADMIN_TOKEN})
    server = await aiohttp_server(create_admin_app(gw.current), ssl=server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        url = f"https://127.0.0.1:{server.port}/dashboard/login"
        async with session.get(url, ssl=client_context) as form:
            assert "Secure" in form.headers["Set-Cookie"]
            csrf = csrf_of(await form.text())
        async with session.post(
            url,
            data={"csrf": csrf, "token": ADMIN_TOKEN},
            ssl=client_context,
            allow_redirects=False,
        ) as response:
            assert response.status == 303
            cookie = next(
                v for k, v in response.headers.items() if k == "Set-Cookie" and "gw_dashboard=" in v
            )
            assert "Secure" in cookie and "HttpOnly" in cookie


async def test_without_an_admin_token_the_dashboard_does_not_exist(
    make_gateway: GatewayFactory, aiohttp_client: Any
) -> None:
    gw = await make_gateway()
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    for path in ("/dashboard", "/dashboard/login", "/dashboard/static/dashboard.js"):
        assert (await client.get(path, allow_redirects=False)).status == 404, path
    response = await client.post("/dashboard/login", data={"csrf": "x", "token": "None"})
    assert response.status == 404
    response = await client.post("/dashboard/keys", data={"account": "acc_1"})
    assert response.status == 404
    assert await gw.runtime.keys.list() == []


async def test_a_wrong_token_is_refused_and_never_echoed(
    dash: Admin, log_lines: io.StringIO
) -> None:
    _gw, client = dash
    wrong = "not-the-admin-token-" + "q" * 12
    form = await client.get("/dashboard/login")
    response = await client.post(
        "/dashboard/login", data={"csrf": csrf_of(await form.text()), "token": wrong}
    )
    assert response.status == 401
    page = await response.text()
    assert "That is not the admin token." in page
    assert wrong not in page and ADMIN_TOKEN not in page
    assert "gw_dashboard=" not in response.headers.get("Set-Cookie", "")
    # Still signed out.
    home = await client.get("/dashboard", allow_redirects=False)
    assert (home.status, home.headers["Location"]) == (303, "/dashboard/login")
    logged = log_lines.getvalue()
    assert "dashboard sign-in refused" in logged and "wrong_token" in logged
    assert wrong not in logged and ADMIN_TOKEN not in logged


async def test_the_token_is_compared_whole_in_constant_time(
    dash: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = dash
    compared: list[tuple[object, object]] = []
    constant_time = hmac.compare_digest

    def recording(a: bytes | str, b: bytes | str) -> bool:
        compared.append((a, b))
        return constant_time(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(hmac, "compare_digest", recording)
    guess = ADMIN_TOKEN[:-1] + "x"
    form = await client.get("/dashboard/login")
    csrf = csrf_of(await form.text())
    response = await client.post("/dashboard/login", data={"csrf": csrf, "token": guess})
    assert response.status == 401
    assert (guess.encode(), ADMIN_TOKEN.encode()) in compared
    # The sign-in form's own token went through the same comparison.
    assert (csrf.encode(), csrf.encode()) in compared


async def test_sign_in_is_a_post_of_the_form_only(dash: Admin) -> None:
    """The token in a URL does nothing: GET ignores the query, and there is no other way in."""
    _, client = dash
    response = await client.get(f"/dashboard/login?token={ADMIN_TOKEN}", allow_redirects=False)
    assert response.status == 200
    assert "gw_dashboard=" not in response.headers.get("Set-Cookie", "")
    assert ADMIN_TOKEN not in await response.text()
    home = await client.get("/dashboard", allow_redirects=False)
    assert home.status == 303


async def test_the_sign_in_form_needs_its_own_csrf_pair(dash: Admin, aiohttp_client: Any) -> None:
    _gw, client = dash
    # No sign-in cookie (the form was never loaded by this browser): refused, token unread,
    # whatever the field holds, nothing included (no cookie and no field are not a pair).
    jar = client.session.cookie_jar
    for data in ({"csrf": "A" * 43}, {"csrf": ""}, {}):
        jar.clear()  # every refusal hands out a fresh sign-in cookie: start without one
        response = await client.post(
            "/dashboard/login", data={**data, "token": ADMIN_TOKEN}, allow_redirects=False
        )
        assert response.status == 403, data
        assert "gw_dashboard=" not in response.headers.get("Set-Cookie", "")
    jar.clear()
    # A cookie that the gateway did not make, with the same value in the field.
    client.session.cookie_jar.update_cookies({"gw_dashboard_signin": "forged"})
    response = await client.post(
        "/dashboard/login", data={"csrf": "forged", "token": ADMIN_TOKEN}, allow_redirects=False
    )
    assert response.status == 403
    # A cookie, but another value in the form.
    await client.get("/dashboard/login")
    response = await client.post(
        "/dashboard/login", data={"csrf": "B" * 43, "token": ADMIN_TOKEN}, allow_redirects=False
    )
    assert response.status == 403
    assert (await client.get("/dashboard", allow_redirects=False)).status == 303
    # The control: the pair as the form carries it.
    await sign_in(client)


async def test_failed_sign_ins_are_budgeted_per_address(dash: Admin) -> None:
    gw, client = dash
    for _ in range(session_module.FAILURES_PER_ADDRESS):
        form = await client.get("/dashboard/login")
        response = await client.post(
            "/dashboard/login", data={"csrf": csrf_of(await form.text()), "token": "w" * 20}
        )
        assert response.status == 401
    # Past the budget even the right token is not tried.
    form = await client.get("/dashboard/login")
    response = await client.post(
        "/dashboard/login",
        data={"csrf": csrf_of(await form.text()), "token": ADMIN_TOKEN},
        allow_redirects=False,
    )
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "gw_dashboard=" not in response.headers.get("Set-Cookie", "")
    gw.clock.advance(session_module.FAILURE_WINDOW + 1)
    await sign_in(client)


def test_the_overall_budget_holds_across_addresses() -> None:
    budget = SignInBudget()
    now = 1000.0
    for i in range(session_module.FAILURES_OVERALL):
        assert budget.retry_after(f"10.0.0.{i}", now) == 0
        budget.failed(f"10.0.0.{i}", now)
    assert budget.retry_after("192.0.2.1", now) > 0  # an address that never failed
    assert budget.retry_after("192.0.2.1", now + session_module.FAILURE_WINDOW) == 0


def test_the_address_table_is_bounded() -> None:
    budget = SignInBudget()
    for i in range(session_module.MAX_TRACKED_ADDRESSES + 50):
        budget.failed(f"addr{i}", float(i) * 1000)  # spaced out: the overall window never fills
    assert len(budget._by_address) == session_module.MAX_TRACKED_ADDRESSES


# --- refused POSTs change nothing ---------------------------------------------------------


async def test_a_post_without_the_session_is_refused_and_changes_nothing(
    dash: Admin, aiohttp_client: Any
) -> None:
    gw, client = dash
    key, record = await gw.runtime.keys.create("acc_1", "live")
    attempts = [
        ("/dashboard/keys", {"account": "acc_1", "environment": "live"}),
        (f"/dashboard/keys/{record.key_id}/revoke", {}),
        (f"/dashboard/keys/{record.key_id}/rotate", {"grace_seconds": "0"}),
        ("/dashboard/relationships", {"account": "acc_1", "subject": "m", "actor": "c"}),
    ]
    for path, data in attempts:
        response = await client.post(path, data={**data, "csrf": "x"}, allow_redirects=False)
        assert response.status == 403, path
        assert "Your session has ended" in await response.text()
    # A made-up session cookie is no session either.
    client.session.cookie_jar.update_cookies({"gw_dashboard": "A" * 43})
    path, data = attempts[0]
    response = await client.post(path, data={**data, "csrf": "x"}, allow_redirects=False)
    assert response.status == 403
    assert [r.key_id for r in await gw.runtime.keys.list()] == [record.key_id]
    assert await status_of_key(gw, key) == 200
    assert await gw.runtime.store.list_relationships("acc_1") == []


@pytest.mark.parametrize("forged", ["", "A" * 43, "other-session"])
async def test_a_forged_csrf_token_is_refused_and_changes_nothing(
    dash: Admin, aiohttp_client: Any, forged: str
) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    if forged == "other-session":  # a real token, of another signed-in browser
        forged = await sign_in(await another_client(aiohttp_client, gw))
        assert forged != csrf
    key, record = await gw.runtime.keys.create("acc_1", "live")
    for path, data in [
        ("/dashboard/keys", {"account": "acc_1", "environment": "live"}),
        (f"/dashboard/keys/{record.key_id}/revoke", {}),
        (f"/dashboard/keys/{record.key_id}/rotate", {}),
        ("/dashboard/relationships", {"account": "acc_1", "subject": "m", "actor": "c"}),
        ("/dashboard/logout", {}),
    ]:
        response = await client.post(path, data={**data, "csrf": forged}, allow_redirects=False)
        assert response.status == 403, path
        assert "security token is wrong" in await response.text()
    assert [r.key_id for r in await gw.runtime.keys.list()] == [record.key_id]
    assert await status_of_key(gw, key) == 200
    assert await gw.runtime.store.list_relationships("acc_1") == []
    # The control: the session's own token is accepted (and the session survived).
    response = await create(client, csrf)
    assert response.status == 303
    assert len(await gw.runtime.keys.list()) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "null"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of the same host is the same site
    ],
)
async def test_a_post_from_another_origin_is_refused(dash: Admin, headers: dict[str, str]) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    response = await client.post(
        "/dashboard/keys",
        data={"csrf": csrf, "account": "acc_1", "environment": "live"},
        headers=headers,
        allow_redirects=False,
    )
    assert response.status == 403
    assert await gw.runtime.keys.list() == []
    # Signing in from another origin is refused the same way.
    fresh = await another_login_form(client)
    response = await client.post(
        "/dashboard/login",
        data={"csrf": fresh, "token": ADMIN_TOKEN},
        headers=headers,
        allow_redirects=False,
    )
    assert response.status == 403
    # The control: the dashboard's own origin, as a browser sends it.
    own = {"Origin": base_url(client.server), "Sec-Fetch-Site": "same-origin"}
    response = await client.post(
        "/dashboard/keys",
        data={"csrf": csrf, "account": "acc_1", "environment": "live"},
        headers=own,
        allow_redirects=False,
    )
    assert response.status == 303
    assert len(await gw.runtime.keys.list()) == 1


async def test_pages_opened_from_a_link_elsewhere_still_show(dash: Admin) -> None:
    """Only POSTs are checked for their origin: a signed-in operator who follows a link to the
    dashboard from a wiki or a ticket gets the page (a browser would not send the Strict cookie
    along then, and the page would ask to sign in; it never refuses)."""
    _, client = dash
    await sign_in(client)
    cross = {"Origin": "https://wiki.example", "Sec-Fetch-Site": "cross-site"}
    response = await client.get("/dashboard", headers=cross, allow_redirects=False)
    assert response.status == 200
    response = await client.get("/dashboard/login", headers=cross, allow_redirects=False)
    assert response.status == 303  # already signed in


async def another_login_form(client: TestClient[Any, Any]) -> str:
    """The sign-in form's token for this browser, even while signed in (sign-out first)."""
    jar = client.session.cookie_jar
    saved = [c for c in jar if c.key == "gw_dashboard"]
    jar.clear(lambda c: c.key == "gw_dashboard")
    form = await client.get("/dashboard/login")
    csrf = csrf_of(await form.text())
    for cookie in saved:
        jar.update_cookies({cookie.key: cookie.value})
    return csrf


# --- session lifetime ------------------------------------------------------------------------


async def test_a_session_ends_after_30_idle_minutes(dash: Admin) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    for _ in range(3):  # activity keeps it alive past 30 minutes in all
        gw.clock.advance(session_module.IDLE_SECONDS - 60)
        assert (await client.get("/dashboard", allow_redirects=False)).status == 200
    gw.clock.advance(session_module.IDLE_SECONDS)
    home = await client.get("/dashboard", allow_redirects=False)
    assert (home.status, home.headers["Location"]) == (303, "/dashboard/login")
    assert (await create(client, csrf)).status == 403
    assert await gw.runtime.keys.list() == []


async def test_a_session_ends_8_hours_after_sign_in_whatever_the_activity(dash: Admin) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    elapsed = 0
    while elapsed + 20 * 60 < session_module.ABSOLUTE_SECONDS:
        gw.clock.advance(20 * 60)
        elapsed += 20 * 60
        assert (await client.get("/dashboard", allow_redirects=False)).status == 200, elapsed
    gw.clock.advance(session_module.ABSOLUTE_SECONDS - elapsed)
    assert (await client.get("/dashboard", allow_redirects=False)).status == 303
    assert (await create(client, csrf)).status == 403


async def test_a_new_admin_token_ends_every_session(dash: Admin, aiohttp_client: Any) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    settings = gw.runtime.settings
    settings = settings.model_copy(
        update={"admin": settings.admin.model_copy(update={"token": "a-new-admin-token-98765"})}
    )
    # What a reload does: one new runtime, swapped in whole.
    gw.current.runtime = dataclasses.replace(gw.runtime, settings=settings)
    assert (await client.get("/dashboard", allow_redirects=False)).status == 303
    assert (await create(client, csrf)).status == 403
    assert await gw.runtime.keys.list() == []
    await sign_in(client, "a-new-admin-token-98765")


async def test_signing_out_ends_the_session_on_the_server(dash: Admin) -> None:
    _gw, client = dash
    csrf = await sign_in(client)
    cookie = next(c.value for c in client.session.cookie_jar if c.key == "gw_dashboard")
    response = await client.post("/dashboard/logout", data={"csrf": csrf}, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/dashboard/login")
    # Replaying the old cookie (as a thief would) finds nothing.
    client.session.cookie_jar.update_cookies({"gw_dashboard": cookie})
    assert (await client.get("/dashboard", allow_redirects=False)).status == 303
    assert (await create(client, csrf)).status == 403


def test_the_session_table_is_bounded() -> None:
    sessions = session_module.Sessions()
    ids = [sessions.open(ADMIN_TOKEN, 1000.0)[0] for _ in range(session_module.MAX_SESSIONS + 5)]
    assert len(sessions) == session_module.MAX_SESSIONS
    assert sessions.get(ids[0], ADMIN_TOKEN, 1000.0) is None  # the oldest went first
    assert sessions.get(ids[-1], ADMIN_TOKEN, 1000.0) is not None


# --- pages -----------------------------------------------------------------------------------


async def test_every_dashboard_response_carries_the_security_headers(
    dash: Admin, aiohttp_client: Any
) -> None:
    gw, client = dash
    responses = [await client.get("/dashboard/login")]
    csrf = await sign_in(client)
    await gw.runtime.keys.create("acc_1", "live")
    for path in (
        "/dashboard",
        "/dashboard/accounts/acc_1",
        "/dashboard/audit?account=acc_1",
        "/dashboard/static/dashboard.js",
        "/dashboard/static/dashboard.css",
        "/dashboard/static/nothing.js",
    ):
        responses.append(await client.get(path))
    responses.append(await create(client, csrf))
    responses.append(await create(client, "forged"))
    expected = {
        "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    for response in responses:
        for name, value in expected.items():
            assert response.headers.get(name) == value, (response.url, name)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/x-www-form-urlencoded; charset=x-nonexistent", b"token=x", 400),
        ("multipart/form-data", b"token=x", 400),  # no boundary
        ("application/x-www-form-urlencoded", b"token=" + b"x" * 2_000_000, 413),
    ],
)
async def test_a_form_that_cannot_be_read_is_refused_with_the_pages_headers(
    dash: Admin, content_type: str, body: bytes, status: int
) -> None:
    """A hostile try-out: these were 500s (an unknown charset, multipart without a boundary:
    before any session or token was asked for) or a plain-text 413 without the headers."""
    gw, client = dash
    headers = {"Content-Type": content_type}
    signed_out = await client.post("/dashboard/login", data=io.BytesIO(body), headers=headers)
    csrf = await sign_in(client)
    signed_in = await client.post("/dashboard/keys", data=io.BytesIO(body), headers=headers)
    for response in (signed_out, signed_in):
        assert response.status == status, await response.text()
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
    assert await gw.runtime.keys.list() == []
    assert (await create(client, csrf)).status == 303  # the session is fine


async def test_pages_have_no_inline_script_or_style(dash: Admin) -> None:
    gw, client = dash
    await sign_in(client)
    await gw.runtime.keys.create("acc_1", "live")
    for path in ("/dashboard", "/dashboard/accounts/acc_1", "/dashboard/audit"):
        page = await (await client.get(path)).text()
        scripts = re.findall(r"<script[^>]*>", page)
        assert scripts == ['<script src="/dashboard/static/dashboard.js" defer>'], path
        assert "<style" not in page and not re.search(r"<[^>]*\sstyle=", page)
        assert not re.search(r"<[^>]*\son[a-z]+=", page, re.IGNORECASE)  # no event handlers
        assert "http://" not in page and "https://" not in page  # nothing from elsewhere


async def test_static_files_are_a_fixed_set(dash: Admin) -> None:
    _, client = dash
    script = await client.get("/dashboard/static/dashboard.js")
    assert script.status == 200
    assert script.content_type == "text/javascript"
    assert "data-copy" in await script.text()
    for name in ("session.py", "..%2Froutes.py", "%2e%2e%2f__init__.py", "dashboard.js.bak"):
        assert (await client.get(f"/dashboard/static/{name}")).status == 404, name


async def test_values_are_escaped_on_every_page(dash: Admin) -> None:
    gw, client = dash
    await sign_in(client)
    hostile = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"
    await gw.runtime.keys.create("acc_1", "live", label=hostile)
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;&lt;img" in page
    audit = await (await client.get("/dashboard/audit", params={"actor": hostile})).text()
    assert hostile not in audit and "&lt;script&gt;" in audit
    # An account that is not an identifier is not a page.
    response = await client.get("/dashboard/accounts/%3Cscript%3E")
    assert response.status == 404 and "<script>" not in await response.text()


# --- the keys it manages, used on the public listener --------------------------------------


async def test_create_rotate_revoke_through_the_forms_then_on_the_public_listener(
    dash: Admin, log_lines: io.StringIO
) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    response = await create(client, csrf, label="backend")
    assert (response.status, response.headers["Location"]) == (303, "/dashboard/accounts/acc_1")
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    first = new_key_on(page)
    assert first.startswith("sk_live_")
    # Shown once: the next visit no longer has it.
    again = await (await client.get("/dashboard/accounts/acc_1")).text()
    assert first not in again and 'id="new-key"' not in again
    assert await status_of_key(gw, first) == 200
    (record,) = await gw.runtime.keys.list("acc_1")

    response = await client.post(
        f"/dashboard/keys/{record.key_id}/rotate",
        data={"csrf": csrf, "grace_seconds": "300"},
        allow_redirects=False,
    )
    assert response.status == 303
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    second = new_key_on(page)
    assert "stops in 5 min" in page  # the old key, within its grace period
    assert await status_of_key(gw, first) == 200
    assert await status_of_key(gw, second) == 200
    gw.clock.advance(301)
    assert await status_of_key(gw, first) == 401
    assert await status_of_key(gw, second) == 200

    new_record = next(r for r in await gw.runtime.keys.list("acc_1") if r.rotated_to is None)
    response = await client.post(
        f"/dashboard/keys/{new_record.key_id}/revoke", data={"csrf": csrf}, allow_redirects=False
    )
    assert response.status == 303
    gw.clock.advance(1.1)  # the revocation bound
    assert await status_of_key(gw, second) == 401
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    assert f"Key {new_record.key_id} revoked." in page
    statuses = dict(re.findall(r'<tr data-key-id="([^"]+)" class="status-(\w+)">', page))
    assert statuses == {record.key_id: "rotated", new_record.key_id: "revoked"}
    # Each action is an audit line naming the admin and the key, never the key itself.
    logged = log_lines.getvalue()
    assert logged.count('"credential":"admin"') == 3
    assert f'"key_id":"{record.key_id}"' in logged
    assert first not in logged and second not in logged and ADMIN_TOKEN not in logged


async def test_test_keys_lifetimes_and_refusals(dash: Admin) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    await create(client, csrf, environment="test", lifetime_days="7")
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    assert new_key_on(page).startswith("sk_test_")
    (record,) = await gw.runtime.keys.list("acc_1")
    assert record.expires_at - record.created_at == 7 * 86400
    for fields, message in [
        # The form asks for days, and so does its refusal (not the key service's seconds).
        ({"lifetime_days": "400"}, "whole number of days, from 1 to 90"),
        ({"lifetime_days": "0"}, "whole number of days, from 1 to 90"),
        ({"lifetime_days": "soon"}, "whole number of days"),
        ({"environment": "prod"}, "environment must be live or sandbox"),
        ({"label": "a\nb"}, "label must be at most 200 printable"),
    ]:
        response = await create(client, csrf, **fields)
        assert response.status == 303
        page = await (await client.get(response.headers["Location"])).text()
        assert message in page, fields
    response = await create(client, csrf, account="bad account")
    assert response.headers["Location"] == "/dashboard"
    assert len(await gw.runtime.keys.list()) == 1


async def test_relationships_are_granted_listed_and_revoked(dash: Admin) -> None:
    gw, client = dash
    csrf = await sign_in(client)
    pair = {"csrf": csrf, "account": "acc_1", "subject": "mem_1", "actor": "cg_1"}
    response = await client.post(
        "/dashboard/relationships", data={**pair, "action": "grant"}, allow_redirects=False
    )
    assert response.status == 303
    assert await gw.runtime.store.relationship_active("acc_1", "mem_1", "cg_1")
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    assert "<td>mem_1</td><td>cg_1</td>" in page
    await client.post("/dashboard/relationships", data={**pair, "action": "revoke"})
    assert not await gw.runtime.store.relationship_active("acc_1", "mem_1", "cg_1")
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    assert "No active relationships." in page
    for bad in ({"subject": "mem 1"}, {"actor": ""}, {"action": "delete"}):
        await client.post("/dashboard/relationships", data={**pair, "action": "grant", **bad})
    assert await gw.runtime.store.list_relationships("acc_1") == []


async def test_with_an_http_relationship_provider_the_page_says_where_they_live(
    make_gateway: GatewayFactory, aiohttp_client: Any
) -> None:
    gw = await make_gateway(
        admin={"token": ADMIN_TOKEN},
        relationships={
            "provider": "http",
            "url_template": "http://127.0.0.1:9/{account}/{subject}/{actor}",
        },
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    await sign_in(client)
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    assert "relationships.provider: http" in page
    assert 'id="grant"' not in page


# --- the audit window ------------------------------------------------------------------------


async def test_the_audit_window_shows_public_requests_by_account_and_actor(dash: Admin) -> None:
    gw, client = dash
    await sign_in(client)
    key_1, record_1 = await gw.runtime.keys.create("acc_1", "live")
    key_2, record_2 = await gw.runtime.keys.create("acc_2", "live")
    assert await status_of_key(gw, key_1) == 200
    assert await status_of_key(gw, key_2) == 200
    response = await gw.client.get(
        "/v1/nowhere", headers={"Authorization": f"Bearer {key_1}"}
    )  # authenticated, then refused: a deny
    assert response.status in (403, 404)
    page = await (await client.get("/dashboard/accounts/acc_1")).text()
    table = page[page.index('id="account-audit"') :]
    assert table.count(record_1.key_id) >= 2 and record_2.key_id not in table
    assert ">allow<" in table and ">deny<" in table
    by_actor = await (
        await client.get("/dashboard/audit", params={"actor": record_2.key_id})
    ).text()
    assert record_2.key_id in by_actor and record_1.key_id not in by_actor
    assert "the gateway.audit lines of the log are the audit trail" in by_actor
    assert [e.account for e in latest()] == ["acc_1", "acc_2", "acc_1"]


def test_the_audit_window_is_bounded() -> None:
    RECENT.clear()
    for i in range(CAPACITY + 10):
        RECENT.append(
            (float(i), f"r{i}", "route", "GET", 200, "api_key", "a", None, "k", "k", "allow")
        )
    assert len(RECENT) == CAPACITY
    assert latest(limit=1)[0].request_id == f"r{CAPACITY + 9}"  # newest first
    assert latest(limit=CAPACITY + 10)[-1].request_id == "r10"  # the oldest ten are gone
    RECENT.clear()


async def test_dashboard_actions_appear_in_the_audit_window(dash: Admin) -> None:
    _gw, client = dash
    csrf = await sign_in(client)
    await create(client, csrf)
    await client.post(
        "/dashboard/relationships",
        data={
            "csrf": csrf,
            "account": "acc_1",
            "subject": "mem_1",
            "actor": "cg_1",
            "action": "grant",
        },
    )
    page = await (await client.get("/dashboard/audit", params={"actor": "admin"})).text()
    assert "dashboard:create_key" in page and "dashboard:grant_caregiver:cg_1" in page
    # Nothing secret reaches the window.
    assert all(
        "sk_" not in str(field) for event in latest() for field in dataclasses.astuple(event)
    )


async def test_keys_and_relationships_through_the_page_on_both_stores(
    make_gateway: GatewayFactory, aiohttp_client: Any, store: Store
) -> None:
    gw = await make_gateway(store=store, admin={"token": ADMIN_TOKEN})
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    csrf = await sign_in(client)
    await create(client, csrf, account="acc_s")
    key = new_key_on(await (await client.get("/dashboard/accounts/acc_s")).text())
    assert await status_of_key(gw, key) == 200
    pair = {"csrf": csrf, "account": "acc_s", "subject": "mem_1", "actor": "cg_1"}
    await client.post("/dashboard/relationships", data={**pair, "action": "grant"})
    page = await (await client.get("/dashboard/accounts/acc_s")).text()
    assert "<td>mem_1</td><td>cg_1</td>" in page
    (record,) = await gw.runtime.keys.list("acc_s")
    await client.post(f"/dashboard/keys/{record.key_id}/revoke", data={"csrf": csrf})
    gw.clock.advance(1.1)
    assert await status_of_key(gw, key) == 401
    overview = await (await client.get("/dashboard")).text()
    assert '<a href="/dashboard/accounts/acc_s">acc_s</a></td><td>0</td><td>1</td>' in overview
