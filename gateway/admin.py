"""The admin listener: health, readiness, metrics, and the admin API behind the admin token.

It listens on its own address (127.0.0.1:9090 by default), never on the public one. The admin API
is disabled unless ``admin.token`` is configured; the token is compared in constant time. Every
admin API request writes an access line, and every one the token admitted an audit line (actor
``admin``, route ``admin:<action>``, the account and key it acted on), as the public listener
and the dashboard do: a key created or revoked with a leaked admin token leaves a trace. The
``gateway keys`` commands write theirs with the same functions (:func:`audit_action`,
:func:`key_acted_on`).
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    InvalidToken,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from gateway.json_object import DuplicateMember, loads_object
from gateway.keys.record import KeyRecord
from gateway.observe import logs
from gateway.render import error_response
from gateway.runtime import CURRENT, Runtime

METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
# A supervisor's admin app: the listeners its workers serve, by field, which readiness checks.
WORKER_LISTENERS = web.AppKey("worker_listeners", dict)
# What an admin handler acted on (account, key_id, subject), for its audit line.
ACTED_ON: web.RequestKey[dict[str, str]] = web.RequestKey("acted_on", dict)
AdminHandler = Callable[[web.Request, Runtime], Awaitable[web.Response]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers and every upstream accepts a TCP connection; served by a
    supervisor (``workers: N``), also when its workers' listeners accept one: its own
    process being alive says nothing of theirs (workers failing at every start, a bad file
    read after a crash, left the pod ready with nothing listening)."""
    runtime = request.app[CURRENT].runtime
    checks: dict[str, str] = {}
    for field, (host, port) in request.app.get(WORKER_LISTENERS, {}).items():
        checks[field] = "ok" if await _accepts(host, port, 1.0) else "unavailable"
    try:
        await runtime.store.ping()
        checks["store"] = "ok"
    except GatewayError:
        checks["store"] = "unavailable"
    for name, upstream in runtime.settings.upstreams.items():
        host, port = upstream.url.host or "", upstream.url.port or 80
        accepts = await _accepts(host, port, upstream.connect_timeout)
        checks[f"upstream:{name}"] = "ok" if accepts else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


