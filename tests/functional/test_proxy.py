"""Proxy mode over real sockets: the real gateway in front of a recording upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.support import base_url, padded, raw_http, status_of

SCORES = "/v1/users/usr_a/scores"


async def test_authorized_request_reaches_upstream_with_identity(gateway: Gateway) -> None:
    key = await gateway.key("acc_1", "live")
    record = (await gateway.runtime.keys.list())[0]
    response = await gateway.client.get(
        SCORES + "?days=7", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status == 200
    seen = gateway.recorder.last
    assert seen.path == SCORES + "?days=7"
    h = seen.headers
    assert h["x-auth-account"] == ["acc_1"]
    assert h["x-auth-credential"] == ["api_key"]
    assert h["x-auth-environment"] == ["live"]
    assert h["x-auth-actor"] == [record.key_id]
    assert h["x-auth-key-id"] == [record.key_id]
    assert "x-auth-user" not in h
    assert "authorization" not in h
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"][0].startswith("127.0.0.1:")
    assert response.headers["X-Request-Id"] == h["x-request-id"][0]


@pytest.mark.parametrize(
    "spoof",
    [
        "X-Auth-User",
        "x-auth-user",
        "X-AUTH-USER",
        "X_Auth_User",
        "x_auth-user",
        "X-Auth-Account",
        "X-Auth-Actor",
        "X-Auth-Credential",
        "X-Auth-Environment",
        "X-Auth-Scopes",
        "X-Auth-Key-Id",
        "X-Auth-Assertion",
        "X-Forwarded-For",
        "Forwarded",
    ],
)
async def test_spoofed_identity_headers_never_reach_upstream(gateway: Gateway, spoof: str) -> None:
    key = await gateway.key()
    response = await gateway.client.get(
        SCORES, headers={"Authorization": f"Bearer {key}", spoof: "usr_admin"}
    )
    assert response.status == 200
    for values in gateway.recorder.last.headers.values():
        assert "usr_admin" not in values


@pytest.mark.parametrize(
    "named", ["X-Auth-User", "X-Auth-Account", "Authorization", "X-Auth-Credential, X-Auth-Key-Id"]
)
async def test_connection_header_cannot_drop_identity_headers(gateway: Gateway, named: str) -> None:
    key = await gateway.key()
    response = await gateway.client.get(
        SCORES,
        headers={
            "Authorization": f"Bearer {key}",
            "Connection": named,
            "X-Custom": "kept",
            "Keep-Alive": "timeout=1",
            "TE": "trailers",
        },
    )
    assert response.status == 200
    h = gateway.recorder.last.headers
    assert h["x-auth-account"] == ["acc_1"] and h["x-auth-credential"] == ["api_key"]
    assert h["x-custom"] == ["kept"]
    assert "keep-alive" not in h and "te" not in h


async def test_connection_named_end_to_end_headers_are_dropped(gateway: Gateway) -> None:
    key = await gateway.key()
    response = await gateway.client.get(
        SCORES, headers={"Authorization": f"Bearer {key}", "Connection": "X-Hop", "X-Hop": "1"}
    )
    assert response.status == 200
    [seen] = gateway.recorder.seen
    assert "x-hop" not in seen.headers and seen.headers["x-auth-account"] == ["acc_1"]


async def test_response_hop_by_hop_headers_are_dropped(gateway: Gateway) -> None:
    key = await gateway.key()
    response = await gateway.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    # The upstream's answer came through (the recorder names X-Upstream-Secret in Connection
    # and sends Keep-Alive), less its hop-by-hop headers.
    assert response.status == 200
    assert (await response.json())["path"] == SCORES
    assert len(gateway.recorder.seen) == 1
    assert "X-Upstream-Secret" not in response.headers
    assert "Keep-Alive" not in response.headers


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("req-123.abc:9", True), ("x" * 129, False), ("bad id", False), ("a\u00e9", False)],
)
async def test_request_id_propagated_when_well_formed(
    gateway: Gateway, incoming: str, kept: bool
) -> None:
    key = await gateway.key()
    response = await gateway.client.get(
        SCORES,
        headers={
            "Authorization": f"Bearer {key}",
            "X-Request-Id": incoming.encode("utf-8").decode("latin-1"),
        },
    )
    forwarded = gateway.recorder.last.headers["x-request-id"][0]
    assert (forwarded == incoming) is kept
    assert response.headers["X-Request-Id"] == forwarded


async def test_authorization_forwarding_is_opt_in(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(settings=make_settings(url, headers={"forward_authorization": True}))
    key = await gw.key()
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 200
    assert gw.recorder.last.headers["authorization"] == [f"Bearer {key}"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/users/usr_a/../usr_b/scores", 400),
        ("/v1/users/usr_a/%2e%2e/usr_b/scores", 400),
        ("/v1/users/usr_a%2Fscores", 400),
        ("/v1/users//usr_a/scores", 400),
        ("/v1/users/usr_a;x=1/scores", 400),
        ("/v1/users\\usr_a\\scores", 400),
        ("http://evil.example/v1/users/usr_a/scores", 400),
        ("/v1/admin", 404),
        ("/v1/users/usr_a/scores/extra", 404),
        ("/", 404),
    ],
)
async def test_path_tricks_never_reach_upstream(gateway: Gateway, path: str, status: int) -> None:
    key = await gateway.key()
    raw = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = await raw_http(gateway.port, raw)
    assert status_of(answer) == status, answer[:200]
    assert gateway.recorder.seen == []


async def test_method_no_rule_allows_is_403(gateway: Gateway) -> None:
    key = await gateway.key()
    response = await gateway.client.delete(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 403
    assert (await response.json())["error"] == "insufficient_scope"
    assert gateway.recorder.seen == []


async def test_upstream_refusing_connections_is_502(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    gw = await make_gateway(settings=make_settings(dead))
    key = await gw.key()
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 502
    assert (await response.json())["error"] == "upstream_unavailable"
    # The key was accepted: an upstream outage is not counted as refused credentials (the
    # shipped GatewayAuthFailureSpike alert sums outcome="deny").
    gw.runtime.metrics.flush()
    registry = gw.runtime.metrics.registry
    decisions = {"credential": "api_key", "outcome": "allow", "reason": "ok"}
    assert registry.get_sample_value("gateway_auth_decisions_total", decisions) == 1.0
    denied = {**decisions, "outcome": "deny", "reason": "upstream_unavailable"}
    assert registry.get_sample_value("gateway_auth_decisions_total", denied) is None
    # The operator's line says which upstream and why, in the gateway's words (the client's
    # answer does not say why).
    (failed,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    fields = failed.fields  # type: ignore[attr-defined]
    assert (fields["upstream"], fields["cause"]) == (
        "live",
        "cannot connect: ConnectionRefusedError",
    )
    assert "cause" not in (await response.json()).get("details", {})


async def test_slow_upstream_is_504(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer], caplog: pytest.LogCaptureFixture
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            "http://unused.invalid",
            sandbox_url=None,
            upstreams={"live": {"url": url, "read_timeout": "200ms"}},
        )
    )
    key = await gw.key()
    response = await gw.client.get(SCORES + "?slow=2", headers={"Authorization": f"Bearer {key}"})
    assert response.status == 504
    assert (await response.json())["error"] == "upstream_timeout"
    (failed,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert failed.fields["cause"] == "no answer within read_timeout"  # type: ignore[attr-defined]


async def test_body_over_the_limit_is_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        limits={"max_body_bytes": 1000},
        policy={
            "routes": [
                {"id": "w", "methods": ["POST"], "paths": ["/v1/users"], "allow": ["api_key"]}
            ]
        },
    )
    key = await gw.key()
    auth = {"Authorization": f"Bearer {key}"}
    ok = await gw.client.post("/v1/users", data=b"x" * 1000, headers=auth)
    assert ok.status == 200
    too_big = await gw.client.post("/v1/users", data=b"x" * 1001, headers=auth)
    assert too_big.status == 413
    assert (await too_big.json())["error"] == "payload_too_large"

    async def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 500

    chunked = await gw.client.post("/v1/users", data=chunks(), headers=auth)
    assert chunked.status == 413
    assert all(s.body_size <= 1000 for s in gw.recorder.seen)


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 431)])
async def test_header_bytes_are_bounded_to_the_byte(
    gateway: Gateway, extra: int, status: int
) -> None:
    """``limits.max_header_bytes`` counts each header line as sent: headers of exactly the
    limit pass, one byte more is 431 and never reaches the upstream."""
    key = await gateway.key()
    limit = gateway.runtime.settings.limits.max_header_bytes
    headers = ["Host: gw", f"Authorization: Bearer {key}", "Connection: close"]
    raw = await raw_http(gateway.port, padded(f"GET {SCORES} HTTP/1.1", headers, limit + extra))
    assert status_of(raw) == status
    assert len(gateway.recorder.seen) == (1 if status == 200 else 0)


async def test_headers_over_the_limit_are_431(gateway: Gateway) -> None:
    key = await gateway.key()
    response = await gateway.client.get(
        SCORES, headers={"Authorization": f"Bearer {key}", "X-Big": "b" * 17000}
    )
    assert response.status == 431
    assert (await response.json())["error"] == "headers_too_large"
    huge = await gateway.client.get(
        SCORES, headers={"Authorization": f"Bearer {key}", "X-Big": "b" * 100_000}
    )
    assert huge.status in (400, 431)
    assert gateway.recorder.seen == []


async def test_sandbox_keys_reach_only_the_sandbox_upstream(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    from tests.support import Recorder

    live, sandbox = Recorder(), Recorder()
    live_server, sandbox_server = (
        await aiohttp_server(live.app()),
        await aiohttp_server(sandbox.app()),
    )
    gw = await make_gateway(settings=make_settings(base_url(live_server), base_url(sandbox_server)))
    for prefix_env, test in (("sandbox", False), ("sandbox", True)):
        key, _ = await gw.runtime.keys.create("acc_1", prefix_env, test=test)
        response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 200
    live_key = await gw.key("acc_1", "live")
    await gw.client.get(SCORES, headers={"Authorization": f"Bearer {live_key}"})
    assert len(sandbox.seen) == 2 and len(live.seen) == 1
    assert {s.headers["x-auth-environment"][0] for s in sandbox.seen} == {"sandbox"}


async def test_sandbox_without_a_sandbox_upstream_fails_closed(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    url = base_url(upstream[1])
    gw = await make_gateway(settings=make_settings(url))  # live only
    key, _ = await gw.runtime.keys.create("acc_1", "sandbox")
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 503
    assert gw.recorder.seen == []


async def test_streams_large_responses(gateway: Gateway) -> None:
    key = await gateway.key()
    response = await gateway.client.get(
        SCORES + "?bytes=5000000", headers={"Authorization": f"Bearer {key}"}
    )
    total = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        total += len(chunk)
    assert response.status == 200 and total == 5_000_000


async def test_concurrent_requests_share_the_pool(gateway: Gateway) -> None:
    key = await gateway.key()
    responses = await asyncio.gather(
        *(gateway.client.get(SCORES, headers={"Authorization": f"Bearer {key}"}) for _ in range(50))
    )
    assert [r.status for r in responses] == [200] * 50


async def test_the_upstream_sees_its_own_host_and_the_body_framed_as_sent(
    make_gateway: GatewayFactory, upstream: tuple[Any, TestServer]
) -> None:
    recorder, server = upstream
    gw = await make_gateway(
        policy={
            "routes": [
                {
                    "id": "w",
                    "methods": ["GET", "POST", "PUT"],
                    "paths": ["/v1/users"],
                    "allow": ["api_key"],
                }
            ]
        },
    )
    auth = {"Authorization": f"Bearer {await gw.key()}", "Host": "public.example"}

    async def chunks() -> Any:
        for part in (b"hello ", b"world"):
            yield part

    assert (await gw.client.get("/v1/users", headers=auth)).status == 200
    assert (await gw.client.post("/v1/users", headers=auth)).status == 200
    assert (await gw.client.put("/v1/users", headers=auth)).status == 200
    assert (await gw.client.post("/v1/users", data=b"abc", headers=auth)).status == 200
    assert (await gw.client.post("/v1/users", data=chunks(), headers=auth)).status == 200
    get, post, put, sized, chunked = recorder.seen[-5:]
    assert {s.headers["host"][0] for s in recorder.seen[-5:]} == {f"{server.host}:{server.port}"}
    assert "content-length" not in get.headers and "transfer-encoding" not in get.headers
    assert post.headers["content-length"] == ["0"] and put.headers["content-length"] == ["0"]
    assert sized.headers["content-length"] == ["3"] and sized.body_size == 3
    assert chunked.headers["transfer-encoding"] == ["chunked"] and chunked.body_size == 11
    assert all(s.headers["x-forwarded-host"] == ["public.example"] for s in recorder.seen[-5:])
