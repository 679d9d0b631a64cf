"""The bundled sandbox backend. It trusts the gateway's identity headers, as a real backend
behind the gateway would: a user is visible only to the account that created it."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from aiohttp import web

from gateway.demo import data
from gateway.identifiers import is_identifier

USERS = web.AppKey("users", dict[str, str])  # user id -> account


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _account(request: web.Request) -> str:
    return request.headers.get("X-Auth-Account", "")


def _user(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if request.app[USERS].get(user_id) != _account(request):
        raise web.HTTPNotFound(text='{"error": "not_found"}', content_type="application/json")
    return user_id


async def get_user(request: web.Request) -> web.Response:
    user_id = _user(request)
    return _json({"id": user_id, "account": _account(request)})


async def list_users(request: web.Request) -> web.Response:
    account = _account(request)
    return _json({"users": [u for u, a in request.app[USERS].items() if a == account]})


async def create_user(request: web.Request) -> web.Response:
    body = await request.json() if request.body_exists else {}
    user_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(user_id, str) or not is_identifier(user_id):
        user_id = "usr_" + secrets.token_hex(6)
    request.app[USERS][user_id] = _account(request)
    return _json({"id": user_id, "account": _account(request)}, 201)


async def delete_user(request: web.Request) -> web.Response:
    request.app[USERS].pop(_user(request), None)
    return web.Response(status=204)


async def resource(request: web.Request) -> web.Response:
    user_id = _user(request)
    name = request.match_info["resource"]
    return _json({"user_id": user_id, "data": data.RESOURCES[name](user_id)})


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


def create_backend(users: dict[str, str] | None = None) -> web.Application:
    app = web.Application()
    app[USERS] = dict(users or {})
    names = "|".join(data.RESOURCES)
    app.add_routes(
        [
            web.get("/v1/users", list_users),
            web.post("/v1/users", create_user),
            web.get("/v1/users/{user_id}", get_user),
            web.delete("/v1/users/{user_id}", delete_user),
            web.get(f"/v1/users/{{user_id}}/{{resource:{names}}}", resource),
            web.get("/v1/sdk/config", sdk_config),
            web.post("/v1/sdk/sync/{scope}", sdk_sync),
        ]
    )
    return app
