"""Tracing, end to end: a real gateway exports its spans over OTLP/HTTP to a real receiver
(:mod:`tests.otlp`, decoding the protobuf payloads), and a recording upstream shows the
``traceparent`` it was sent. The span tree, the attributes, what never appears in an export,
and, with tracing off, that nothing is exported and a client's trace context passes unchanged.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.config import ConfigError, Node
from gateway.settings import parse_settings
from gateway.stores.redis import RedisStore
from tests.conftest import Gateway, GatewayFactory
from tests.otlp import PATH, OtlpReceiver, ReceivedSpan
from tests.support import MASTER_KEY, ROOT, base_url, signing_config

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SCORES = "/v1/users/usr_1/scores"


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[OtlpReceiver, str]:
    receiver = OtlpReceiver()
    server: TestServer = await aiohttp_server(receiver.app())
    return receiver, base_url(server) + PATH


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A Redis store, so the store's calls are traced (the gateway closes it at shutdown)."""
    yield RedisStore(redis_url, prefix=f"tr{uuid.uuid4().hex[:8]}:")


async def traced(
    make_gateway: GatewayFactory,
    receiver: tuple[OtlpReceiver, str],
    store: RedisStore | None = None,
    **tracing: Any,
) -> Gateway:
    return await make_gateway(
        store=store,
        tracing={"enabled": True, "endpoint": receiver[1], **tracing},
    )


async def exported(gw: Gateway) -> None:
    """Everything ended so far reaches the receiver (the exporter posts from its thread)."""
    assert await asyncio.to_thread(gw.runtime.tracer.flush, 30)


def bearer(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **more}


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, f"{name}: {[s.name for s in spans]}"
    return found[0]


def request_span(receiver: OtlpReceiver, request_id: str) -> ReceivedSpan:
    found = [s for s in receiver.spans if s.attributes.get("gateway.request_id") == request_id]
    assert len(found) == 1, [s.name for s in receiver.spans]
    return found[0]


def traceparent(headers: Mapping[str, list[str]]) -> tuple[str, str, str, str]:
    (value,) = headers["traceparent"]
    version, trace_id, parent_id, flags = value.split("-")
    return version, trace_id, parent_id, flags


def sampled(flags: str) -> bool:
    """The W3C sampled flag (bit 0; bit 1 is "random trace id", set by newer SDKs)."""
    return bool(int(flags, 16) & 1)


def secrets_absent(receiver: OtlpReceiver, *secrets: str) -> None:
    assert receiver.bodies, "nothing was exported"
    for body in receiver.bodies:
        for secret in secrets:
            assert secret.encode() not in body
    for span in receiver.spans:
        for value in span.attributes.values():
            for secret in secrets:
                assert secret not in str(value)


async def test_a_proxied_request_continues_the_clients_trace_to_the_upstream(
    make_gateway: GatewayFactory,
    receiver: tuple[OtlpReceiver, str],
    redis_store: RedisStore,
) -> None:
    gw = await traced(make_gateway, receiver, redis_store, service_name="gw-test")
    key = await gw.key("acc_1", "live")
    response = await gw.client.get(
        SCORES,
        headers=bearer(key, traceparent=f"00-{TRACE_ID}-{CLIENT_SPAN}-01", tracestate="vendor=abc"),
    )
    assert response.status == 200
    await exported(gw)
    spans = receiver[0].trace(TRACE_ID)

    # The request: a server span whose parent is the client's span.
    root = request_span(receiver[0], response.headers["X-Request-Id"])
    assert root.trace_id == TRACE_ID and root.parent_span_id == CLIENT_SPAN
    assert root.kind == "server" and root.status == "unset"
    assert root.name == "GET user-scores"
    assert root.attributes == {
        "http.request.method": "GET",
        "gateway.request_id": response.headers["X-Request-Id"],
        "http.response.status_code": 200,
        "gateway.route": "user-scores",
        "gateway.credential.kind": "api_key",
    }
    assert root.service["service.name"] == "gw-test"
    assert root.trace_state == "vendor=abc"
    assert sorted(s.name for s in receiver[0].children(root)) == [
        "gateway.authenticate",
        "gateway.authorize",
        "gateway.upstream",
    ]

    # Authentication, and the store lookup of the key below it.
    authn = one(spans, "gateway.authenticate")
    assert authn.attributes == {"gateway.credential.kind": "api_key", "gateway.outcome": "allow"}
    lookups = receiver[0].children(authn)
    assert lookups and all(s.name.startswith("gateway.store ") for s in lookups)
    for lookup in lookups:
        assert lookup.kind == "client"
        assert lookup.attributes["db.system.name"] == "redis"
        assert lookup.name == f"gateway.store {lookup.attributes['db.operation.name']}"
        assert lookup.attributes["gateway.outcome"] == "ok"

    authz = one(spans, "gateway.authorize")
    assert authz.parent_span_id == root.span_id
    assert authz.attributes == {
        "gateway.route": "user-scores",
        "http.route": "/v1/users/{user_id}/scores",
        "gateway.outcome": "allow",
    }

    # The upstream call, whose span is the parent the upstream was told about.
    upstream = one(spans, "gateway.upstream")
    assert upstream.kind == "client" and upstream.parent_span_id == root.span_id
    assert upstream.attributes["gateway.upstream"] == "live"
    assert upstream.attributes["http.request.method"] == "GET"
    assert upstream.attributes["http.response.status_code"] == 200
    assert upstream.attributes["server.address"] == "127.0.0.1"
    seen = gw.recorder.last.headers
    assert traceparent(seen) == ("00", TRACE_ID, upstream.span_id, "01")
    assert seen["tracestate"] == ["vendor=abc"]

    secrets_absent(receiver[0], key)


