"""SIGHUP on a real ``gateway serve`` process: replaced upstream pools are closed once their
requests are done (connections do not grow with reloads), and a reload that would bring in
another master key is refused (issue 12)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp.test_utils import TestServer

from gateway.hangup import EarlyHangup
from gateway.keys.sealing import new_master_key
from gateway.server import run
from gateway.settings import load_settings
from tests.support import (
    ADMIN_TOKEN,
    GatewayProcess,
    Recorder,
    RedisServer,
    base_url,
    free_port,
    write_config,
)

SCORES = "/v1/users/usr_a/scores"


def established_to(port: int) -> int:
    """ESTABLISHED TCP connections whose local end is ``port``: the upstream's side of every
    connection a client (here only the gateway) holds to it. Read from /proc, no tools."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


async def settle(port: int, expected: int, timeout: float = 5.0) -> int:
    """The connection count once it equals ``expected``, or whatever it is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (count := established_to(port)) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return count


async def started(proc: GatewayProcess, processes: list[GatewayProcess]) -> None:
    """Start ``gateway serve`` (stopped by the ``processes`` fixture after the test)."""
    await asyncio.to_thread(proc.start)
    processes.append(proc)


async def reloaded(proc: GatewayProcess, times: int, message: str = '"config reloaded"') -> None:
    deadline = time.monotonic() + 10
    while proc.output().count(message) < times:
        assert time.monotonic() < deadline, proc.output()[-2000:]
        await asyncio.sleep(0.05)


async def admin_key(s: aiohttp.ClientSession, proc: GatewayProcess) -> str:
    async with s.post(
        f"http://127.0.0.1:{proc.admin_port}/admin/keys",
        json={"account": "acc_1"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as r:
        assert r.status == 201, await r.text()
        key: str = (await r.json())["key"]
        return key


async def test_reloads_do_not_grow_upstream_connections(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    server = upstream[1]
    assert server.port is not None
    proc = write_config(tmp_path, base_url(server))
    await started(proc, processes)
    assert proc.proc is not None
    async with aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {await admin_key(s, proc)}"}

        async def get(query: str = "") -> tuple[int, bytes]:
            async with s.get(proc.base + SCORES + query, headers=auth) as r:
                return r.status, await r.read()

        assert (await get())[0] == 200
        assert await settle(server.port, 1) == 1
        reloads = 5
        for i in range(1, reloads + 1):
            proc.proc.send_signal(signal.SIGHUP)
            await reloaded(proc, i)
            assert (await get())[0] == 200  # through the new pool: one new connection
        # Each replaced pool was idle, so it is closed at once: one connection, not six.
        assert await settle(server.port, 1) == 1

        # A request in flight keeps its pool (and its connection) until it is done.
        slow = asyncio.create_task(get("?slow=1.5"))
        await asyncio.sleep(0.3)
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, reloads + 1)
        assert (await get())[0] == 200  # the new pool's connection, beside the busy one
        assert established_to(server.port) == 2
        status, body = await slow
        assert status == 200 and orjson.loads(body)["path"] == SCORES + "?slow=1.5"
        assert await settle(server.port, 1) == 1
    assert "Unclosed" not in proc.output()


async def test_a_reload_with_another_master_key_keeps_the_running_config(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    proc = write_config(
        tmp_path,
        base_url(upstream[1]),
        store=redis_url,
        name=f"reload-{uuid.uuid4().hex[:8]}",
    )
    await started(proc, processes)
    assert proc.proc is not None
    async with aiohttp.ClientSession() as s:
        key = await admin_key(s, proc)
        document = yaml.safe_load(proc.config.read_text())
        document["master_key"] = new_master_key()
        proc.config.write_text(yaml.safe_dump(document))
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, 1, '"config reload failed; keeping the running config"')
        assert '"config reloaded"' not in proc.output()
        async with s.get(proc.base + SCORES, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
        # The running master key still creates keys.
        await admin_key(s, proc)
    failed = [
        orjson.loads(line) for line in proc.output().splitlines() if '"config reload failed' in line
    ]
    assert failed[0]["error"].startswith("master_key: this master key (fingerprint mk1:")
    assert document["master_key"] not in proc.output()


async def test_a_request_that_straddles_a_reload_is_served_and_nothing_is_left_open(
    processes: list[GatewayProcess], tmp_path: Path, aiohttp_server: Any
) -> None:
    """A token request whose body arrives after SIGHUP was admitted with the old runtime; its
    membership check uses the old upstream pool, which the reload must not close under it (it
    answered 500 "Session is closed" before the retiring waited for whole requests)."""
    recorder = Recorder()
    upstream: TestServer = await aiohttp_server(recorder.app())
    proc = write_config(tmp_path, base_url(upstream))
    proc.start()
    processes.append(proc)
    async with aiohttp.ClientSession() as s:
        key = await admin_key(s, proc)
        async with s.get(proc.base + SCORES, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200  # the old runtime's upstream pool is open
    body = b'{"user_id": "usr_a"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    writer.write(
        b"POST /v1/auth/user-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body[:5]
    )
    await writer.drain()
    await asyncio.sleep(0.3)  # admitted with the old runtime, waiting for its body
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGHUP)
    await reloaded(proc, 1)
    await asyncio.sleep(0.3)  # the old runtime would be retired now if nothing held it
    writer.write(body[5:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"token"' in answer
    proc.stop()
    processes.remove(proc)
    text = proc.output()
    assert "Session is closed" not in text and "Unclosed" not in text, text[-2000:]


async def test_a_memory_store_without_a_master_key_keeps_its_keys_usable_across_reloads(
    processes: list[GatewayProcess], tmp_path: Path, aiohttp_server: Any
) -> None:
    """With the memory store and no master_key the gateway seals keys under an ephemeral key;
    it belongs to the store, so a reload (which keeps the store) still opens them: member
    tokens keep working and new keys can be made (before: 503 key_unavailable and
    master_key_mismatch after the first SIGHUP)."""
    import jwt

    recorder = Recorder()
    upstream: TestServer = await aiohttp_server(recorder.app())
    proc = write_config(tmp_path, base_url(upstream))
    document = yaml.safe_load(proc.config.read_text())
    del document["master_key"]
    proc.config.write_text(yaml.safe_dump(document))
    proc.start()
    processes.append(proc)
    now = int(time.time())
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{proc.admin_port}/admin/keys",
            json={"account": "acc_1"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r:
            created = await r.json()
        member = jwt.encode(
            {"sub": "usr_a", "iat": now, "exp": now + 600},
            created["key"].encode(),
            algorithm="HS256",
            headers={"kid": created["key_id"]},
        )
        bearer = {"Authorization": f"Bearer {member}"}
        async with s.get(proc.base + SCORES, headers=bearer) as r:
            assert r.status == 200, await r.text()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, 1)
        async with s.get(proc.base + SCORES, headers=bearer) as r:
            assert r.status == 200, await r.text()
        assert (await admin_key(s, proc)).startswith("sk_live_")


@pytest.mark.parametrize(
    ("spoil", "error"),
    [
        # A byte an editor wrote in Latin-1: its decoding error quoted the whole file.
        (lambda text: text + "# caf\xe9\n", "is not UTF-8 text (byte"),
        # A URL check-config passed and that only opening the store refused (a crashed task).
        (
            lambda text: text.replace("store: memory", "store: redis://:pw@127.0.0.1:notaport/0"),
            "store.url: is not a Redis URL that can be opened",
        ),
    ],
    ids=["latin-1 byte", "unopenable redis url"],
)
async def test_a_broken_file_is_a_counted_reload_error_that_quotes_nothing(
    tmp_path: Path,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
    spoil: Any,
    error: str,
) -> None:
    """The running config stays, the failure is one line naming the problem (counted in
    gateway_config_reloads_total), and nothing of the file reaches the log: here the admin
    token written inline."""
    proc = write_config(tmp_path, base_url(upstream[1]))
    await started(proc, processes)
    assert proc.proc is not None
    text = proc.config.read_text()
    assert "store: memory" in text and ADMIN_TOKEN in text
    proc.config.write_bytes(spoil(text).encode("latin-1"))
    proc.proc.send_signal(signal.SIGHUP)
    await reloaded(proc, 1, '"config reload failed; keeping the running config"')
    lines = [orjson.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line["msg"].startswith("config reload failed")]
    assert error in failed[0]["error"], failed
    assert ADMIN_TOKEN not in proc.output()
    assert not [line for line in lines if "Task exception" in line["msg"]], lines
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as r:
            metrics = await r.text()
        key = await admin_key(s, proc)
        async with s.get(proc.base + SCORES, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200  # the running config serves on
    assert 'gateway_config_reloads_total{result="error"} 1.0' in metrics


def restart_warnings(proc: GatewayProcess) -> list[str]:
    return [
        line["setting"]
        for line in map(orjson.loads, (t for t in proc.output().splitlines() if t.startswith("{")))
        if line["msg"] == "config reload: this setting needs a restart; ignored"
    ]


async def test_restart_warnings_compare_the_file_with_what_runs(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    """A changed listener address is ignored, and said so on every reload while the file
    differs from what the process listens on (not only on the first); putting it back warns no
    more. A new admin token applies on reload: no warning says it was ignored."""
    proc = write_config(tmp_path, base_url(upstream[1]))
    await started(proc, processes)
    assert proc.proc is not None
    original = yaml.safe_load(proc.config.read_text())
    moved = {**original, "listen": {**original["listen"], "port": proc.port + 1}}
    for count, document in enumerate((moved, moved, original), start=1):
        proc.config.write_text(yaml.safe_dump(document))
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, count)
    assert restart_warnings(proc) == ["listen.port", "listen.port"]
    # Connections are started with the header deadline: a new one needs a restart too.
    slower = {**original, "limits": {**original.get("limits", {}), "header_timeout": "42s"}}
    proc.config.write_text(yaml.safe_dump(slower))
    proc.proc.send_signal(signal.SIGHUP)
    await reloaded(proc, 4)
    assert restart_warnings(proc) == ["listen.port", "listen.port", "limits.header_timeout"]
    token = "a-new-admin-token-" + uuid.uuid4().hex
    proc.config.write_text(
        yaml.safe_dump({**original, "admin": {**original["admin"], "token": token}})
    )
    proc.proc.send_signal(signal.SIGHUP)
    await reloaded(proc, 5)
    assert restart_warnings(proc) == ["listen.port", "listen.port", "limits.header_timeout"]
    async with aiohttp.ClientSession() as s:
        keys = f"http://127.0.0.1:{proc.admin_port}/admin/keys?account=acc_1"
        async with s.get(keys, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 401
        async with s.get(keys, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
        async with s.get(proc.base + SCORES) as r:
            assert r.status == 401  # still listening where it started


async def test_a_reload_applies_log_level(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    """``log_level`` applies on reload: from ERROR (no access lines) to INFO (access lines,
    and the reload's own line)."""
    proc = write_config(tmp_path, base_url(upstream[1]), extra={"log_level": "ERROR"})
    await started(proc, processes)
    assert proc.proc is not None
    async with aiohttp.ClientSession() as s:
        async with s.get(proc.base + SCORES) as r:
            assert r.status == 401
        assert '"gateway.access"' not in proc.output()
        document = yaml.safe_load(proc.config.read_text())
        proc.config.write_text(yaml.safe_dump({**document, "log_level": "INFO"}))
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, 1)
        async with s.get(proc.base + SCORES) as r:
            assert r.status == 401
    deadline = time.monotonic() + 5
    while '"gateway.access"' not in proc.output():
        assert time.monotonic() < deadline, proc.output()[-2000:]
        await asyncio.sleep(0.05)


