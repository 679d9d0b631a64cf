"""The dashboard's pages and form handlers, mounted under ``/dashboard`` on the admin listener.

Contract:

- Without ``admin.token`` every dashboard path answers 404, like the admin API.
- ``GET`` pages need a session (else a redirect to the sign-in page); every ``POST`` is checked,
  before its form is acted on, in this order: not cross-site (``Origin`` / ``Sec-Fetch-Site``,
  403), a live session (403), the session's CSRF token in the form (403). A refused POST
  changes nothing.
- Sign-in is a POST of the admin token (never a URL), compared in constant time, within the
  failed sign-in budget (429 past it); success opens a new session (cookie ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/dashboard``, ``Secure`` when the admin listener has TLS).
- A key created or rotated here is shown once, on the page the form redirects to, and then
  forgotten by the dashboard. Actions write a ``gateway.audit`` line (actor ``admin``, the
  session's handle, never its id) and appear in the dashboard's audit window.
- Every response carries the headers of :data:`SECURITY_HEADERS`; pages load only the
  gateway's own ``/dashboard/static/`` files.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from gateway.dashboard import templates
from gateway.dashboard.session import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Session,
    Sessions,
    SignInBudget,
    cross_site,
    new_secret,
    same,
    well_formed,
)
from gateway.errors import GatewayError
from gateway.identifiers import is_identifier
from gateway.observe import logs
from gateway.observe.recent import RECENT, latest
from gateway.runtime import CURRENT, Runtime

SECURITY_HEADERS = {
    # SECURITY: no script, style or frame but the gateway's own files; no framing (clickjacking).
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    # SECURITY: no page URL leaves for another origin in a Referer; no page (a new key on it)
    # is kept in a cache. Not "no-referrer": under it browsers send "Origin: null" on the
    # dashboard's own form posts, and the Origin check could not tell them from another site's.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
AUDIT_ROWS_ON_ACCOUNT = 20
AUDIT_ROWS = 200
RELATIONSHIPS_SHOWN = 500


@dataclass(slots=True)
class Dashboard:
    """The dashboard's per-listener state: sessions, the sign-in budget, the static files."""

    sessions: Sessions = field(default_factory=Sessions)
    budget: SignInBudget = field(default_factory=SignInBudget)
    static: dict[str, tuple[bytes, str]] = field(default_factory=dict)


DASHBOARD = web.AppKey("dashboard", Dashboard)


@dataclass(slots=True)
class Context:
    """What a signed-in handler gets: the runtime, the session and (for a POST) the form."""

    runtime: Runtime
    session: Session
    session_id: str
    form: MultiDictProxy[Any] | None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SignedInHandler = Callable[[web.Request, Context], Awaitable[web.StreamResponse]]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _secure(request: web.Request, runtime: Runtime) -> bool:
    return request.secure or runtime.settings.admin.tls_cert is not None


def _own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _refused(request: web.Request, reason: str, text: str, status: int = 403) -> web.Response:
    logs.event(
        "dashboard request refused",
        logging.WARNING,
        reason=reason,
        route=request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else None,
        method=request.method if request.method in ("GET", "HEAD", "POST") else "OTHER",
        client=request.remote,
    )
    return _html(
        templates.message_page("Refused", text, sign_in_link=reason == "no_session"), status
    )


def page(handler: Handler) -> Handler:
    """Every dashboard response: 404 while the dashboard is disabled, the security headers."""

    async def impl(request: web.Request) -> web.StreamResponse:
        if request.app[CURRENT].runtime.settings.admin_token is None:
            response: web.StreamResponse = _html(
                templates.message_page("Not found", "The dashboard is disabled (set admin.token)."),
                404,
            )
        else:
            response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return impl


