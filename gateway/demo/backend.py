"""The bundled sandbox backend. It trusts the gateway's identity headers, as a real backend
behind the gateway would: a user, a webhook or a relationship is visible only to the account
that owns it.

It serves every proxied route of the default policy (users and their health data, webhooks,
events, caregiver relationships, the SDK's device sync), always answering JSON, errors included:
``{"error": CODE, "message": TEXT, "details": {}}`` as the gateway's own. Its data is synthetic
and deterministic (:mod:`gateway.demo.data`); what clients create lives in memory.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.demo import data
from gateway.identifiers import is_identifier
from gateway.stores.base import RelationshipStore
from gateway.stores.memory import MemoryStore

USERS = web.AppKey("users", dict[str, str])  # user id -> account
PROFILES = web.AppKey("profiles", dict[str, dict[str, Any]])  # user id -> fields set by PATCH
WEBHOOKS = web.AppKey("webhooks", dict[str, dict[str, dict[str, Any]]])  # account -> id -> hook
POSTED_EVENTS = web.AppKey("posted_events", dict[str, list[dict[str, Any]]])  # account -> events
RELATIONSHIPS = web.AppKey("relationships", RelationshipStore)

WEBHOOK_STATUSES = ("active", "disabled")
PROFILE_FIELDS = ("name", "email", "timezone")
MAX_EVENTS = 100


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


class _Failure(Exception):
    """An error this backend answers, as JSON (see :func:`json_errors`)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _fail(status: int, error: str, message: str) -> NoReturn:
    raise _Failure(status, error, message)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error this backend answers is JSON, aiohttp's own 404 and 405 included."""
    try:
        return await handler(request)
    except _Failure as failure:
        body = {"error": failure.error, "message": failure.message, "details": {}}
        return _json(body, failure.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "invalid_request")
        return _json({"error": code, "message": exc.reason, "details": {}}, exc.status)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _account(request: web.Request) -> str:
    return request.headers.get("X-Auth-Account", "")


def _user(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if request.app[USERS].get(user_id) != _account(request):
        _fail(404, "not_found", f"No user {user_id} in this account.")
    return user_id


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        _fail(400, "invalid_request", "The body must be a JSON object.")
    if not isinstance(body, dict):
        _fail(400, "invalid_request", "The body must be a JSON object.")
    return body


def _string(body: dict[str, Any], name: str, choices: Iterable[str] | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    allowed = tuple(choices) if choices is not None else None
    if not isinstance(value, str) or not value or (allowed is not None and value not in allowed):
        expected = f"one of {', '.join(allowed)}" if allowed else "a non-empty string"
        _fail(400, "invalid_request", f"{name} must be {expected}.")
    return value


# --- users and their health data ------------------------------------------------------------


def _profile(request: web.Request, user_id: str) -> dict[str, Any]:
    return {
        "id": user_id,
        "account": _account(request),
        **request.app[PROFILES].get(user_id, {}),
    }


async def get_user(request: web.Request) -> web.Response:
    return _json(_profile(request, _user(request)))


async def list_users(request: web.Request) -> web.Response:
    account = _account(request)
    return _json({"users": [u for u, a in request.app[USERS].items() if a == account]})


async def create_user(request: web.Request) -> web.Response:
    body = await _body(request)
    user_id = body.get("id")
    if not isinstance(user_id, str) or not is_identifier(user_id):
        user_id = "usr_" + secrets.token_hex(6)
    if user_id in request.app[USERS]:
        _fail(409, "conflict", f"User {user_id} exists.")
    request.app[USERS][user_id] = _account(request)
    return _json(_profile(request, user_id), 201)


async def update_user(request: web.Request) -> web.Response:
    user_id = _user(request)
    body = await _body(request)
    fields = {name: _string(body, name) for name in PROFILE_FIELDS if name in body}
    request.app[PROFILES].setdefault(user_id, {}).update(fields)
    return _json(_profile(request, user_id))


async def delete_user(request: web.Request) -> web.Response:
    user_id = _user(request)
    request.app[USERS].pop(user_id, None)
    request.app[PROFILES].pop(user_id, None)
    return _json({"id": user_id, "deleted": True})


async def resource(request: web.Request) -> web.Response:
    user_id = _user(request)
    name = request.match_info["resource"]
    return _json({"user_id": user_id, "data": data.RESOURCES[name](user_id)})


# --- webhooks and events ----------------------------------------------------------------------


def _hooks(request: web.Request) -> dict[str, dict[str, Any]]:
    account = _account(request)
    hooks = request.app[WEBHOOKS]
    if account not in hooks:
        hooks[account] = {hook["id"]: hook for hook in data.webhooks(account)}
    return hooks[account]


def _hook(request: web.Request) -> dict[str, Any]:
    webhook_id = request.match_info["webhook_id"]
    hook = _hooks(request).get(webhook_id)
    if hook is None:
        _fail(404, "not_found", f"No webhook {webhook_id} in this account.")
    return hook


def _event_types(body: dict[str, Any]) -> list[str] | None:
    value = body.get("events")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v in data.EVENT_TYPES for v in value)
    ):
        _fail(400, "invalid_request", f"events must be a list of {', '.join(data.EVENT_TYPES)}.")
    return list(dict.fromkeys(value))


