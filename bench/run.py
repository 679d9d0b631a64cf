"""The benchmark: the gateway beside its anchors, on one machine, in one run.

    python bench/run.py [--seconds 10] [--write docs/performance.md]

Starts a fast upstream (nginx returning a small JSON body), Redis, the bare aiohttp proxy
baseline, nginx ``proxy_pass``, HAProxy ``jwt_verify`` RS256, and the gateway (proxy mode with
each credential kind, decision mode behind nginx ``auth_request``, the decision endpoint alone),
drives each with ``wrk`` over loopback for a fixed time, and prints requests/s, p50/p99
latency, server CPU µs per request (from /proc, the servers' own CPU time: the figure that
survives a noisy machine), peak RSS, and each row's CPU ratio to the bare proxy. The proxy rows
and the decision-alone rows are measured in ROUNDS interleaved rounds, each right after its
anchor (the bare proxy, HAProxy), and the ratios are taken between medians. The server
under test is pinned to core 0; wrk and the upstream to core 1. Needs: wrk, nginx, haproxy,
redis-server (Debian packages). Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import jwt
import yaml
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import __version__  # noqa: E402
from gateway.keys.signing import generate_private_key, private_pem  # noqa: E402
from tests.support import free_port, wait_for_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CORE, LOAD_CORE = "0", "1"
OPEN_LOOP_ROUNDS = 3
# The proxy rows and the decision-alone rows are measured in this many interleaved rounds, each
# gateway row right after its anchor (the bare proxy, HAProxy); a row's figure is the median of
# its rounds, and each anchor's the median of all its measurements.
ROUNDS = 3
SCORES = "/v1/users/usr_a/scores"  # the path every proxied row asks for
ADMIN = "bench-admin-token-0123456789"
MASTER = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def binary(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        sys.exit(f"bench: {name} not found (Debian: apt-get install {name})")
    return path


class Server:
    """A process (and its children) whose CPU time and peak RSS we read from /proc."""

    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        core: str = SERVER_CORE,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            ["taskset", "-c", core, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
        self.port = port
        try:
            wait_for_port(port, 20, alive=self.proc)
        except BaseException:
            self.stop()  # not yet in anyone's list of started servers: stopped here
            raise

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        children = [int(p) for p in out]
        grand = []
        for child in children:
            more = subprocess.run(
                ["pgrep", "-P", str(child)], capture_output=True, text=True, check=False
            ).stdout.split()
            grand += [int(p) for p in more]
        return [self.proc.pid, *children, *grand]

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds in user space and in the kernel (reading and writing sockets, mostly)."""
        user = system = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            user += int(fields[11])
            system += int(fields[12])
        return user / TICKS, system / TICKS

    def peak_rss_mib(self) -> float:
        peaks = []
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            match = re.search(r"VmHWM:\s+(\d+)", status)
            if match:
                peaks.append(int(match.group(1)))
        return max(peaks or [0]) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def python_server(name: str, script: str, *args: str) -> Server:
    """One of bench/'s own Python servers, on a free port (its first argument)."""
    port = free_port()
    return Server(name, [sys.executable, str(ROOT / "bench" / script), str(port), *args], port)


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    rss_mib: float
    note: str = ""
    # Rows measured in rounds (ROUNDS): the anchor measured just before this row in each round
    # (the bare proxy for a proxy row, HAProxy for a decision row), and the row's own figures.
    baselines: tuple[float, ...] = ()
    anchors: tuple[float, ...] = ()
    samples: tuple[float, ...] = ()