def signed_in(handler: SignedInHandler) -> Handler:
    """A page or action for a signed-in operator (see the module's contract for the order)."""

    async def impl(request: web.Request) -> web.StreamResponse:
        runtime = request.app[CURRENT].runtime
        state = request.app[DASHBOARD]
        token = runtime.settings.admin_token
        assert token is not None  # page() answered 404 otherwise
        posting = request.method == "POST"
        # SECURITY: a form posted from another origin (or site) is refused before anything.
        if posting and cross_site(request.headers, _own_origin(request)):
            return _refused(request, "cross_site", "This form was not sent by the dashboard.")
        session_id = request.cookies.get(SESSION_COOKIE, "")
        session = state.sessions.get(session_id, token, runtime.clock.now())
        if session is None and not posting:
            return _redirect("/dashboard/login")
        # SECURITY: no action without a live session opened with the current admin token.
        if session is None:
            return _refused(
                request, "no_session", "Your session has ended (or never began); sign in again."
            )
        form = None
        if posting:
            read = await _form(request)
            if isinstance(read, web.Response):
                return read
            form = read
            # SECURITY: the session's CSRF token must come back in the form (constant time).
            if not same(_field(form, "csrf"), session.csrf):
                return _refused(
                    request, "csrf", "The form's security token is wrong; reload the page."
                )
        return await handler(request, Context(runtime, session, session_id, form))

    return impl


async def _form(request: web.Request) -> MultiDictProxy[Any] | web.Response:
    """The posted form, or the refusal to answer instead (with the dashboard's headers, like
    every page): 413 past the admin listener's 1 MiB, 400 for a body aiohttp cannot read as a
    form (a charset Python does not know, multipart without a boundary), which raised out of
    the handler as a 500 before."""
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _refused(request, "too_large", "The form is too large.", 413)
    except (LookupError, ValueError):  # UnicodeDecodeError is a ValueError
        return _refused(request, "bad_form", "The form could not be read.", 400)