def _hook_url(body: dict[str, Any]) -> str | None:
    url = _string(body, "url")
    if url is not None and not url.startswith(("https://", "http://")):
        _fail(400, "invalid_request", "url must be an http(s) URL.")
    return url


async def list_webhooks(request: web.Request) -> web.Response:
    return _json({"webhooks": list(_hooks(request).values())})


async def create_webhook(request: web.Request) -> web.Response:
    body = await _body(request)
    url = _hook_url(body)
    if url is None:
        _fail(400, "invalid_request", "url is required.")
    hook: dict[str, Any] = {
        "id": "wh_" + secrets.token_hex(8),
        "url": url,
        "events": _event_types(body) or list(data.EVENT_TYPES),
        "status": "active",
        "created_at": _now(),
    }
    _hooks(request)[hook["id"]] = hook
    return _json(hook, 201)


async def get_webhook(request: web.Request) -> web.Response:
    return _json(_hook(request))


async def update_webhook(request: web.Request) -> web.Response:
    hook = _hook(request)
    body = await _body(request)
    changes = {
        "url": _hook_url(body),
        "events": _event_types(body),
        "status": _string(body, "status", WEBHOOK_STATUSES),
    }
    hook.update({k: v for k, v in changes.items() if v is not None})
    return _json(hook)


async def delete_webhook(request: web.Request) -> web.Response:
    hook = _hook(request)
    del _hooks(request)[hook["id"]]
    return _json({"id": hook["id"], "deleted": True})


async def list_events(request: web.Request) -> web.Response:
    """Newest first; ``?type=`` filters, ``?limit=`` (1-100, default 20) bounds the page."""
    account = _account(request)
    kind = request.query.get("type")
    if kind is not None and kind not in data.EVENT_TYPES and kind != "custom":
        _fail(400, "invalid_request", f"type must be one of {', '.join(data.EVENT_TYPES)}.")
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_EVENTS:
        _fail(400, "invalid_request", f"limit must be 1-{MAX_EVENTS}.")
    users = [u for u, a in request.app[USERS].items() if a == account]
    found = request.app[POSTED_EVENTS].get(account, []) + data.events(account, users)
    found.sort(key=lambda e: (e["created_at"], e["id"]), reverse=True)
    if kind is not None:
        found = [e for e in found if e["type"] == kind]
    return _json({"events": found[:limit], "has_more": len(found) > limit})


async def create_event(request: web.Request) -> web.Response:
    """Record a custom event for a user of the account (``{"user_id", "data"?}``)."""
    body = await _body(request)
    user_id = _string(body, "user_id")
    if user_id is None or request.app[USERS].get(user_id) != _account(request):
        _fail(404, "not_found", "user_id must name a user of this account.")
    payload = body.get("data", {})
    if not isinstance(payload, dict):
        _fail(400, "invalid_request", "data must be a JSON object.")
    event = {
        "id": "evt_" + secrets.token_hex(8),
        "type": "custom",
        "user_id": user_id,
        "created_at": _now(),
        "data": payload,
    }
    request.app[POSTED_EVENTS].setdefault(_account(request), []).append(event)
    return _json(event, 201)


# --- caregiver relationships ------------------------------------------------------------------


def relationship_id(account: str, subject: str, actor: str) -> str:
    """The id of a relationship: one per (account, subject, actor)."""
    return data.identifier("rel_", account, subject, actor)