async def test_a_request_without_trace_context_starts_a_trace_the_upstream_joins(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await traced(make_gateway, receiver)
    key = await gw.key()
    response = await gw.client.get(SCORES, headers=bearer(key))
    assert response.status == 200
    await exported(gw)
    root = request_span(receiver[0], response.headers["X-Request-Id"])
    assert root.parent_span_id == ""
    assert root.service["service.name"] == "health-gateway"
    upstream = one(receiver[0].trace(root.trace_id), "gateway.upstream")
    version, trace_id, parent_id, flags = traceparent(gw.recorder.last.headers)
    assert (version, trace_id, parent_id) == ("00", root.trace_id, upstream.span_id)
    assert sampled(flags)
    assert "tracestate" not in gw.recorder.last.headers


async def test_a_request_without_credential_is_a_refused_authentication_and_nothing_more(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await traced(make_gateway, receiver)
    response = await gw.client.get(
        SCORES, headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    )
    assert response.status == 401
    await exported(gw)
    root = request_span(receiver[0], response.headers["X-Request-Id"])
    assert root.attributes["http.response.status_code"] == 401
    assert root.attributes["gateway.error"] == "invalid_token"
    assert root.attributes["gateway.credential.kind"] == "none"
    assert root.status == "unset"  # a refusal is an answer, not a failure of the gateway
    (authn,) = receiver[0].children(root)
    assert authn.name == "gateway.authenticate"
    assert authn.attributes == {
        "gateway.credential.kind": "none",
        "gateway.outcome": "deny",
        "gateway.error": "invalid_token",
        "gateway.reason": "missing",
    }
    assert receiver[0].children(authn) == []
    assert gw.recorder.seen == []


async def test_refusals_name_their_code_and_reason_never_the_credential(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await traced(make_gateway, receiver)
    key = await gw.key("acc_1", "live")
    issued = await gw.client.post(
        "/v1/auth/user-token", json={"user_id": "usr_1"}, headers=bearer(key)
    )
    user_token = (await issued.json())["token"]
    revoked, record = await gw.runtime.keys.create("acc_1", "live")
    await gw.runtime.keys.revoke(record.key_id)

    wrong_user = await gw.client.get("/v1/users/usr_2/scores", headers=bearer(user_token))
    assert wrong_user.status == 403
    unknown_path = await gw.client.get("/v1/nothing/here", headers=bearer(key))
    assert unknown_path.status == 404
    refused_key = await gw.client.get(SCORES, headers=bearer(revoked))
    assert refused_key.status == 401
    await exported(gw)

    root = request_span(receiver[0], wrong_user.headers["X-Request-Id"])
    authn, authz = sorted(receiver[0].children(root), key=lambda s: s.name)
    assert authn.attributes == {"gateway.credential.kind": "user_token", "gateway.outcome": "allow"}
    assert authz.attributes == {
        "gateway.route": "user-scores",
        "http.route": "/v1/users/{user_id}/scores",
        "gateway.outcome": "deny",
        "gateway.error": "wrong_user",
    }
    assert root.attributes["gateway.error"] == "wrong_user"

    root = request_span(receiver[0], unknown_path.headers["X-Request-Id"])
    authz = one(receiver[0].children(root), "gateway.authorize")
    assert authz.attributes == {
        "gateway.route": "unmatched",
        "gateway.outcome": "deny",
        "gateway.error": "not_found",
    }

    root = request_span(receiver[0], refused_key.headers["X-Request-Id"])
    (authn,) = receiver[0].children(root)
    assert authn.attributes == {
        "gateway.credential.kind": "api_key",
        "gateway.outcome": "deny",
        "gateway.error": "invalid_token",
        "gateway.reason": "revoked",
    }
    secrets_absent(receiver[0], key, user_token, revoked)


async def test_a_failing_upstream_is_an_error_span(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await make_gateway(
        settings=None,
        upstreams={"live": {"url": "http://127.0.0.1:9"}},
        tracing={"enabled": True, "endpoint": receiver[1]},
    )
    key = await gw.key()
    response = await gw.client.get(SCORES, headers=bearer(key))
    assert response.status == 502
    await exported(gw)
    root = request_span(receiver[0], response.headers["X-Request-Id"])
    assert root.status == "error"
    assert root.attributes["gateway.error"] == "upstream_unavailable"
    upstream = one(receiver[0].children(root), "gateway.upstream")
    assert upstream.status == "error"
    assert upstream.attributes["error.type"] == "upstream_unavailable"
    assert upstream.attributes["server.port"] == 9


async def test_a_method_a_client_invents_is_recorded_as_other(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await traced(make_gateway, receiver)
    key = await gw.key()
    # A method no rule names (a client's own invention would do; aiohttp's C parser only
    # lets methods it knows through, so a WebDAV one stands in).
    response = await gw.client.request("PROPFIND", SCORES, headers=bearer(key))
    assert response.status == 403
    await exported(gw)
    root = request_span(receiver[0], response.headers["X-Request-Id"])
    assert root.name == "OTHER unmatched"
    assert root.attributes["http.request.method"] == "OTHER"
    secrets_absent(receiver[0], key)


async def test_a_store_that_cannot_answer_fails_the_authentication_span(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    down = RedisStore("redis://127.0.0.1:9/0", prefix="down:")  # nothing listens there
    gw = await traced(make_gateway, receiver, down)
    key = "sk_live_" + "A" * 43  # well formed: only the store can tell it is unknown
    response = await gw.client.get(SCORES, headers=bearer(key))
    assert response.status == 503
    await exported(gw)
    root = request_span(receiver[0], response.headers["X-Request-Id"])
    assert root.status == "error"
    assert root.attributes["gateway.error"] == "service_unavailable"
    authn = one(receiver[0].children(root), "gateway.authenticate")
    assert authn.status == "error"
    assert authn.attributes["gateway.outcome"] == "deny"
    assert authn.attributes["gateway.error"] == "service_unavailable"
    (lookup,) = receiver[0].children(authn)
    assert lookup.name == "gateway.store key_by_digest"
    assert (lookup.status, lookup.attributes["gateway.outcome"]) == ("error", "error")
    secrets_absent(receiver[0], key)


async def test_a_decision_has_the_steps_and_no_upstream_span(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await make_gateway(
        decision={"enabled": True, "proxy": "nginx"},
        tracing={"enabled": True, "endpoint": receiver[1]},
    )
    key = await gw.key()
    response = await gw.client.get(
        "/decisions",
        headers=bearer(key, **{"X-Original-URI": SCORES, "X-Original-Method": "GET"}),
    )
    assert response.status == 200
    await exported(gw)
    root = request_span(receiver[0], response.headers["X-Request-Id"])
    assert root.attributes["gateway.route"] == "user-scores"
    assert sorted(s.name for s in receiver[0].children(root)) == [
        "gateway.authenticate",
        "gateway.authorize",
    ]
    assert gw.recorder.seen == []


async def test_a_clients_credential_in_tracestate_is_dropped(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await traced(make_gateway, receiver)
    key = await gw.key()
    response = await gw.client.get(
        SCORES,
        headers=bearer(
            key,
            traceparent=f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
            tracestate=f"vendor=abc,leak={key}",
        ),
    )
    assert response.status == 200
    await exported(gw)
    assert gw.recorder.last.headers["tracestate"] == ["vendor=abc"]
    assert request_span(receiver[0], response.headers["X-Request-Id"]).trace_state == "vendor=abc"
    secrets_absent(receiver[0], key)


async def test_an_opaque_token_of_the_configured_shape_in_tracestate_is_dropped(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    """An opaque OAuth2 token (``introspection.token_pattern``) has no shape the gateway knows
    by itself: in tracestate it was exported with every span and forwarded upstream, while
    the same token as a request id was replaced."""
    gw = await make_gateway(
        tracing={"enabled": True, "endpoint": receiver[1]},
        introspection={
            "url": "http://127.0.0.1:9/introspect",
            "client_id": "gateway",
            "client_secret": "s" * 32,
            "token_pattern": r"ory_at_[A-Za-z0-9]{16,64}",
        },
    )
    key = await gw.key()
    opaque = "ory_at_" + uuid.uuid4().hex
    response = await gw.client.get(
        SCORES,
        headers=bearer(
            key,
            traceparent=f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
            tracestate=f"vendor=abc,v1={opaque}",
        ),
    )
    assert response.status == 200
    await exported(gw)
    assert gw.recorder.last.headers["tracestate"] == ["vendor=abc"]
    assert request_span(receiver[0], response.headers["X-Request-Id"]).trace_state == "vendor=abc"
    secrets_absent(receiver[0], opaque)


async def test_sampling_follows_the_clients_sampled_flag(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await traced(make_gateway, receiver, sampling_ratio=0)
    key = await gw.key()
    new_trace = await gw.client.get(SCORES, headers=bearer(key))
    assert new_trace.status == 200
    # A new trace at ratio 0 is not recorded, but the upstream still gets a trace context.
    _, unsampled_trace, _, flags = traceparent(gw.recorder.last.headers)
    assert not sampled(flags)
    followed = await gw.client.get(
        SCORES, headers=bearer(key, traceparent=f"00-{TRACE_ID}-{CLIENT_SPAN}-01")
    )
    assert followed.status == 200
    await exported(gw)
    assert receiver[0].trace(unsampled_trace) == []
    assert {s.name for s in receiver[0].trace(TRACE_ID)} == {
        "GET user-scores",
        "gateway.authenticate",
        "gateway.authorize",
        "gateway.upstream",
    }


async def test_spans_pending_at_shutdown_are_exported(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await traced(make_gateway, receiver)
    key = await gw.key()
    response = await gw.client.get(SCORES, headers=bearer(key))
    assert response.status == 200
    await gw.client.close()  # the app's shutdown: close_resources closes the tracer
    request_span(receiver[0], response.headers["X-Request-Id"])


async def test_with_tracing_off_nothing_is_exported_and_trace_context_passes_unchanged(
    make_gateway: GatewayFactory, receiver: tuple[OtlpReceiver, str]
) -> None:
    gw = await make_gateway(tracing={"enabled": False, "endpoint": receiver[1]})
    key = await gw.key()
    context = {
        "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01",
        "tracestate": "vendor=abc,other=1",
    }
    assert (await gw.client.get(SCORES, headers=bearer(key, **context))).status == 200
    seen = gw.recorder.last.headers
    assert seen["traceparent"] == [context["traceparent"]]
    assert seen["tracestate"] == [context["tracestate"]]
    assert (await gw.client.get(SCORES, headers=bearer(key))).status == 200
    assert "traceparent" not in gw.recorder.last.headers
    await gw.client.close()
    assert receiver[0].bodies == []


@pytest.mark.parametrize(
    "store",
    [
        "memory",
        # redis-py 8 imports OpenTelemetry when it is installed (gateway/stores/redis_py.py).
        "redis://127.0.0.1:9/0",
    ],
)
def test_opentelemetry_is_not_imported_while_tracing_is_off(store: str) -> None:
    script = f"""
import json, sys
from pathlib import Path
from gateway.app import create_app
from gateway.config import Node
from gateway.runtime import Current, build_runtime
from gateway.server import run
from gateway.settings import parse_settings
document = {{"upstreams": {{"live": {{"url": "http://127.0.0.1:9"}}}}, "store": "{store}"}}
if document["store"] != "memory":
    document.update(master_key="{MASTER_KEY}", tokens={signing_config()!r})
settings = parse_settings(Node(document), base_dir=Path.cwd())
runtime = build_runtime(settings)
create_app(Current(runtime))
assert type(runtime.store).__name__ == ("MemoryStore" if "{store}" == "memory" else "RedisStore")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert json.loads(out) == []


@pytest.mark.parametrize(
    ("tracing", "error"),
    [
        ({"enabled": True}, "tracing.endpoint: is required when tracing is enabled"),
        (
            {"enabled": True, "endpoint": "collector:4318"},
            "tracing.endpoint: not a URL (expected http or https://host…)",
        ),
        ({"sampling_ratio": 1.5}, "tracing.sampling_ratio: must be at most 1, got 1.5"),
        ({"sampling_ratio": "half"}, "tracing.sampling_ratio: must be a number from 0 to 1"),
        ({"service_name": "my gateway"}, "tracing.service_name: must be a name of letters"),
    ],
)
def test_a_bad_tracing_section_names_the_field(tracing: dict[str, Any], error: str) -> None:
    document = {"upstreams": {"live": {"url": "http://127.0.0.1:9"}}, "tracing": tracing}
    with pytest.raises(ConfigError) as raised:
        parse_settings(Node(document), base_dir=Path.cwd())
    assert str(raised.value).startswith(error)


def test_a_good_tracing_section_reads_as_written() -> None:
    document = {
        "upstreams": {"live": {"url": "http://127.0.0.1:9"}},
        "tracing": {
            "enabled": "true",
            "endpoint": "http://collector:4318/v1/traces",
            "sampling_ratio": "0.25",
            "timeout": "2s",
        },
    }
    tracing = parse_settings(Node(document), base_dir=Path.cwd()).tracing
    assert tracing.enabled and str(tracing.endpoint) == "http://collector:4318/v1/traces"
    assert (tracing.sampling_ratio, tracing.service_name, tracing.timeout) == (
        0.25,
        "health-gateway",
        2.0,
    )
