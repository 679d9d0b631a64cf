"""The dashboard's HTML, built from plain strings.

Every value that reaches a page goes through :func:`e` (``html.escape`` with quotes), values in
URL paths through :func:`path_segment` as well; nothing is inserted unescaped but this module's
own constant markup. The pages carry no inline script or style (the Content-Security-Policy
forbids both): behaviour and looks come from ``/dashboard/static/``. No template engine: the
pages are few and small, and a missed ``|e`` in a template is as easy to make as a missed
:func:`e` here, while this keeps the dependency list as it is.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urlencode

from gateway.clock import rfc3339
from gateway.keys.record import KeyRecord
from gateway.observe.recent import AuditEvent

BASE = "/dashboard"


def e(value: object) -> str:
    """``value`` as HTML text or attribute content."""
    return html.escape("" if value is None else str(value), quote=True)


def path_segment(value: str) -> str:
    """``value`` as one URL path segment (then still escaped for the attribute)."""
    return quote(value, safe="")


def account_url(account: str) -> str:
    return f"{BASE}/accounts/{path_segment(account)}"


def audit_url(*, account: str | None = None, actor: str | None = None) -> str:
    query = {k: v for k, v in (("account", account), ("actor", actor)) if v}
    return f"{BASE}/audit" + (f"?{urlencode(query)}" if query else "")


def duration(seconds: float) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``12 min``, ``< 1 min``."""
    seconds = round(abs(seconds))  # 239.8 s left of a 240 s grace reads "4 min", as its notice
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "< 1 min"


def csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(csrf)}">'


def layout(
    title: str,
    body: str,
    *,
    csrf: str | None = None,
    flash: Sequence[tuple[str, str]] = (),
) -> str:
    """A whole page. ``csrf`` given: the visitor is signed in (navigation and sign-out shown).
    ``flash``: (kind, text) messages, kind ``ok`` or ``error``."""
    nav = ""
    if csrf is not None:
        nav = (
            '<nav><a href="/dashboard">Accounts</a> <a href="/dashboard/audit">Audit</a>'
            '<form method="post" action="/dashboard/logout" class="inline">'
            f'{csrf_field(csrf)}<button type="submit">Sign out</button></form></nav>'
        )
    messages = "".join(
        f'<p class="flash {"error" if kind == "error" else "ok"}" role="status">{e(text)}</p>'
        for kind, text in flash
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{e(title)} · Key dashboard</title>"
        '<link rel="stylesheet" href="/dashboard/static/dashboard.css">'
        '<script src="/dashboard/static/dashboard.js" defer></script>'
        '</head><body><header><a class="brand" href="/dashboard">Health gateway · keys</a>'
        f"{nav}</header><main>{messages}<h1>{e(title)}</h1>{body}</main></body></html>"
    )


def sign_in_page(csrf: str, error: str | None = None) -> str:
    """The sign-in form. The admin token field never has a value: a page never holds it."""
    flash = [("error", error)] if error else []
    body = (
        '<form method="post" action="/dashboard/login" class="card" autocomplete="off">'
        f"{csrf_field(csrf)}"
        '<label for="token">Admin token</label>'
        '<input type="password" id="token" name="token" required minlength="16" '
        'autocomplete="off" autofocus>'
        '<button type="submit">Sign in</button>'
        '<p class="hint">The <code>admin.token</code> of this gateway\'s configuration.</p>'
        "</form>"
    )
    return layout("Sign in", body, flash=flash)


def message_page(title: str, text: str, *, sign_in_link: bool = False) -> str:
    link = '<p><a href="/dashboard/login">Sign in</a></p>' if sign_in_link else ""
    return layout(title, f"<p>{e(text)}</p>{link}")


def create_key_form(csrf: str, account: str | None = None) -> str:
    account_input = (
        f'<input type="hidden" name="account" value="{e(account)}">'
        if account
        else '<label for="new-account">Account</label>'
        '<input id="new-account" name="account" required maxlength="128" '
        'pattern="[A-Za-z0-9][A-Za-z0-9_\\-]*" placeholder="acc_123">'
    )
    return (
        '<form method="post" action="/dashboard/keys" class="card" id="create-key">'
        f"<h2>Create a key</h2>{csrf_field(csrf)}{account_input}"
        '<label for="environment">Environment</label>'
        '<select id="environment" name="environment">'
        '<option value="live">live (sk_live_)</option>'
        '<option value="sandbox">sandbox (sk_sandbox_)</option>'
        '<option value="test">sandbox, test key (sk_test_)</option></select>'
        '<label for="label">Label</label>'
        '<input id="label" name="label" maxlength="200" placeholder="backend">'
        '<label for="lifetime">Lifetime in days (empty: the longest allowed)</label>'
        '<input id="lifetime" name="lifetime_days" type="number" min="1" step="1">'
        '<button type="submit">Create key</button></form>'
    )