def _field(form: MultiDictProxy[Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _set_cookie(
    response: web.StreamResponse, name: str, value: str, *, secure: bool, max_age: int | None
) -> None:
    # SECURITY: never readable by script, never sent by a request another site starts, only to
    # the dashboard's paths, and only over TLS when the admin listener has it.
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict",
        path=COOKIE_PATH,
        secure=secure,
        max_age=max_age,
    )


# --- sign-in ---------------------------------------------------------------------------------


def _sign_in_response(
    request: web.Request, runtime: Runtime, error: str | None = None, status: int = 200
) -> web.Response:
    nonce = new_secret()
    response = _html(templates.sign_in_page(nonce, error), status)
    _set_cookie(response, SIGN_IN_COOKIE, nonce, secure=_secure(request, runtime), max_age=3600)
    return response


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    runtime = request.app[CURRENT].runtime
    state = request.app[DASHBOARD]
    token = runtime.settings.admin_token
    assert token is not None
    if state.sessions.get(request.cookies.get(SESSION_COOKIE, ""), token, runtime.clock.now()):
        return _redirect("/dashboard")
    return _sign_in_response(request, runtime)


async def sign_in(request: web.Request) -> web.StreamResponse:
    runtime = request.app[CURRENT].runtime
    state = request.app[DASHBOARD]
    expected = runtime.settings.admin_token
    assert expected is not None
    # SECURITY: a sign-in posted from another origin (or site) is refused.
    if cross_site(request.headers, _own_origin(request)):
        return _refused(request, "cross_site", "This form was not sent by the dashboard.")
    client = request.remote or "unknown"
    now = runtime.clock.now()
    wait = state.budget.retry_after(client, now)
    # SECURITY: failed sign-ins are budgeted per address and overall; past the budget the
    # token is not even compared.
    if wait > 0:
        logs.event(
            "dashboard sign-in refused", logging.WARNING, reason="rate_limited", client=client
        )
        response = _sign_in_response(
            request, runtime, "Too many failed sign-ins; wait a minute and try again.", 429
        )
        response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return response
    form = await _form(request)
    if isinstance(form, web.Response):
        return form
    nonce = request.cookies.get(SIGN_IN_COOKIE, "")
    # SECURITY: the sign-in form's double-submit pair (cookie and field) must match, and be
    # one the gateway made (else no cookie and an empty field would be a "matching" pair).
    if not well_formed(nonce) or not same(_field(form, "csrf"), nonce):
        logs.event("dashboard sign-in refused", logging.WARNING, reason="csrf", client=client)
        return _sign_in_response(request, runtime, "The sign-in form expired; try again.", 403)
    presented = _field(form, "token")
    # SECURITY: constant-time comparison of the whole token.
    if not same(presented, expected):
        state.budget.failed(client, now)  # SECURITY: every failure spends the budget.
        logs.event(
            "dashboard sign-in refused", logging.WARNING, reason="wrong_token", client=client
        )
        return _sign_in_response(request, runtime, "That is not the admin token.", 401)
    state.budget.succeeded(client)
    session_id, session = state.sessions.open(expected, now)
    logs.event("dashboard sign-in", session=session.handle, client=client)
    response = _redirect("/dashboard")
    _set_cookie(
        response, SESSION_COOKIE, session_id, secure=_secure(request, runtime), max_age=None
    )
    response.del_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return response


async def sign_out(request: web.Request, ctx: Context) -> web.StreamResponse:
    request.app[DASHBOARD].sessions.close(ctx.session_id)
    logs.event("dashboard sign-out", session=ctx.session.handle)
    response = _redirect("/dashboard/login")
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- pages -------------------------------------------------------------------------------------


def _take_flash(session: Session) -> list[tuple[str, str]]:
    flash, session.flash = session.flash, []
    return flash


async def overview(request: web.Request, ctx: Context) -> web.StreamResponse:
    try:
        records = await ctx.runtime.keys.list()
    except GatewayError as error:
        return _html(templates.message_page("Unavailable", error.message), error.status)
    now = ctx.runtime.clock.now()
    accounts: dict[str, tuple[int, int, set[str]]] = {}
    for record in records:
        active, total, envs = accounts.get(record.account, (0, 0, set()))
        envs.add(record.environment)
        accounts[record.account] = (
            active + (record.status(now) == "active"),
            total + 1,
            envs,
        )
    rows = [
        (a, active, total, sorted(envs)) for a, (active, total, envs) in sorted(accounts.items())
    ]
    return _html(templates.overview_page(ctx.session.csrf, rows, _take_flash(ctx.session)))


async def find_account(request: web.Request, ctx: Context) -> web.StreamResponse:
    account = request.query.get("account", "").strip()
    if not is_identifier(account):
        ctx.session.flash.append(("error", "An account is 1-128 letters, digits, '_' or '-'."))
        return _redirect("/dashboard")
    return _redirect(templates.account_url(account))


async def account_page(request: web.Request, ctx: Context) -> web.StreamResponse:
    account = request.match_info["account"]
    if not is_identifier(account):
        return _html(templates.message_page("Not found", "No such account."), 404)
    runtime = ctx.runtime
    relationships: list[tuple[str, str]] | None = None
    note = None
    try:
        keys = await runtime.keys.list(account)
        if runtime.settings.relationships.provider == "http":
            note = (
                "Relationships come from the relationship service this gateway is configured "
                "with (relationships.provider: http); manage them there."
            )
        else:
            relationships = await runtime.store.list_relationships(account)
    except GatewayError as error:
        return _html(templates.message_page("Unavailable", error.message), error.status)
    flash = _take_flash(ctx.session)
    if relationships is not None and len(relationships) > RELATIONSHIPS_SHOWN:
        flash.append(
            (
                "ok",
                f"Showing the first {RELATIONSHIPS_SHOWN} of {len(relationships)} relationships.",
            )
        )
        relationships = relationships[:RELATIONSHIPS_SHOWN]
    secret, ctx.session.flash_secret = ctx.session.flash_secret, None
    events = latest(account=account, limit=AUDIT_ROWS_ON_ACCOUNT)
    return _html(
        templates.account_page(
            ctx.session.csrf,
            account,
            keys,
            relationships,
            events,
            runtime.clock.now(),
            secret=secret,
            flash=flash,
            relationships_note=note,
        )
    )


async def audit_page(request: web.Request, ctx: Context) -> web.StreamResponse:
    account = request.query.get("account", "").strip() or None
    actor = request.query.get("actor", "").strip() or None
    events = latest(account=account, actor=actor, limit=AUDIT_ROWS)
    workers = ctx.runtime.settings.workers
    note = (
        f"This admin listener is the supervisor of {workers} workers; it serves no public "
        "requests, so their audit events are only in the workers' log lines."
        if workers > 1
        else None
    )
    return _html(
        templates.audit_page(
            ctx.session.csrf, events, account, actor, note=note, flash=_take_flash(ctx.session)
        )
    )


# --- actions ---------------------------------------------------------------------------------


def _record(
    ctx: Context,
    action: str,
    account: str,
    *,
    key_id: str | None = None,
    subject: str | None = None,
    **extra: str,
) -> None:
    """An audit line for an action taken through the dashboard, and its entry in the window."""
    request_id = uuid.uuid4().hex
    route = f"dashboard:{action}"
    logs.audit(
        request_id=request_id,
        route=route,
        method="POST",
        status=303,
        credential="admin",
        account=account,
        subject=subject,
        actor="admin",
        key_id=key_id,
        outcome="allow",
        session=ctx.session.handle,
        **extra,
    )
    RECENT.append(
        (
            time.time(),
            request_id,
            route,
            "POST",
            303,
            "admin",
            account,
            subject,
            "admin",
            key_id,
            "allow",
        )
    )


async def create_key(request: web.Request, ctx: Context) -> web.StreamResponse:
    assert ctx.form is not None
    account = _field(ctx.form, "account").strip()
    back = templates.account_url(account) if is_identifier(account) else "/dashboard"
    choice = _field(ctx.form, "environment")
    environment, test = ("sandbox", True) if choice == "test" else (choice, False)
    days = _field(ctx.form, "lifetime_days").strip()
    longest = int(ctx.runtime.settings.api_keys.lifetime // 86400)
    try:
        lifetime = int(days) * 86400 if days else None
    except ValueError:
        lifetime = -1
    if lifetime is not None and not 1 <= lifetime // 86400 <= longest:
        # The form asks for days: the key service's limit, in seconds, would not read as one.
        message = (
            f"The lifetime is a whole number of days, from 1 to {longest}."
            if longest >= 1
            else "Keys live less than a day here (api_keys.lifetime): leave the lifetime empty."
        )
        ctx.session.flash.append(("error", message))
        return _redirect(back)
    try:
        key, record = await ctx.runtime.keys.create(
            account, environment, label=_field(ctx.form, "label"), test=test, lifetime=lifetime
        )
    except GatewayError as error:
        ctx.session.flash.append(("error", error.message))
        return _redirect(back)
    ctx.session.flash_secret = (record.key_id, key)
    ctx.session.flash.append(("ok", f"Key {record.key_id} created ({record.environment})."))
    _record(ctx, "create_key", record.account, key_id=record.key_id)
    return _redirect(templates.account_url(record.account))


async def rotate_key(request: web.Request, ctx: Context) -> web.StreamResponse:
    assert ctx.form is not None
    key_id = request.match_info["key_id"]
    grace_text = _field(ctx.form, "grace_seconds").strip() or "0"
    try:
        grace = float(int(grace_text))
    except ValueError:
        ctx.session.flash.append(("error", "The grace period is a whole number of seconds."))
        return _redirect("/dashboard")
    try:
        key, new, old = await ctx.runtime.keys.rotate(key_id, grace=grace)
    except GatewayError as error:
        ctx.session.flash.append(("error", error.message))
        return _redirect("/dashboard")
    ctx.session.flash_secret = (new.key_id, key)
    stops = f"in {templates.duration(grace)}" if grace else "now"
    ctx.session.flash.append(
        ("ok", f"Key {old.key_id} rotated to {new.key_id}; the old key stops working {stops}.")
    )
    _record(ctx, "rotate_key", new.account, key_id=old.key_id, new_key_id=new.key_id)
    return _redirect(templates.account_url(new.account))


async def revoke_key(request: web.Request, ctx: Context) -> web.StreamResponse:
    key_id = request.match_info["key_id"]
    try:
        record = await ctx.runtime.keys.revoke(key_id)
    except GatewayError as error:
        ctx.session.flash.append(("error", error.message))
        return _redirect("/dashboard")
    ctx.session.flash.append(("ok", f"Key {record.key_id} revoked."))
    _record(ctx, "revoke_key", record.account, key_id=record.key_id)
    return _redirect(templates.account_url(record.account))


async def set_relationship(request: web.Request, ctx: Context) -> web.StreamResponse:
    assert ctx.form is not None
    fields = {name: _field(ctx.form, name).strip() for name in ("account", "subject", "actor")}
    action = _field(ctx.form, "action")
    account = fields["account"]
    back = templates.account_url(account) if is_identifier(account) else "/dashboard"
    bad = [name for name, value in fields.items() if not is_identifier(value)]
    if bad or action not in ("grant", "revoke"):
        ctx.session.flash.append(
            ("error", f"{bad[0] if bad else 'action'}: 1-128 letters, digits, '_' or '-'.")
            if bad
            else ("error", "Choose grant or revoke.")
        )
        return _redirect(back)
    try:
        await ctx.runtime.store.set_relationship(
            account, fields["subject"], fields["actor"], action == "grant"
        )
    except GatewayError as error:
        ctx.session.flash.append(("error", error.message))
        return _redirect(back)
    done = "granted" if action == "grant" else "revoked"
    ctx.session.flash.append(
        ("ok", f"Caregiver {fields['actor']} {done} for member {fields['subject']}.")
    )
    _record(
        ctx,
        f"{action}_caregiver:{fields['actor']}",
        account,
        subject=fields["subject"],
        caregiver=fields["actor"],
    )
    return _redirect(back)


# --- static files ------------------------------------------------------------------------------


def load_static() -> dict[str, tuple[bytes, str]]:
    """The dashboard's own CSS and script, read once from the package."""
    folder = resources.files("gateway.dashboard").joinpath("static")
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix in _STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return files


async def static(request: web.Request) -> web.StreamResponse:
    # SECURITY: a fixed set of names read at start-up; a request never names a file path.
    found = request.app[DASHBOARD].static.get(request.match_info["name"])
    if found is None:
        return _html(templates.message_page("Not found", "No such file."), 404)
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8")


async def home_redirect(request: web.Request) -> web.StreamResponse:
    return _redirect("/dashboard")


def setup_dashboard(app: web.Application) -> None:
    """Mount the dashboard under ``/dashboard`` on the admin ``app`` (which holds CURRENT)."""
    app[DASHBOARD] = Dashboard(static=load_static())
    app.add_routes(
        [
            web.get("/dashboard", page(signed_in(overview))),
            web.get("/dashboard/", page(home_redirect)),
            web.get("/dashboard/login", page(sign_in_form)),
            web.post("/dashboard/login", page(sign_in)),
            web.post("/dashboard/logout", page(signed_in(sign_out))),
            web.get("/dashboard/account", page(signed_in(find_account))),
            web.get("/dashboard/accounts/{account}", page(signed_in(account_page))),
            web.get("/dashboard/audit", page(signed_in(audit_page))),
            web.post("/dashboard/keys", page(signed_in(create_key))),
            web.post("/dashboard/keys/{key_id}/rotate", page(signed_in(rotate_key))),
            web.post("/dashboard/keys/{key_id}/revoke", page(signed_in(revoke_key))),
            web.post("/dashboard/relationships", page(signed_in(set_relationship))),
            web.get("/dashboard/static/{name}", page(static)),
        ]
    )