async def test_a_reload_to_a_store_that_does_not_answer_keeps_the_running_one(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    """A typo in store.url must not take the service down: a new store that does not answer
    fails the reload (counted, one line naming ``store`` and why), and requests are served on.
    That line is the only report: the candidate's failure is neither a "store unavailable"
    warning nor a store error in the metrics, which an operator (and the shipped alert) would
    read as the running store being down."""
    proc = write_config(
        tmp_path, base_url(upstream[1]), store=redis_url, name=f"reload-{uuid.uuid4().hex[:8]}"
    )
    await started(proc, processes)
    assert proc.proc is not None
    async with aiohttp.ClientSession() as s:
        key = await admin_key(s, proc)
        document = yaml.safe_load(proc.config.read_text())
        document["store"] = {**document["store"], "url": f"redis://127.0.0.1:{free_port()}/0"}
        proc.config.write_text(yaml.safe_dump(document))
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, 1, '"config reload failed; keeping the running config"')
        async with s.get(proc.base + SCORES, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
    failed = [
        orjson.loads(line) for line in proc.output().splitlines() if '"config reload failed' in line
    ]
    assert failed[0]["error"].startswith("store: the new store does not answer ("), failed
    assert "ConnectionError" in failed[0]["error"], failed
    assert '"config reloaded"' not in proc.output()
    assert "store unavailable" not in proc.output(), proc.output()[-2000:]
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as r,
    ):
        metrics = await r.text()
    assert 'gateway_config_reloads_total{result="error"} 1.0' in metrics
    assert "gateway_store_errors_total{" not in metrics