def overview_page(
    csrf: str,
    accounts: Sequence[tuple[str, int, int, list[str]]],
    flash: Sequence[tuple[str, str]] = (),
) -> str:
    """``accounts``: (account, active keys, all keys, environments)."""
    if accounts:
        rows = "".join(
            f'<tr><td><a href="{e(account_url(account))}">{e(account)}</a></td>'
            f"<td>{active}</td><td>{total}</td><td>{e(', '.join(envs))}</td></tr>"
            for account, active, total, envs in accounts
        )
        table = (
            '<table id="accounts"><thead><tr><th>Account</th><th>Active keys</th>'
            f"<th>All keys</th><th>Environments</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        table = '<p class="empty">No API keys yet.</p>'
    find = (
        '<form method="get" action="/dashboard/account" class="card inline-card">'
        '<label for="find-account">Open an account</label>'
        '<input id="find-account" name="account" required maxlength="128">'
        '<button type="submit">Open</button></form>'
    )
    return layout("Accounts", table + find + create_key_form(csrf), csrf=csrf, flash=flash)


def _key_row(record: KeyRecord, now: float, csrf: str) -> str:
    status = record.status(now)
    if record.revoked_at is not None and record.revoked_at > now:
        status_text = f"active, rotated: stops in {duration(record.revoked_at - now)}"
    else:
        status_text = status
    if status == "active":
        expiry = f"{rfc3339(record.expires_at)} (in {duration(record.expires_at - now)})"
    else:
        expiry = rfc3339(record.expires_at)
    successor = (
        f'<div class="hint">replaced by <code>{e(record.rotated_to)}</code></div>'
        if record.rotated_to
        else ""
    )
    actions = ""
    if status == "active":
        base = f"{BASE}/keys/{path_segment(record.key_id)}"
        actions = (
            f'<form method="post" action="{e(base)}/rotate" class="inline" '
            'data-confirm="Rotate this key? A new key replaces it.">'
            f'{csrf_field(csrf)}<label>grace (s) <input name="grace_seconds" type="number" '
            'min="0" max="86400" value="0" class="narrow"></label>'
            '<button type="submit" class="rotate">Rotate</button></form>'
        )
        if record.revoked_at is None or record.revoked_at > now:
            actions += (
                f'<form method="post" action="{e(base)}/revoke" class="inline" '
                'data-confirm="Revoke this key? It stops working within a second.">'
                f'{csrf_field(csrf)}<button type="submit" class="revoke danger">Revoke</button>'
                "</form>"
            )
    return (
        f'<tr data-key-id="{e(record.key_id)}" class="status-{e(status)}">'
        f"<td><code>{e(record.key_id)}</code>{successor}</td>"
        f"<td>{e(record.label)}</td><td>{e(record.environment)}</td>"
        f"<td><code>{e(record.prefix)}…</code></td>"
        f'<td class="status">{e(status_text)}</td>'
        f'<td title="{e(rfc3339(record.created_at))}">{e(duration(now - record.created_at))}</td>'
        f'<td>{e(expiry)}</td><td class="actions">{actions}</td></tr>'
    )


def secret_box(key_id: str, key: str) -> str:
    """The one showing of a new key, with a copy button (dashboard.js)."""
    return (
        '<section class="card secret" id="new-key-box"><h2>New key</h2>'
        f"<p>Key <code>{e(key_id)}</code>. Copy it now: it is shown this once and the "
        "gateway cannot show it again.</p>"
        f'<p><code id="new-key">{e(key)}</code> '
        '<button type="button" class="copy" data-copy="new-key">Copy</button> '
        '<span class="copied" hidden>Copied</span></p></section>'
    )


def events_table(events: Iterable[AuditEvent], *, table_id: str = "audit") -> str:
    rows = "".join(
        f'<tr><td class="nowrap">{e(rfc3339(ev.at))}</td><td>{e(ev.outcome)}</td>'
        f"<td>{ev.status}</td>"
        f"<td>{e(ev.method)} {e(ev.route)}</td><td>{e(ev.credential)}</td>"
        f"<td>{e(ev.account)}</td><td>{e(ev.subject)}</td>"
        f'<td><a href="{e(audit_url(actor=ev.actor))}">{e(ev.actor)}</a></td>'
        f"<td>{e(ev.key_id)}</td><td><code>{e(ev.request_id)}</code></td></tr>"
        for ev in events
    )
    if not rows:
        return '<p class="empty">No audit events in this window.</p>'
    return (
        f'<div class="scroll"><table id="{e(table_id)}"><thead><tr><th>Time (UTC)</th>'
        "<th>Outcome</th><th>Status</th><th>Request</th><th>Credential</th><th>Account</th><th>Subject</th>"
        "<th>Actor</th><th>Key</th><th>Request id</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


AUDIT_NOTE = (
    "The latest audit records of this process only (at most 1,000, lost on restart); the "
    "gateway.audit lines of the log are the audit trail."
)


def account_page(
    csrf: str,
    account: str,
    keys: Sequence[KeyRecord],
    relationships: Sequence[tuple[str, str]] | None,
    events: Sequence[AuditEvent],
    now: float,
    *,
    secret: tuple[str, str] | None = None,
    flash: Sequence[tuple[str, str]] = (),
    relationships_note: str | None = None,
) -> str:
    """One account: its keys, caregiver relationships and latest audit events.
    ``relationships`` is ``None`` when they are not kept in the store (HTTP provider)."""
    parts = [secret_box(*secret)] if secret else []
    if keys:
        rows = "".join(_key_row(r, now, csrf) for r in keys)
        parts.append(
            '<h2>Keys</h2><div class="scroll"><table id="keys"><thead><tr><th>Key id</th>'
            "<th>Label</th><th>Environment</th><th>Prefix</th><th>Status</th><th>Age</th><th>Expires</th>"
            f"<th></th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    else:
        parts.append('<h2>Keys</h2><p class="empty">No keys for this account.</p>')
    parts.append(create_key_form(csrf, account))
    parts.append("<h2>Caregiver relationships</h2>")
    if relationships is None:
        parts.append(f'<p class="hint">{e(relationships_note)}</p>')
    else:
        if relationships:
            rows = "".join(
                f"<tr><td>{e(subject)}</td><td>{e(actor)}</td><td>"
                f'<form method="post" action="/dashboard/relationships" class="inline">'
                f'{csrf_field(csrf)}<input type="hidden" name="account" value="{e(account)}">'
                f'<input type="hidden" name="subject" value="{e(subject)}">'
                f'<input type="hidden" name="actor" value="{e(actor)}">'
                '<button type="submit" name="action" value="revoke" class="danger">Revoke'
                "</button></form></td></tr>"
                for subject, actor in relationships
            )
            parts.append(
                '<table id="relationships"><thead><tr><th>Member (sub)</th>'
                f"<th>Caregiver (act)</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
            )
        else:
            parts.append('<p class="empty">No active relationships.</p>')
        parts.append(
            '<form method="post" action="/dashboard/relationships" class="card" id="grant">'
            f'{csrf_field(csrf)}<input type="hidden" name="account" value="{e(account)}">'
            '<label for="subject">Member (sub)</label>'
            '<input id="subject" name="subject" required maxlength="128">'
            '<label for="actor">Caregiver (act)</label>'
            '<input id="actor" name="actor" required maxlength="128">'
            '<button type="submit" name="action" value="grant">Grant</button></form>'
        )
    parts.append(
        f'<h2>Latest audit events</h2><p class="hint">{e(AUDIT_NOTE)} '
        f'<a href="{e(audit_url(account=account))}">All of this account\'s</a></p>'
    )
    parts.append(events_table(events, table_id="account-audit"))
    return layout(f"Account {account}", "".join(parts), csrf=csrf, flash=flash)


def audit_page(
    csrf: str,
    events: Sequence[AuditEvent],
    account: str | None,
    actor: str | None,
    *,
    note: str | None = None,
    flash: Sequence[tuple[str, str]] = (),
) -> str:
    form = (
        '<form method="get" action="/dashboard/audit" class="card inline-card">'
        '<label for="f-account">Account</label>'
        f'<input id="f-account" name="account" maxlength="128" value="{e(account or "")}">'
        '<label for="f-actor">Actor</label>'
        f'<input id="f-actor" name="actor" maxlength="256" value="{e(actor or "")}">'
        '<button type="submit">Filter</button></form>'
    )
    extra = f'<p class="hint">{e(note)}</p>' if note else ""
    body = f'{form}<p class="hint">{e(AUDIT_NOTE)}</p>{extra}{events_table(events)}'
    return layout("Audit events", body, csrf=csrf, flash=flash)