def wrk(
    url: str,
    seconds: int,
    *,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    connections: int = 32,
) -> tuple[float, float, float, int]:
    command = [
        "taskset",
        "-c",
        LOAD_CORE,
        binary("wrk"),
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for k, v in (headers or {}).items():
        command += ["-H", f"{k}: {v}"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx and int(non2xx.group(1)) > total * 0.01:
        raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx responses of {total}\n{out}")

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, pct("50"), pct("99"), total


def measure(
    name: str,
    servers: list[Server],
    url: str,
    seconds: int,
    note: str = "",
    warm: bool = False,
    **kw: object,
) -> Row:
    """One row: ``wrk`` for ``seconds``, the servers' CPU over exactly that time. ``warm``: a
    second of the same load first, not counted (the caches of a row's credentials filled, the
    garbage of the setup collected), so no row pays for the one before it."""
    if warm:
        wrk(url, 1, **kw)  # type: ignore[arg-type]
    before = [s.cpu_seconds() for s in servers]
    rps, p50, p99, total = wrk(url, seconds, **kw)  # type: ignore[arg-type]
    cpu = sum(s.cpu_seconds() - b for s, b in zip(servers, before, strict=True))
    return Row(name, rps, p50, p99, cpu / total * 1e6, max(s.peak_rss_mib() for s in servers), note)


def open_loop(url: str, rate: float, seconds: int, headers: dict[str, str]) -> dict[str, float]:
    """bench/openloop.py on the load core: latency percentiles (ms) from each request's due
    time at a constant ``rate``, errors and requests sent late."""
    command = ["taskset", "-c", LOAD_CORE, sys.executable, str(ROOT / "bench" / "openloop.py")]
    command += [url, "--rate", str(rate), "--seconds", str(seconds), "--json"]
    for k, v in headers.items():
        command += ["--header", f"{k}: {v}"]
    before = _cpu_ticks()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = _cpu_ticks()
    figures = dict(json.loads(out.strip().splitlines()[-1]))
    spent = [b - a for a, b in zip(before, after, strict=True)]
    # The share of the machine's time its host gave to others meanwhile: a round with a few
    # percent of steal has stalls of milliseconds in it, whatever ran on this machine.
    figures["steal %"] = 100 * spent[7] / max(1, sum(spent))
    return figures


def _cpu_ticks() -> list[int]:
    """The machine's CPU time by kind (user, nice, system, idle, iowait, irq, softirq, steal),
    in ticks, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    return [int(f) for f in fields]


def token_script(directory: Path, tokens: list[str], name: str) -> Path:
    path = directory / f"{name}.txt"
    path.write_text("\n".join(tokens) + "\n")
    script = directory / f"{name}.lua"
    script.write_text(f"""
local tokens = {{}}
for line in io.lines("{path}") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format(nil, nil, {{["Authorization"] = "Bearer " .. tokens[i]}})
end
""")
    return script


NGINX = """
worker_processes 1; daemon off; error_log {tmp}/{name}-error.log crit; pid {tmp}/{name}.pid;
{user}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/b-{name}; proxy_temp_path {tmp}/p-{name};
  fastcgi_temp_path {tmp}/f-{name}; uwsgi_temp_path {tmp}/u-{name}; scgi_temp_path {tmp}/s-{name};
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  upstream gateway {{ server 127.0.0.1:{gateway}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    {body}
  }}
}}
"""
UPSTREAM_BODY = """location / { default_type application/json;
  return 200 '{"user_id":"usr_a","data":[{"date":"2026-11-22","recovery":71}]}'; }"""
PROXY_BODY = """location / { proxy_pass http://backend; proxy_http_version 1.1;
  proxy_set_header Connection ""; }"""
AUTH_BODY = """location / {
  auth_request /_auth;
  auth_request_set $a $upstream_http_x_auth_account; proxy_set_header X-Auth-Account $a;
  auth_request_set $u $upstream_http_x_auth_user; proxy_set_header X-Auth-User $u;
  auth_request_set $c $upstream_http_x_auth_credential; proxy_set_header X-Auth-Credential $c;
  proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
# Envoy's form (the path below the prefix), for a GET-only benchmark: nginx's auth subrequest
# is always a GET, so a deployment asks as `decision.proxy: nginx` does (X-Original-Method and
# X-Original-URI, operations.md), never this way.
location = /_auth { internal; proxy_pass http://gateway/decisions$request_uri;
  proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_pass_request_body off; proxy_set_header Content-Length ""; }"""

HAPROXY = """
global
  maxconn 4096
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{port}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.verdict) var(txn.bearer),jwt_verify("RS256","{pub}")
  http-request deny deny_status 401 unless {{ var(txn.verdict) -m int 1 }}
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{upstream}
"""


def nginx(
    tmp: Path,
    name: str,
    port: int,
    body: str,
    upstream: int,
    gateway: int = 1,
    core: str = SERVER_CORE,
) -> Server:
    conf = tmp / f"{name}.conf"
    conf.write_text(
        NGINX.format(
            tmp=tmp,
            name=name,
            port=port,
            body=body,
            upstream=upstream,
            gateway=gateway,
            user="user root;" if os.geteuid() == 0 else "",
        )
    )
    return Server(name, [binary("nginx"), "-c", str(conf)], port, core)


@contextmanager
def stack(tmp: Path, seconds: int) -> Iterator[dict[str, object]]:
    started: list[Server] = []
    try:
        up_port = free_port()
        upstream = nginx(tmp, "upstream", up_port, UPSTREAM_BODY, up_port, core=LOAD_CORE)
        started.append(upstream)
        redis_port = free_port()
        redis = Server(
            "redis",
            [binary("redis-server"), "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            redis_port,
            core=LOAD_CORE,
        )
        started.append(redis)
        yield {
            "upstream": upstream,
            "up_port": up_port,
            "redis_port": redis_port,
            "started": started,
        }
    finally:
        for server in reversed(started):
            server.stop()


def gateway_config(
    tmp: Path,
    name: str,
    up_port: int,
    redis_port: int,
    extra: dict[str, object] | None = None,
    active_kid: str = "rs1",
    eddsa: bool = True,
) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    keys = tmp / "keys"
    keys.mkdir(exist_ok=True)
    rs, es, ed = keys / "rs1.pem", keys / "es1.pem", keys / "ed1.pem"
    if not rs.exists():
        rs.write_bytes(private_pem(generate_private_key("RS256")))
        es.write_bytes(private_pem(generate_private_key("ES256")))
        ed.write_bytes(private_pem(generate_private_key("EdDSA")))
    document: dict[str, object] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin, "token": ADMIN},
        "store": {"url": f"redis://127.0.0.1:{redis_port}/0", "prefix": f"{name}:"},
        "master_key": MASTER,
        "upstreams": {"live": {"url": f"http://127.0.0.1:{up_port}"}},
        "tokens": {
            "signing_keys": [
                {"kid": "rs1", "file": str(rs), "algorithm": "RS256"},
                {"kid": "es1", "file": str(es), "algorithm": "ES256"},
                *([{"kid": "ed1", "file": str(ed), "algorithm": "EdDSA"}] if eddsa else []),
            ],
            "active_kid": active_kid,
        },
        "log_level": "INFO",  # the production default: access and audit lines on
    }
    document.update(extra or {})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, port, admin


def haproxy_jwt(tmp: Path, ctx: dict[str, object]) -> tuple[Server, str]:
    """HAProxy verifying an RS256 JWT natively on every request (the decision anchor), and a
    token it accepts."""
    private = generate_private_key("RS256")
    pub = tmp / "haproxy-pub.pem"
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    token = jwt.encode({"sub": "usr_a", "exp": int(time.time()) + 3600}, private, algorithm="RS256")
    port = free_port()
    conf = tmp / "haproxy.cfg"
    conf.write_text(HAPROXY.format(port=port, pub=pub, upstream=ctx["up_port"]))
    haproxy = Server("haproxy", [binary("haproxy"), "-f", str(conf), "-db"], port)
    ctx["started"].append(haproxy)  # type: ignore[attr-defined]
    return haproxy, token


def haproxy_row(haproxy: Server, token: str, seconds: int) -> Row:
    return measure(
        "HAProxy jwt_verify RS256",
        [haproxy],
        f"http://127.0.0.1:{haproxy.port}{SCORES}",
        seconds,
        headers={"Authorization": f"Bearer {token}"},
    )


def has_eddsa(code: Path | None) -> bool:
    """Whether a tree knows EdDSA signing keys (one from before refuses a config naming one)."""
    return code is None or "EdDSA" in (code / "gateway/keys/signing.py").read_text()


def start_gateway(
    tmp: Path,
    name: str,
    ctx: dict[str, object],
    extra: dict[str, object] | None = None,
    active_kid: str = "rs1",
    code: Path | None = None,
    python: str | None = None,
) -> tuple[Server, int]:
    """A gateway worker; ``code``: a checkout of another tree to run instead of this one
    (``python -m gateway`` is imported from the working directory); ``python``: another
    interpreter to run it on (a virtualenv's, with the project installed)."""
    path, port, admin = gateway_config(
        tmp,
        name,
        ctx["up_port"],
        ctx["redis_port"],  # type: ignore[arg-type]
        extra,
        active_kid,
        eddsa=has_eddsa(code),
    )
    command = [python or sys.executable, "-m", "gateway", "serve", "--config", str(path)]
    server = Server(name, command, port, cwd=code)
    ctx["started"].append(server)  # type: ignore[attr-defined]
    wait_for_port(admin, alive=server.proc)
    return server, admin


async def credentials(port: int, admin: int, users: int) -> dict[str, object]:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{admin}/admin/keys",
            json={"account": "acc_1"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as r:
            created = await r.json()
        key, key_id = created["key"], created["key_id"]
        async with s.put(
            f"http://127.0.0.1:{admin}/admin/relationships",
            json={"account": "acc_1", "subject": "usr_a", "actor": "usr_c"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as r:
            assert r.status == 200
        sem = asyncio.Semaphore(16)

        async def user_token(user: str) -> str:
            async with (
                sem,
                s.post(
                    f"http://127.0.0.1:{port}/v1/auth/user-token",
                    json={"user_id": user},
                    headers={"Authorization": f"Bearer {key}"},
                ) as r,
            ):
                return str((await r.json())["token"])

        tokens = await asyncio.gather(*(user_token("usr_a") for _ in range(users)))
    now = int(time.time())

    def member(act: str | None = None, jti: int = 0) -> str:
        claims: dict[str, object] = {
            "sub": "usr_a",
            "iat": now,
            "exp": now + 3600,
            "scopes": [],
            "jti": str(jti),
        }
        if act:
            claims["act"] = act
        return jwt.encode(claims, key.encode(), algorithm="HS256", headers={"kid": key_id})

    return {
        "key": key,
        "key_id": key_id,
        "user_tokens": tokens,
        "member": member(),
        "caregiver": member("usr_c"),
        "member_fn": member,
    }


MOBILE_SCRIPT = """
-- Issue a mobile token, then consume it with /v1/sdk/initialize, on every connection.
local key = "{key}"
local queue = {{}}
pairs_done = 0
request = function()
  local token = table.remove(queue)
  if token then
    return wrk.format("POST", "/v1/sdk/initialize", {{["Authorization"] = "Bearer " .. token}}, "")
  end
  return wrk.format("POST", "/v1/auth/mobile-token",
    {{["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}},
    '{{"user_id":"usr_a"}}')
end
response = function(status, headers, body)
  local token = body:match('"token"%s*:%s*"(mt_[^"]+)"')
  if token then
    table.insert(queue, token)
  elseif status == 200 and body:find('"session_token"', 1, true) then
    pairs_done = pairs_done + 1
  end
end
local threads = {{}}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("pairs_done") end
  io.write(string.format("pairs %d\\n", total))
end
"""


def mobile_pairs(tmp: Path, gateway: Server, key: str, seconds: int) -> tuple[float, float]:
    """Issue+consume pairs per second (wall clock) and gateway CPU µs per pair, driven by wrk."""
    script = tmp / "mobile.lua"
    script.write_text(MOBILE_SCRIPT.format(key=key))
    before = gateway.cpu_seconds()
    command = ["taskset", "-c", LOAD_CORE, binary("wrk"), "-t1", "-c32", f"-d{seconds}s"]
    out = subprocess.run(
        [*command, "-s", str(script), f"http://127.0.0.1:{gateway.port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = gateway.cpu_seconds() - before
    pairs = int(re.search(r"pairs (\d+)", out).group(1))  # type: ignore[union-attr]
    if pairs == 0:
        raise RuntimeError(f"no mobile token was consumed\n{out}")
    return pairs / seconds, cpu / pairs * 1e6


def run(seconds: int, compare: Path | None = None) -> tuple[list[Row], list[str], dict[str, float]]:
    rows: list[Row] = []
    notes: list[str] = []
    figures: dict[str, float] = {}
    path = SCORES
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with stack(tmp, seconds) as ctx:
            up_port = ctx["up_port"]
            upstream = ctx["upstream"]
            rows.append(
                measure(
                    "direct upstream (nginx return 200)",
                    [upstream],  # type: ignore[list-item]
                    f"http://127.0.0.1:{up_port}{path}",
                    seconds,
                )
            )
            bare = python_server("bare", "bare_proxy.py", f"http://127.0.0.1:{up_port}")
            ctx["started"].append(bare)  # type: ignore[attr-defined]  # stopped on any error
            bare_port = bare.port
            rows.append(
                measure(
                    "bare aiohttp+uvloop proxy (baseline)",
                    [bare],
                    f"http://127.0.0.1:{bare_port}{path}",
                    seconds,
                )
            )
            lean = python_server("lean", "bare_proxy.py", f"http://127.0.0.1:{up_port}", "--lean")
            ctx["started"].append(lean)  # type: ignore[attr-defined]
            rows.append(
                measure(
                    "reference: bare proxy on the gateway's forwarding client",
                    [lean],
                    f"http://127.0.0.1:{lean.port}{path}",
                    seconds,
                )
            )
            lean.stop()
            proxy_port = free_port()
            front = nginx(tmp, "proxy", proxy_port, PROXY_BODY, up_port)  # type: ignore[arg-type]
            ctx["started"].append(front)  # type: ignore[attr-defined]
            rows.append(
                measure(
                    "nginx proxy_pass", [front], f"http://127.0.0.1:{proxy_port}{path}", seconds
                )
            )
            front.stop()

            haproxy, rs_token = haproxy_jwt(tmp, ctx)
            rows.append(haproxy_row(haproxy, rs_token, seconds))

            trees = [("before: ", compare)] if compare is not None else []
            trees.append(("", None))
            gateways = []
            decision_port = free_port()
            for label, code in trees:
                tag = "gw-before" if label else "gw"
                # Asked as Envoy asks (the original path below the prefix; nginx's /_auth too, for
                # GETs): the decision rows send the same bytes to the gateway, the HAProxy row
                # and the minimal service.
                decision: dict[str, object] = {"enabled": True, "proxy": "envoy"}
                if code is None:  # this tree: the decision listener too
                    decision["listen"] = {"host": "127.0.0.1", "port": decision_port}
                server, admin = start_gateway(tmp, tag, ctx, {"decision": decision}, code=code)
                gateways.append(
                    (label, server, admin, asyncio.run(credentials(server.port, admin, 1000)))
                )
            # Each proxy row is measured right after a fresh bare-proxy measurement and its
            # ratio taken to that one: the VM's speed drifts between rows, not within a pair.
            # With --compare the earlier tree's row comes right after the same pair.
            bare_url = f"http://127.0.0.1:{bare_port}{path}"
            proxy_rows = [
                ("gateway proxy: API key", "key", ""),
                ("gateway proxy: user token (RS256)", "user", ""),
                ("gateway proxy: member token (HS256)", "member", ""),
                ("gateway proxy: caregiver token", "caregiver", "relationship cached"),
            ]
            proxied: dict[str, list[Row]] = {}
            for _ in range(ROUNDS):
                for name, which, note in proxy_rows:
                    paired = measure("bare (paired)", [bare], bare_url, seconds)
                    for label, server, _, creds in gateways:
                        credential = (
                            creds["user_tokens"][0] if which == "user" else creds[which]  # type: ignore[index]
                        )
                        row = measure(
                            label + name,
                            [server],
                            f"http://127.0.0.1:{server.port}{path}",
                            seconds,
                            note=note,
                            headers={"Authorization": f"Bearer {credential}"},
                            warm=True,
                        )
                        row.baselines = (paired.cpu_us,)
                        proxied.setdefault(label + name, []).append(row)
            rows.extend(median_row(measured, "bare") for measured in proxied.values())

            for label, server, _, creds in gateways:
                script = token_script(tmp, creds["user_tokens"], "users")  # type: ignore[arg-type]
                # The public listener's decision endpoint, and (this tree) the decision listener.
                listeners = [("", server.port)]
                if not label:
                    listeners.append((" listener", decision_port))
                for where, port in listeners:
                    decided: list[Row] = []
                    for _ in range(ROUNDS):
                        # As the proxy rows are with the bare proxy: HAProxy right before.
                        paired_anchor = haproxy_row(haproxy, rs_token, seconds).cpu_us
                        row = measure(
                            label + f"gateway decision{where or ' endpoint'} alone, "
                            "1,000 user tokens",
                            [server],
                            f"http://127.0.0.1:{port}/decisions{path}",
                            seconds,
                            script=script,
                            warm=True,
                        )
                        row.anchors = (paired_anchor,)
                        decided.append(row)
                    rows.append(median_row(decided, "HAProxy"))
                    auth_port = free_port()
                    auth_front = nginx(tmp, "auth", auth_port, AUTH_BODY, up_port, port)  # type: ignore[arg-type]
                    ctx["started"].append(auth_front)  # type: ignore[attr-defined]
                    rows.append(
                        measure(
                            label + f"nginx auth_request + gateway decision{where}, "
                            "1,000 user tokens",
                            [auth_front, server],
                            f"http://127.0.0.1:{auth_port}{path}",
                            seconds,
                            script=script,
                            note="CPU of nginx front + gateway",
                            warm=True,
                        )
                    )
                    auth_front.stop()
            haproxy.stop()
            for anchor, figures_of in (("bare proxy", bare_figures), ("HAProxy", anchor_figures)):
                measured = figures_of(rows)
                notes.append(
                    f"{anchor} measured {len(measured)} times (its own row, then before each "
                    "gateway row of each round): "
                    + ", ".join(f"{a:.0f}" for a in measured)
                    + f" µs CPU a request; median {statistics.median(measured):.1f} µs"
                )
            first = next(r for r in rows if r.name.startswith("gateway decision listener"))
            paired = [a / c for a, c in zip(first.anchors, first.samples, strict=True)]
            notes.append(
                "the decision listener's ratio round by round, each to the HAProxy measured "
                "just before it: "
                + " / ".join(f"{r:.2f}" for r in paired)
                + f"x (median {statistics.median(paired):.2f}x; not the target's figure, which "
                "divides the medians)"
            )
            notes.append(
                "the decision listener's first round alone, against HAProxy's own row alone: "
                f"{anchor_figures(rows)[0] / first.samples[0]:.2f}x (the one-measurement ratio "
                "of the runs before the tenth round)"
            )
            # The floor: the same stacks with the least an aiohttp decision service can do.
            script = token_script(tmp, gateways[-1][3]["user_tokens"], "users")  # type: ignore[arg-type]
            floor = python_server("floor", "minimal_decision.py", str(tmp / "users.txt"))
            ctx["started"].append(floor)  # type: ignore[attr-defined]
            rows.append(
                measure(
                    "reference: minimal aiohttp decision service, 1,000 tokens",
                    [floor],
                    f"http://127.0.0.1:{floor.port}{path}",
                    seconds,
                    script=script,
                    note="dict lookup only: the framework's floor",
                )
            )
            auth_port = free_port()
            auth_front = nginx(tmp, "auth", auth_port, AUTH_BODY, up_port, floor.port)  # type: ignore[arg-type]
            ctx["started"].append(auth_front)  # type: ignore[attr-defined]
            rows.append(
                measure(
                    "reference: nginx auth_request + minimal decision service",
                    [auth_front, floor],
                    f"http://127.0.0.1:{auth_port}{path}",
                    seconds,
                    script=script,
                    note="CPU of nginx front + the minimal service",
                )
            )
            auth_front.stop()
            floor.stop()

            # Open loop: half the saturation of one worker (its closed-loop req/s with a
            # cached API key), the same constant rate to the upstream directly and through it,
            # OPEN_LOOP_ROUNDS interleaved rounds (one stall of a shared machine moves a
            # single round's p99 by milliseconds); the figure is the median round's.
            saturated = next(r for r in rows if r.name == "gateway proxy: API key").rps
            rate = saturated / 2
            added: dict[str, list[float]] = {label: [] for label, _, _, _ in gateways}
            for round_ in range(OPEN_LOOP_ROUNDS):
                direct = open_loop(f"http://127.0.0.1:{up_port}{path}", rate, seconds, {})
                # The framework's floor at the same rate: how loaded the rate leaves a worker
                # whose requests arrive one by one (a closed loop's 32 batch their wake-ups).
                used = bare.cpu_seconds()
                floor_at = open_loop(f"http://127.0.0.1:{bare_port}{path}", rate, seconds, {})
                used = (bare.cpu_seconds() - used) / seconds * 100
                notes.append(
                    f"open loop round {round_ + 1}, the bare proxy at the same rate: p50/p99/"
                    f"p99.9 {floor_at['p50']:.2f}/{floor_at['p99']:.2f}/"
                    f"{floor_at['p99.9']:.2f} ms, p99 +{floor_at['p99'] - direct['p99']:.2f} ms "
                    f"over direct, {used:.0f} % of its core"
                )
                for label, server, _, creds in gateways:
                    used = server.cpu_seconds()
                    through = open_loop(
                        f"http://127.0.0.1:{server.port}{path}",
                        rate,
                        seconds,
                        {"Authorization": f"Bearer {creds['key']}"},
                    )
                    used = (server.cpu_seconds() - used) / seconds * 100
                    added[label].append(through["p99"] - direct["p99"])
                    notes.append(
                        f"{label}open loop round {round_ + 1} at {rate:,.0f} req/s (half of one "
                        f"worker's saturation): direct upstream p50/p99/p99.9 "
                        f"{direct['p50']:.2f}/{direct['p99']:.2f}/{direct['p99.9']:.2f} ms; "
                        f"through the gateway (API key) {through['p50']:.2f}/"
                        f"{through['p99']:.2f}/{through['p99.9']:.2f} ms: p99 "
                        f"+{through['p99'] - direct['p99']:.2f} ms ({through['errors']:.0f} "
                        f"errors; the generator's send lag p99 {direct['lag_p99']:.2f} / "
                        f"{through['lag_p99']:.2f} ms; steal {direct['steal %']:.1f} / "
                        f"{through['steal %']:.1f} % of the machine's CPU time; the gateway "
                        f"used {used:.0f} % of its core)"
                    )
            bare.stop()
            for label, deltas in added.items():
                if not label:
                    figures["p99 added ms"] = statistics.median(deltas)
                notes.append(
                    f"{label}open loop, p99 over the direct upstream's, median of "
                    f"{OPEN_LOOP_ROUNDS} rounds: +{statistics.median(deltas):.2f} ms"
                )

            for _, server, _, _ in gateways:
                server.stop()
            for label, code in trees:
                mobile_keys = []
                for algorithm, kid in (("RS256", "rs1"), ("ES256", "es1"), ("EdDSA", "ed1")):
                    if kid == "ed1" and not has_eddsa(code):
                        continue
                    tag = f"gw-{kid}" + ("-before" if label else "")
                    server, admin = start_gateway(tmp, tag, ctx, active_kid=kid, code=code)
                    key = asyncio.run(credentials(server.port, admin, 0))["key"]
                    mobile_keys.append((algorithm, server, key))
                for algorithm, server, key in mobile_keys:
                    rate_pairs, cpu_us = mobile_pairs(tmp, server, str(key), seconds)
                    if not label:
                        figures[f"mobile {algorithm}"] = 1e6 / cpu_us
                    notes.append(
                        f"{label}mobile tokens, SDK sessions signed {algorithm}: "
                        f"{rate_pairs:,.0f} issue+consume pairs/s; {cpu_us:.0f} µs gateway CPU "
                        f"per pair = {1e6 / cpu_us:,.0f} pairs per CPU-second of one worker, "
                        "against one local Redis"
                    )
                    server.stop()

            # Memory with 100,000 distinct live tokens seen (member tokens: cheap to mint).
            for label, code in trees:
                before, peak, seen = memory_peak(tmp, ctx, "before" if label else "now", code)
                if not label:
                    figures["rss"] = peak
                notes.append(
                    f"{label}peak RSS of one worker after {min(seen, 100_000):,} distinct live "
                    f"member tokens seen ({seen:,} requests): {peak:.0f} "
                    f"MiB (after start-up: {before:.0f} MiB)"
                )
    return rows, notes, figures


def memory_peak(
    tmp: Path,
    ctx: dict[str, object],
    name: str,
    code: Path | None = None,
    python: str | None = None,
) -> tuple[float, float, int]:
    """The memory row: a new worker (``code``: another tree's checkout; ``python``: another
    interpreter) driven until it has seen 100,000 distinct live member tokens (cheap to mint);
    its peak RSS in MiB after start-up and at the end, and the requests it took."""
    server, admin = start_gateway(tmp, f"gw-rss-{name}", ctx, code=code, python=python)
    creds = asyncio.run(credentials(server.port, admin, 1))
    member = creds["member_fn"]
    many = [member(None, i) for i in range(100_000)]  # type: ignore[operator]
    script = token_script(tmp, many, f"many-{name}")
    start_up = server.peak_rss_mib()
    seen = 0
    while seen < 100_000:
        seen += wrk(f"http://127.0.0.1:{server.port}{SCORES}", 15, script=script)[3]
    peak = server.peak_rss_mib()
    server.stop()
    return start_up, peak, seen


def median_row(measured: list[Row], anchor: str) -> Row:
    """One row for a row measured in rounds: the median round's figures (an odd number of
    rounds: a real measurement), every round's CPU and anchor kept, all said in its note."""
    ordered = sorted(measured, key=lambda r: r.cpu_us)
    middle = ordered[len(ordered) // 2]
    paired = [a for r in measured for a in (*r.baselines, *r.anchors)]
    note = (middle.note + "; " if middle.note else "") + (
        f"median of {len(measured)} rounds: "
        + " / ".join(f"{r.cpu_us:.0f}" for r in measured)
        + f" µs; paired {anchor}: "
        + " / ".join(f"{a:.0f}" for a in paired)
        + " µs"
    )
    return Row(
        middle.name,
        middle.rps,
        middle.p50_ms,
        middle.p99_ms,
        middle.cpu_us,
        max(r.rss_mib for r in measured),
        note,
        baselines=tuple(a for r in measured for a in r.baselines),
        anchors=tuple(a for r in measured for a in r.anchors),
        samples=tuple(r.cpu_us for r in measured),
    )


def bare_figures(rows: list[Row]) -> list[float]:
    """Every bare-proxy measurement of the run: its own row first, then the one taken just
    before each gateway proxy row of each round."""
    return [r.cpu_us for r in rows if "baseline" in r.name] + [a for r in rows for a in r.baselines]


def bare_median(rows: list[Row]) -> float:
    """The baseline: the median of every bare-proxy measurement of the run (the first row and
    the one taken just before each gateway proxy row). The VM's speed drifts by tens of percent
    between minutes; one measurement would make every ratio a coin toss."""
    return statistics.median(bare_figures(rows))


def anchor_figures(rows: list[Row]) -> list[float]:
    """Every HAProxy ``jwt_verify`` measurement of the run: its own row first, then the one
    taken just before each decision-alone row of each round."""
    return [r.cpu_us for r in rows if r.name.startswith("HAProxy")] + [
        a for r in rows for a in r.anchors
    ]


def anchor_median(rows: list[Row]) -> float:
    """The decision anchor: the median of every HAProxy measurement of the run. HAProxy's own
    figure moves between minutes as the bare proxy's does (34-41 µs a request within one hour
    here, docs/performance.md, ninth round), and a ratio to one of them moved with it."""
    return statistics.median(anchor_figures(rows))


def targets(rows: list[Row], figures: dict[str, float]) -> str:
    """The issue's targets against this run's figures."""

    def cpu(prefix: str) -> float:
        return next(r for r in rows if r.name.startswith(prefix)).cpu_us

    base, haproxy = bare_median(rows), anchor_median(rows)
    checks = [
        ("proxy, API key: CPU vs bare proxy (median)", "≤ 1.15x", cpu("gateway proxy: API") / base),
        (
            "proxy, user token: CPU vs bare proxy (median)",
            "≤ 1.15x",
            cpu("gateway proxy: user") / base,
        ),
        (
            "proxy, member token: CPU vs bare proxy (median)",
            "≤ 1.15x",
            cpu("gateway proxy: member") / base,
        ),
        (
            "decision alone (public listener): req per CPU-s vs HAProxy",
            "≥ 1.50x",
            haproxy / cpu("gateway decision endpoint"),
        ),
        (
            "decision alone (decision listener): req per CPU-s vs HAProxy",
            "≥ 1.50x",
            haproxy / cpu("gateway decision listener"),
        ),
        (
            "nginx + gateway vs nginx + minimal decision service: CPU (public listener)",
            "≤ 1.25x",
            cpu("nginx auth_request + gateway decision,")
            / cpu("reference: nginx auth_request + minimal"),
        ),
        (
            "nginx + gateway vs nginx + minimal decision service: CPU (decision listener)",
            "≤ 1.25x",
            cpu("nginx auth_request + gateway decision listener")
            / cpu("reference: nginx auth_request + minimal"),
        ),
        (
            "mobile pairs per CPU-s, EdDSA sessions (the default)",
            "≥ 3,000",
            figures["mobile EdDSA"],
        ),
        ("mobile pairs per CPU-s, ES256 sessions", "≥ 3,000", figures["mobile ES256"]),
        ("mobile pairs per CPU-s, RS256 sessions", "≥ 3,000", figures["mobile RS256"]),
        ("open loop at half saturation: p99 over direct (ms)", "≤ 2", figures["p99 added ms"]),
        ("peak RSS, 100,000 live tokens (MiB)", "≤ 100", figures["rss"]),
    ]
    lines = ["| target | wanted | measured | met |", "|---|---:|---:|---|"]
    for name, wanted, value in checks:
        bound = float(wanted.split()[1].rstrip("x").replace(",", ""))
        met = value <= bound if wanted.startswith("≤") else value >= bound
        shown = (
            f"{value:.2f}x"
            if wanted.endswith("x")
            else f"{value:,.2f}"
            if abs(value) < 10
            else f"{value:,.0f}"
        )
        lines.append(f"| {name} | {wanted} | {shown} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def table(rows: list[Row]) -> str:
    base, haproxy = bare_median(rows), anchor_median(rows)
    lines = [
        "| row | req/s | p50 ms | p99 ms | CPU µs/req | x bare proxy CPU (median) "
        "| req per CPU-s vs HAProxy (median) | peak RSS MiB | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.cpu_us:.0f} | {r.cpu_us / base:.2f} | {haproxy / r.cpu_us:.2f} "
            f"| {r.rss_mib:.0f} | {r.note} |"
        )
    return "\n".join(lines)


def versions() -> str:
    def v(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    import aiohttp as aio

    return (
        f"gateway {__version__}, Python {platform.python_version()}, aiohttp {aio.__version__},"
        f" PyJWT {jwt.__version__}; {v([binary('nginx'), '-v'])}; "
        f"{v([binary('haproxy'), '-v'])}; {v([binary('wrk'), '-v'])}; "
        f"{os.cpu_count()} cores, {platform.machine()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--write", type=Path, help="append the results to this markdown file")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="a checkout of an earlier tree (git worktree add DIR REV): every gateway row is "
        "measured on it too, right before this tree's, in the same run",
    )
    args = parser.parse_args()
    rows, notes, figures = run(args.seconds, args.compare)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = (
        f"### {stamp}\n\n`python bench/run.py --seconds {args.seconds}"
        + (f" --compare {args.compare}" if args.compare else "")
        + f"` — {versions()}."
        f" Server under test on core 0, wrk and the upstream on core 1; wrk -t1 -c32.\n\n"
        f"{table(rows)}\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + f"\n\n{targets(rows, figures)}\n"
    )
    print(report)
    if args.write:
        with args.write.open("a", encoding="utf-8") as out:
            out.write("\n" + report)


if __name__ == "__main__":
    main()
