"""Operating the gateway as a process: reload, drain, workers, metrics, logs, nginx in front."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.support import (
    ADMIN_TOKEN,
    GatewayProcess,
    OwnedProcess,
    Recorder,
    base_url,
    free_port,
    require_binary,
    wait_for_port,
    write_config,
)

SCORES = "/v1/users/usr_a/scores"


def url_of(upstream: tuple[Recorder, TestServer]) -> str:
    return base_url(upstream[1])


async def new_key(s: aiohttp.ClientSession, proc: GatewayProcess, env: str = "live") -> str:
    async with s.post(
        f"http://127.0.0.1:{proc.admin_port}/admin/keys",
        json={"account": "acc_1", "environment": env},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as r:
        assert r.status == 201, await r.text()
        key: str = (await r.json())["key"]
        return key


async def metrics_text(s: aiohttp.ClientSession, proc: GatewayProcess) -> str:
    async with s.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as r:
        return await r.text()


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_sighup_reloads_and_an_invalid_file_keeps_the_old_config(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    proc = write_config(tmp_path, url_of(upstream))
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    assert proc.proc is not None
    document = yaml.safe_load(proc.config.read_text())
    async with aiohttp.ClientSession() as s:
        key = await new_key(s, proc)
        auth = {"Authorization": f"Bearer {key}"}
        async with s.get(proc.base + SCORES, headers=auth) as r:
            assert r.status == 200
        # A new policy that closes the route: reload, and the route is 403 without a restart.
        document["policy"] = {
            "routes": [
                {
                    "id": "only-users",
                    "methods": ["GET"],
                    "paths": ["/v1/users"],
                    "allow": ["api_key"],
                }
            ]
        }
        proc.config.write_text(yaml.safe_dump(document))
        proc.proc.send_signal(signal.SIGHUP)

        async def closed() -> bool:
            async with s.get(proc.base + SCORES, headers=auth) as r:
                return r.status == 404

        await wait_until(closed)
        # The key (memory store) survived the reload: the store is kept when unchanged.
        async with s.get(proc.base + "/v1/users", headers=auth) as r:
            assert r.status == 200
        # An invalid file: logged, counted, and the running config stays.
        proc.config.write_text("upstreams:\n  live:\n    url: not-a-url\n")
        proc.proc.send_signal(signal.SIGHUP)

        async def counted() -> bool:
            return 'gateway_config_reloads_total{result="error"} 1.0' in await metrics_text(s, proc)

        await wait_until(counted)
        async with s.get(proc.base + "/v1/users", headers=auth) as r:
            assert r.status == 200
        assert 'gateway_config_reloads_total{result="ok"} 1.0' in await metrics_text(s, proc)
    assert "upstreams.live.url: not a URL" in proc.output()


async def test_sigterm_drains_in_flight_requests(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    proc = write_config(tmp_path, url_of(upstream))
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    assert proc.proc is not None
    async with aiohttp.ClientSession() as s:
        key = await new_key(s, proc)

        async def slow() -> tuple[int, bytes]:
            async with s.get(
                proc.base + SCORES + "?slow=1.5", headers={"Authorization": f"Bearer {key}"}
            ) as r:
                return r.status, await r.read()

        in_flight = asyncio.create_task(slow())
        await asyncio.sleep(0.5)
        proc.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # No new connections once draining has started...
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh, fresh.get(proc.base + SCORES) as r:
                await r.read()
        # ...while the request in flight completes.
        status, body = await in_flight
        assert status == 200 and orjson.loads(body)["path"].startswith(SCORES)
    code = await asyncio.to_thread(proc.proc.wait, 10)
    assert code == 0
    assert '"stopped"' in proc.output()
    # The access line of the request that finished while draining was written before exit.
    lines = [orjson.loads(t) for t in proc.output().splitlines() if t.startswith("{")]
    access = [line for line in lines if line.get("logger") == "gateway.access"]
    assert any(line["status"] == 200 and line["credential"] == "api_key" for line in access)
    # ...before "stopped", which is the last line, and in the order of their times ("stopped"
    # came before the access line of the request it drained, with a later time).
    assert lines[-1]["msg"] == "stopped", lines[-3:]
    times = [line["ts"] for line in lines]
    assert times == sorted(times), times


async def test_workers_share_the_port_and_metrics_add_up(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    promtool = require_binary("promtool", "prometheus")
    proc = write_config(
        tmp_path, url_of(upstream), store=redis_url, name="workers", extra={"workers": 2}
    )
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    assert proc.proc is not None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        key = await new_key(s, proc)
        statuses = []
        for _ in range(40):
            async with s.get(proc.base + SCORES, headers={"Authorization": f"Bearer {key}"}) as r:
                statuses.append(r.status)
        assert statuses == [200] * 40
        text = ""

        async def all_counted() -> bool:
            # Each worker flushes its counts to its multiprocess files every second.
            nonlocal text
            text = await metrics_text(s, proc)
            counted = sum(
                float(x.rsplit(" ", 1)[1])
                for x in text.splitlines()
                if x.startswith(
                    'gateway_requests_total{credential="api_key",method="GET",route="user-scores"'
                )
            )
            assert counted <= 40.0
            return counted == 40.0

        await wait_until(all_counted, timeout=5.0)
    children = subprocess.run(
        ["pgrep", "-P", str(proc.proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) == 2
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_metrics_pass_promtool_and_cover_every_family(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    promtool = require_binary("promtool", "prometheus")
    proc = write_config(tmp_path, url_of(upstream))
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    async with aiohttp.ClientSession() as s:
        key = await new_key(s, proc)
        auth = {"Authorization": f"Bearer {key}"}
        for path in (SCORES, SCORES, "/v1/nope", "/v1/users/usr_a/../x"):
            async with s.get(proc.base + path, headers=auth) as r:
                await r.read()
        async with s.post(
            proc.base + "/v1/auth/mobile-token", json={"user_id": "usr_a"}, headers=auth
        ) as r:
            mt = (await r.json())["token"]
        async with s.post(
            proc.base + "/v1/sdk/initialize", headers={"Authorization": f"Bearer {mt}"}
        ) as r:
            assert r.status == 200
        text = await metrics_text(s, proc)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for family in (
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_auth_decisions_total",
        "gateway_upstream_duration_seconds_bucket",
        "gateway_tokens_issued_total",
        "gateway_mobile_token_consumptions_total",
        "gateway_cache_lookups_total",
        "gateway_build_info",
    ):
        assert family in text, family
    assert 'le="0.0001"' in text  # sub-millisecond buckets
    assert key[8:20] not in text and "usr_a" not in text  # bounded labels, no secrets


NGINX_CONF = """
worker_processes 1;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
{user}
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_auth;
      auth_request_set $auth_account $upstream_http_x_auth_account;
      auth_request_set $auth_user $upstream_http_x_auth_user;
      auth_request_set $auth_actor $upstream_http_x_auth_actor;
      auth_request_set $auth_credential $upstream_http_x_auth_credential;
      auth_request_set $auth_environment $upstream_http_x_auth_environment;
      auth_request_set $auth_scopes $upstream_http_x_auth_scopes;
      auth_request_set $auth_key_id $upstream_http_x_auth_key_id;
      auth_request_set $auth_assertion $upstream_http_x_auth_assertion;
      proxy_set_header X-Auth-Account $auth_account;
      proxy_set_header X-Auth-User $auth_user;
      proxy_set_header X-Auth-Actor $auth_actor;
      proxy_set_header X-Auth-Credential $auth_credential;
      proxy_set_header X-Auth-Environment $auth_environment;
      proxy_set_header X-Auth-Scopes $auth_scopes;
      proxy_set_header X-Auth-Key-Id $auth_key_id;
      proxy_set_header X-Auth-Assertion $auth_assertion;
      proxy_pass {upstream};
    }}
    location = /_auth {{
      internal;
      proxy_pass http://127.0.0.1:{decider}/decisions;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}
    location /v1/auth/ {{ proxy_pass http://127.0.0.1:{gateway}; }}
  }}
}}
"""


def nginx_front(nginx: str, tmp: Path, template: str, **values: object) -> OwnedProcess:
    """nginx with ``template`` filled in, its master and worker in a process group of their own
    (``stop()`` ends exactly those)."""
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(template.format(tmp=tmp, user=user, **values))
    return OwnedProcess(
        [nginx, "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("where", ["public listener", "decision listener"])
async def test_decision_mode_behind_a_real_nginx(
    tmp_path: Path,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
    where: str,
) -> None:
    nginx = require_binary("nginx", "nginx")
    recorder = upstream[0]
    decision: dict[str, Any] = {"enabled": True, "proxy": "nginx"}
    if where == "decision listener":
        decision["listen"] = {"host": "127.0.0.1", "port": free_port()}
    proc = write_config(tmp_path, url_of(upstream), extra={"decision": decision})
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    decider = decision["listen"]["port"] if "listen" in decision else proc.port
    await asyncio.to_thread(wait_for_port, decider)
    port = free_port()
    server = nginx_front(
        nginx, tmp_path, NGINX_CONF, port=port, upstream=url_of(upstream), gateway=proc.port,
        decider=decider,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            key = await new_key(s, proc)
            forged = {
                "X-Auth-User": "usr_admin",
                "X-Auth-Environment": "sandbox",
                "X-Auth-Scopes": "admin",
                "X-Auth-Assertion": "forged",
                # and, named in another front proxy's headers, a request it may not make
                "X-Forwarded-Method": "DELETE",
            }
            async with s.get(
                base + SCORES, headers={"Authorization": f"Bearer {key}", **forged}
            ) as r:
                assert r.status == 200
            h = recorder.last.headers
            assert h["x-auth-account"] == ["acc_1"] and h["x-auth-credential"] == ["api_key"]
            # A header the backend could take as another target: nginx passes the 403 on.
            rewrite = {"X-Original-URL": "http://x/v1/users/usr_b/scores"}
            async with s.get(
                base + SCORES, headers={"Authorization": f"Bearer {key}", **rewrite}
            ) as r:
                assert r.status == 403
            assert h["x-auth-environment"] == ["live"]
            # The spoofed values were replaced (or dropped where the decision has none).
            assert h.get("x-auth-user") in (None, [""])
            assert h.get("x-auth-scopes") != ["admin"] and h.get("x-auth-assertion") is None
            seen = len(recorder.seen)
            async with s.get(base + SCORES) as r:
                assert r.status == 401
            async with s.get(
                base + SCORES, headers={"Authorization": "Bearer sk_live_nope1234"}
            ) as r:
                assert r.status == 401
            assert len(recorder.seen) == seen  # nginx forwarded neither refused request
            # A user token issued through nginx (routed to the gateway), then decided.
            async with s.post(
                base + "/v1/auth/user-token",
                json={"user_id": "usr_a"},
                headers={"Authorization": f"Bearer {key}"},
            ) as r:
                token = (await r.json())["token"]
            seen = len(recorder.seen)
            async with s.get(
                base + "/v1/users/usr_b/scores", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                assert r.status == 403
            assert len(recorder.seen) == seen
            async with s.get(base + SCORES, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
            assert recorder.last.headers["x-auth-user"] == ["usr_a"]
    finally:
        await asyncio.to_thread(server.stop)


# operations.md, "Sandbox credentials in decision mode": nginx routes on the decision's
# environment, each environment to its own backend.
ROUTED = {
    "    proxy_pass {upstream};\n    }}": "    proxy_pass http://$backend_of_environment;\n    }}",
    "  server {{\n": "  upstream backend {{ server {live}; }}\n"
    "  upstream sandbox-backend {{ server {sandbox}; }}\n"
    "  map $auth_environment $backend_of_environment {{ live backend; sandbox sandbox-backend; }}\n"
    "  server {{\n",
}


@pytest.mark.parametrize("admitted", [["live"], ["live", "sandbox"]])
async def test_sandbox_credentials_behind_a_real_nginx_reach_the_sandbox_backend_or_nothing(
    tmp_path: Path,
    aiohttp_server: Any,
    processes: list[GatewayProcess],
    admitted: list[str],
) -> None:
    """The hostile try-out of 4 December: with the documented nginx front, a sandbox key's
    request was allowed and forwarded to the live backend. Now it is refused unless
    decision.environments admits it, and then nginx routes it to the sandbox backend."""
    nginx = require_binary("nginx", "nginx")
    live, sandbox = Recorder(), Recorder()
    live_server, sandbox_server = (
        await aiohttp_server(live.app()),
        await aiohttp_server(sandbox.app()),
    )
    decision = {"enabled": True, "proxy": "nginx", "environments": admitted}
    proc = write_config(
        tmp_path,
        base_url(live_server),
        extra={
            "decision": decision,
            "upstreams": {
                "live": {"url": base_url(live_server)},
                "sandbox": {"url": base_url(sandbox_server)},
            },
        },
    )
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    template = NGINX_CONF
    for old, new in ROUTED.items():
        assert old in template
        template = template.replace(old, new)
    port = free_port()
    server = nginx_front(
        nginx, tmp_path, template, port=port, upstream="unused", gateway=proc.port,
        decider=proc.port, live=f"127.0.0.1:{live_server.port}",
        sandbox=f"127.0.0.1:{sandbox_server.port}",
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port)
        async with aiohttp.ClientSession() as s:
            for env in ("live", "sandbox"):
                key = await new_key(s, proc, env)
                async with s.delete(
                    f"http://127.0.0.1:{port}/v1/users/usr_1",
                    headers={"Authorization": f"Bearer {key}"},
                ) as r:
                    if env in admitted:
                        assert r.status == 200, env
                    else:
                        assert r.status == 500, env  # auth_request's answer to the 503
        assert [r.headers["x-auth-environment"] for r in live.seen] == [["live"]]
        assert [r.headers["x-auth-environment"] for r in sandbox.seen] == (
            [["sandbox"]] if "sandbox" in admitted else []
        )
    finally:
        await asyncio.to_thread(server.stop)
