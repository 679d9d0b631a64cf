"""Tracing in a real ``gateway serve`` process: turned on, then changed, by SIGHUP reloads, and
the spans still queued when SIGTERM stops it exported before it exits (the exporter is flushed
at shutdown)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp.test_utils import TestServer

from tests.otlp import PATH, OtlpReceiver
from tests.support import GatewayProcess, Recorder, admin_create_key, base_url, write_config

SCORES = "/v1/users/usr_a/scores"


async def until_logged(proc: GatewayProcess, message: str, times: int = 1) -> None:
    deadline = time.monotonic() + 15
    while proc.output().count(message) < times:
        assert time.monotonic() < deadline, proc.output()[-2000:]
        await asyncio.sleep(0.05)


async def test_tracing_turned_on_and_changed_by_reloads_exports_every_span_by_shutdown(
    aiohttp_server: Any, tmp_path: Path, processes: list[GatewayProcess]
) -> None:
    receiver = OtlpReceiver()
    collector: TestServer = await aiohttp_server(receiver.app())
    recorder = Recorder()
    upstream: TestServer = await aiohttp_server(recorder.app())
    proc = write_config(tmp_path, base_url(upstream))
    processes.append(proc)
    await asyncio.to_thread(proc.start)
    key = await asyncio.to_thread(admin_create_key, proc, "acc_1")
    headers = {"Authorization": f"Bearer {key}"}

    async with aiohttp.ClientSession() as session:
        async with session.get(proc.base + SCORES, headers=headers) as response:
            assert response.status == 200
            untraced = response.headers["X-Request-Id"]
        assert "traceparent" not in recorder.last.headers

        document = yaml.safe_load(proc.config.read_text())
        document["tracing"] = {
            "enabled": True,
            "endpoint": base_url(collector) + PATH,
            "service_name": "gw-serve",
            "timeout": "5s",
        }
        proc.config.write_text(yaml.safe_dump(document))
        assert proc.proc is not None
        os.kill(proc.proc.pid, signal.SIGHUP)
        await until_logged(proc, '"config reloaded"')

        async with session.get(proc.base + SCORES, headers=headers) as response:
            assert response.status == 200
            traced = response.headers["X-Request-Id"]
        (seen,) = recorder.last.headers["traceparent"]

        # Another tracing section: a new tracer for what follows; the replaced one exports its
        # spans once its requests are done.
        document["tracing"]["service_name"] = "gw-serve-2"
        proc.config.write_text(yaml.safe_dump(document))
        os.kill(proc.proc.pid, signal.SIGHUP)
        await until_logged(proc, '"config reloaded"', times=2)
        async with session.get(proc.base + SCORES, headers=headers) as response:
            assert response.status == 200
            retraced = response.headers["X-Request-Id"]

    # SIGTERM, waited for off the loop: the receiver must answer the export at shutdown.
    os.kill(proc.proc.pid, signal.SIGTERM)
    assert await asyncio.to_thread(proc.proc.wait, 60) == 0

    ids = {s.attributes.get("gateway.request_id"): s for s in receiver.spans}
    assert untraced not in ids
    root = ids[traced]
    assert root.service["service.name"] == "gw-serve"
    assert ids[retraced].service["service.name"] == "gw-serve-2"
    assert {s.name for s in receiver.children(root)} == {
        "gateway.authenticate",
        "gateway.authorize",
        "gateway.upstream",
    }
    (upstream_span,) = [s for s in receiver.children(root) if s.name == "gateway.upstream"]
    assert seen.split("-")[1:3] == [root.trace_id, upstream_span.span_id]