def _relationship_json(account: str, subject: str, actor: str) -> dict[str, Any]:
    return {
        "id": relationship_id(account, subject, actor),
        "subject": subject,
        "actor": actor,
        "status": "active",
    }


async def _relationships(request: web.Request) -> list[dict[str, Any]]:
    account = _account(request)
    pairs = await request.app[RELATIONSHIPS].list_relationships(account)
    return [_relationship_json(account, subject, actor) for subject, actor in pairs]


async def _relationship(request: web.Request) -> dict[str, Any]:
    wanted = request.match_info["relationship_id"]
    for found in await _relationships(request):
        if found["id"] == wanted:
            return found
    _fail(404, "not_found", f"No relationship {wanted} in this account.")


async def list_relationships(request: web.Request) -> web.Response:
    return _json({"relationships": await _relationships(request)})


async def create_relationship(request: web.Request) -> web.Response:
    """``{"subject", "actor"}``: the actor (a caregiver) may act for the subject from now on."""
    body = await _body(request)
    account = _account(request)
    subject, actor = _string(body, "subject"), _string(body, "actor")
    if subject is None or request.app[USERS].get(subject) != account:
        _fail(404, "not_found", "subject must name a user of this account.")
    if actor is None or not is_identifier(actor) or actor == subject:
        _fail(400, "invalid_request", "actor must be another member's id.")
    await request.app[RELATIONSHIPS].set_relationship(account, subject, actor, True)
    return _json(_relationship_json(account, subject, actor), 201)


async def get_relationship(request: web.Request) -> web.Response:
    return _json(await _relationship(request))


async def delete_relationship(request: web.Request) -> web.Response:
    found = await _relationship(request)
    await request.app[RELATIONSHIPS].set_relationship(
        _account(request), found["subject"], found["actor"], False
    )
    return _json({"id": found["id"], "deleted": True})


# --- the mobile SDK ---------------------------------------------------------------------------


async def sdk_config(request: web.Request) -> web.Response:
    return _json(
        {
            "user_id": request.headers.get("X-Auth-User"),
            "scopes": request.headers.get("X-Auth-Scopes", "").split(),
            "sync_interval_minutes": 15,
        }
    )


async def sdk_sync(request: web.Request) -> web.Response:
    body = await request.read()
    return _json({"accepted": len(body), "user_id": request.headers.get("X-Auth-User")}, 202)


def create_backend(
    users: dict[str, str] | None = None, relationships: RelationshipStore | None = None
) -> web.Application:
    """The backend app: ``users`` maps user id to account. ``/v1/relationships`` reads and
    writes ``relationships``: in the demo, the gateway's own store, so a relationship created
    through the API is the one the gateway checks caregiver tokens against (a real backend
    would tell the gateway through its admin API); a store of its own by default."""
    app = web.Application(middlewares=[json_errors])
    app[USERS] = dict(users or {})
    app[PROFILES] = {}
    app[WEBHOOKS] = {}
    app[POSTED_EVENTS] = {}
    app[RELATIONSHIPS] = relationships if relationships is not None else MemoryStore()
    names = "|".join(data.RESOURCES)
    app.add_routes(
        [
            web.get("/v1/users", list_users),
            web.post("/v1/users", create_user),
            web.get("/v1/users/{user_id}", get_user),
            web.patch("/v1/users/{user_id}", update_user),
            web.delete("/v1/users/{user_id}", delete_user),
            web.get(f"/v1/users/{{user_id}}/{{resource:{names}}}", resource),
            web.get("/v1/webhooks", list_webhooks),
            web.post("/v1/webhooks", create_webhook),
            web.get("/v1/webhooks/{webhook_id}", get_webhook),
            web.patch("/v1/webhooks/{webhook_id}", update_webhook),
            web.delete("/v1/webhooks/{webhook_id}", delete_webhook),
            web.get("/v1/events", list_events),
            web.post("/v1/events", create_event),
            web.get("/v1/relationships", list_relationships),
            web.post("/v1/relationships", create_relationship),
            web.get("/v1/relationships/{relationship_id}", get_relationship),
            web.delete("/v1/relationships/{relationship_id}", delete_relationship),
            web.get("/v1/sdk/config", sdk_config),
            web.post("/v1/sdk/sync/{scope}", sdk_sync),
        ]
    )
    return app