async def test_a_reload_to_a_store_that_accepts_but_never_answers_says_it_timed_out(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    """An address that takes the connection and then says nothing (a wrong port behind a
    proxy, a firewall): the reload fails within the store's timeout, naming the timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; the client gives up
        writer.close()

    proc = write_config(tmp_path, base_url(upstream[1]))
    await started(proc, processes)
    assert proc.proc is not None
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        document = yaml.safe_load(proc.config.read_text())
        document["store"] = {"url": f"redis://127.0.0.1:{port}/0", "timeout": "300ms"}
        proc.config.write_text(yaml.safe_dump(document))
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, 1, '"config reload failed; keeping the running config"')
    finally:
        server.close()
    (failed,) = [
        orjson.loads(line) for line in proc.output().splitlines() if '"config reload failed' in line
    ]
    assert failed["error"].startswith("store: the new store does not answer (TimeoutError"), failed


async def test_after_a_reload_to_a_new_store_that_store_reports_its_failures(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    """A new store is quiet only while the reload tries it: once it serves, its failures are
    the running store's, warned about and counted (the shipped alert reads the count)."""
    proc = write_config(
        tmp_path, base_url(upstream[1]), store=redis_url, name=f"reload-{uuid.uuid4().hex[:8]}"
    )
    await started(proc, processes)
    assert proc.proc is not None
    other = RedisServer()
    try:
        document = yaml.safe_load(proc.config.read_text())
        document["store"] = {**document["store"], "url": other.url}
        proc.config.write_text(yaml.safe_dump(document))
        proc.proc.send_signal(signal.SIGHUP)
        await reloaded(proc, 1)
    finally:
        other.stop()
    async with aiohttp.ClientSession() as s:
        unknown = "sk_live_" + "A" * 43  # looked up in the store: it does not answer
        async with s.get(proc.base + SCORES, headers={"Authorization": f"Bearer {unknown}"}) as r:
            assert r.status == 503, await r.text()
        async with s.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as r:
            metrics = await r.text()
    assert "store unavailable" in proc.output(), proc.output()[-2000:]
    assert "gateway_store_errors_total{" in metrics


async def test_turning_tls_on_by_reload_is_said_to_need_a_restart(
    tmp_path: Path, upstream: tuple[Recorder, TestServer], processes: list[GatewayProcess]
) -> None:
    """A plain listener stays plain until a restart (its socket was opened without TLS): a
    reload that gives the admin listener a certificate says so instead of reporting it
    applied, and the admin token still travels over plain HTTP only because it was asked to."""
    import trustme

    proc = write_config(tmp_path, base_url(upstream[1]))
    await started(proc, processes)
    assert proc.proc is not None
    issued = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "admin.crt", tmp_path / "admin.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    document = yaml.safe_load(proc.config.read_text())
    document["admin"] = {**document["admin"], "tls_cert": str(cert), "tls_key": str(key)}
    proc.config.write_text(yaml.safe_dump(document))
    proc.proc.send_signal(signal.SIGHUP)
    await reloaded(proc, 1)
    assert restart_warnings(proc) == ["admin.tls_cert"]


async def test_a_hangup_while_starting_is_a_reload_once_serving(tmp_path: Path) -> None:
    """A SIGHUP that comes after a process read its file and before it serves: it used to end
    a single process (the signal's default) or, in a worker (started with SIGHUP ignored), be
    lost, so a worker restarted as a new config was deployed served the old one while every
    other process reloaded. It is now remembered from before the file is read and is a reload
    once the process serves. In this process: the file changes (a new admin token) after it
    was read, and the SIGHUP comes before ``run``."""
    proc = write_config(tmp_path, "http://127.0.0.1:1")
    previous = signal.getsignal(signal.SIGHUP)
    early = EarlyHangup()
    serving: asyncio.Future[None] | None = None
    try:
        settings = load_settings(proc.config)
        document = yaml.safe_load(proc.config.read_text())
        document["admin"]["token"] = new_token = "new-admin-token-" + uuid.uuid4().hex
        proc.config.write_text(yaml.safe_dump(document))
        os.kill(os.getpid(), signal.SIGHUP)
        assert early.seen

        serving = asyncio.ensure_future(run(settings, early=early))
        url = f"http://127.0.0.1:{proc.admin_port}/admin/keys?account=acc_1"
        deadline = time.monotonic() + 10
        statuses: tuple[int, int] = (0, 0)
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline and statuses != (200, 401):
                await asyncio.sleep(0.05)
                try:
                    got = []
                    for token in (new_token, ADMIN_TOKEN):
                        headers = {"Authorization": f"Bearer {token}"}
                        async with session.get(url, headers=headers) as r:
                            got.append(r.status)
                    statuses = (got[0], got[1])
                except aiohttp.ClientConnectionError:
                    continue
        assert statuses == (200, 401)  # the file as it is now, not as it was read
    finally:
        if serving is not None:
            os.kill(os.getpid(), signal.SIGTERM)  # run()'s own handler: drain and stop
            await serving
        signal.signal(signal.SIGHUP, previous)