async def _accepts(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def metrics(request: web.Request) -> web.Response:
    """The registry in Prometheus' text format. The request metrics are counted apart and
    reach the registry when flushed (:mod:`gateway.observe.tally`): flushed here first, on the
    loop's thread where they are counted, so a single process's scrape is exact; the export
    itself runs off the loop. (A supervisor's registry reads its workers' files, which each
    worker's runtime flushes every second.)"""
    request.app[CURRENT].runtime.metrics.flush()
    registry = request.app[METRICS_REGISTRY]
    body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def guarded(handler: AdminHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Require ``Authorization: Bearer <admin token>``; render errors as the gateway's JSON."""

    route = "admin:" + handler.__name__

    async def impl(request: web.Request) -> web.Response:
        started = time.perf_counter()
        runtime = request.app[CURRENT].runtime
        expected = runtime.settings.admin_token
        admitted = False
        error: GatewayError | None = None
        try:
            if expected is None:
                raise NotFound("The admin API is disabled (set admin.token).")
            sent = request.headers.getall("Authorization", ())
            # SECURITY: exactly one header (a second one beside a right one is not admitted).
            presented = sent[0] if len(sent) == 1 else ""
            # SECURITY: constant-time comparison of the whole header value (a value that is not
            # UTF-8, held as surrogates, is compared as their bytes, never an error: 401, not
            # 500).
            sent_bytes = presented.encode("utf-8", "surrogatepass")
            if not hmac.compare_digest(sent_bytes, f"Bearer {expected}".encode()):
                raise InvalidToken("The admin token is missing or wrong.")
            admitted = True
            response = await handler(request, runtime)
        except GatewayError as failed:
            error, response = failed, error_response(failed)
        except web.HTTPRequestEntityTooLarge:
            # A body over aiohttp's client_max_size, refused while it was read.
            error = PayloadTooLarge()
            response = error_response(error)
        # SECURITY: every admin API request is on record; every admitted one as an action.
        _record(request, route, response.status, error, admitted, started)
        return response

    return impl


def _record(
    request: web.Request,
    route: str,
    status: int,
    error: GatewayError | None,
    admitted: bool,
    started: float,
) -> None:
    """The access line of an admin API request and, when the admin token admitted it, its
    audit line. Only fixed words and what the action named (never a key, the token or a
    body)."""
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "route": route,
        "method": request.method,
        "status": status,
        "error": error.code if error is not None else None,
        "credential": "admin" if admitted else None,
        "peer": request.remote,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }
    logs.access(**fields)
    if admitted:
        acted_on = request.get(ACTED_ON) or failed_on(error)
        audit_action(fields, actor="admin", ok=status < 400, acted_on=acted_on)


def failed_on(error: GatewayError | None) -> dict[str, str]:
    """What an action that failed still acted on, for its audit line: the keys a write left
    behind that no replica confirmed (undone by the key service, but on record)."""
    details = error.details if error is not None else {}
    return {
        name: value
        for name in ("key_id", "new_key_id")
        if isinstance(value := details.get(name), str)
    }


def audit_action(fields: dict[str, Any], *, actor: str, ok: bool, acted_on: dict[str, str]) -> None:
    """The audit line of an administrative action (the admin API's, the CLI's): ``fields``
    say which action and how it came (request id, route, credential, error…), ``actor`` who
    took it, ``ok`` whether it was done (``outcome`` ``allow``, else ``error``) and
    ``acted_on`` what it acted on. Ids and names only: never a key, a token or a body."""
    logs.audit(**fields, actor=actor, outcome="allow" if ok else "error", **acted_on)


def key_acted_on(record: KeyRecord, successor: KeyRecord | None = None) -> dict[str, str]:
    """What a key change acted on, for its audit line: the key's account and id, and a
    rotation's new key id (the ids, never the keys)."""
    acted_on = {"account": record.account, "key_id": record.key_id}
    if successor is not None:
        acted_on["new_key_id"] = successor.key_id
    return acted_on


def relationship_acted_on(account: str, subject: str, caregiver: str) -> dict[str, str]:
    """What a relationship change acted on, for its audit line: the account, the member and
    the caregiver acting for them."""
    return {"account": account, "subject": subject, "caregiver": caregiver}


def _shown(name: str, instead: str) -> str:
    """``name`` as an error may show it: only when it is a plain name, never what might be a
    secret (an API key sent where a name goes)."""
    return name if name.isidentifier() and len(name) <= 40 else instead


def _query(request: web.Request, names: frozenset[str] = frozenset()) -> dict[str, str]:
    """The query parameters sent, none but ``names`` and each at most once (a misspelt filter,
    such as ``?acount=``, would otherwise list every account's keys, and one of the values of
    a parameter given twice would be dropped silently)."""
    query = request.query
    for name in query:
        if name not in names:
            shown = _shown(name, "a parameter")
            expected = f"expected: {', '.join(sorted(names))}" if names else "it takes none"
            raise InvalidRequest(
                f"Unknown query parameter {shown}; {expected}.", details={"parameter": shown}
            )
        if len(query.getall(name)) > 1:
            raise InvalidRequest(
                f"Query parameter {name} is given more than once.", details={"parameter": name}
            )
    return {name: query[name] for name in query}


async def _body(request: web.Request, fields: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The JSON object sent, with no field but ``fields`` (a misspelt one, such as
    ``lifetime_second``, would otherwise be ignored silently). No body, or one of no bytes, is
    ``{}``: also the whole body an endpoint that takes no fields accepts."""
    raw = await request.read() if request.body_exists else b""
    if not raw:
        return {}
    try:
        data = loads_object(raw)
    except DuplicateMember:
        raise InvalidRequest(
            "The body names a member more than once.", details={"reason": "duplicate_member"}
        ) from None
    except ValueError:
        raise InvalidRequest("The body must be a JSON object.") from None
    unknown = sorted(name for name in data if name not in fields)
    if unknown:
        # Named only when it is a plain field name: never echo what might be a secret.
        shown = _shown(unknown[0], "a field")
        expected = f"expected: {', '.join(sorted(fields))}" if fields else "it takes none"
        raise InvalidRequest(f"Unknown field {shown}; {expected}.", details={"field": shown})
    return data


@contextmanager
def _named(parameter: str, field: str) -> Iterator[None]:
    """The key service's refusal of its ``parameter`` (``lifetime``, ``grace``, shared with the
    command line and the dashboard) said in the admin API's words: the body's ``field``."""
    try:
        yield
    except InvalidRequest as refused:
        if refused.details.get("field") != parameter:
            raise
        message = refused.message.replace(parameter, field, 1)
        raise InvalidRequest(message, details={**refused.details, "field": field}) from None


def _str(data: dict[str, Any], name: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string.", details={"field": name})
    return value


async def create_key(request: web.Request, runtime: Runtime) -> web.Response:
    _query(request)
    data = await _body(
        request, frozenset({"account", "environment", "label", "test", "lifetime_seconds"})
    )
    lifetime = data.get("lifetime_seconds")
    if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, int)):
        raise InvalidRequest(
            "lifetime_seconds must be an integer.", details={"field": "lifetime_seconds"}
        )
    test = data.get("test", False)
    if not isinstance(test, bool):
        raise InvalidRequest("test must be true or false.", details={"field": "test"})
    with _named("lifetime", "lifetime_seconds"):
        key, record = await runtime.keys.create(
            _str(data, "account"),
            # `test` asks for a sandbox sk_test_ key: sandbox unless the caller says otherwise
            # (and a contradiction, test with live, is refused by the key service).
            _str(data, "environment", "sandbox" if test else "live"),
            label=_str(data, "label", ""),
            test=test,
            lifetime=lifetime,
        )
    request[ACTED_ON] = key_acted_on(record)
    return json_response({"key": key, **record.public(runtime.clock.now())}, 201)


async def list_keys(request: web.Request, runtime: Runtime) -> web.Response:
    account = _query(request, frozenset({"account"})).get("account")
    await _body(request)
    records = await runtime.keys.list(account)
    if account is not None:
        request[ACTED_ON] = {"account": account}
    now = runtime.clock.now()
    return json_response({"keys": [r.public(now) for r in records]})


async def rotate_key(request: web.Request, runtime: Runtime) -> web.Response:
    _query(request)
    data = await _body(request, frozenset({"grace_seconds"}))
    grace = data.get("grace_seconds", 0)
    if isinstance(grace, bool) or not isinstance(grace, int | float):
        raise InvalidRequest("grace_seconds must be a number.", details={"field": "grace_seconds"})
    with _named("grace", "grace_seconds"):
        key, new, old = await runtime.keys.rotate(request.match_info["key_id"], grace=float(grace))
    request[ACTED_ON] = key_acted_on(old, new)
    now = runtime.clock.now()
    return json_response({"key": key, **new.public(now), "previous": old.public(now)}, 201)


async def revoke_key(request: web.Request, runtime: Runtime) -> web.Response:
    # Revocation is at once and takes nothing: a body that asks for more (a grace period, say)
    # is refused rather than ignored, and the key stays as it was.
    _query(request)
    await _body(request)
    record = await runtime.keys.revoke(request.match_info["key_id"])
    request[ACTED_ON] = key_acted_on(record)
    return json_response(record.public(runtime.clock.now()))


async def set_relationship(request: web.Request, runtime: Runtime) -> web.Response:
    from gateway.identifiers import is_identifier

    _query(request)
    data = await _body(request, frozenset({"account", "subject", "actor"}))
    fields = {name: _str(data, name) for name in ("account", "subject", "actor")}
    for name, value in fields.items():
        if not is_identifier(value):
            raise InvalidRequest(
                f"{name} must be 1-128 letters, digits, '_' or '-'.", details={"field": name}
            )
    active = request.method == "PUT"
    request[ACTED_ON] = relationship_acted_on(fields["account"], fields["subject"], fields["actor"])
    await runtime.store.set_relationship(
        fields["account"], fields["subject"], fields["actor"], active
    )
    return json_response({**fields, "active": active})


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The router's own refusals (no such path, a method the path does not take) as the
    gateway's JSON errors, like every other answer of the admin listener."""
    started = time.perf_counter()
    try:
        return await handler(request)
    except web.HTTPNotFound:
        error: GatewayError = NotFound()
        response = error_response(error)
    except web.HTTPMethodNotAllowed as exc:
        error = MethodNotAllowed()
        response = error_response(error)
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    if request.path.startswith("/admin/"):  # the admin API's own paths: on record as its others
        _record(request, "admin:unknown", response.status, error, False, started)
    return response


def admin_routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.post("/admin/keys", guarded(create_key)),
        web.get("/admin/keys", guarded(list_keys)),
        web.post("/admin/keys/{key_id}/rotate", guarded(rotate_key)),
        web.post("/admin/keys/{key_id}/revoke", guarded(revoke_key)),
        web.put("/admin/relationships", guarded(set_relationship)),
        web.delete("/admin/relationships", guarded(set_relationship)),
    ]
