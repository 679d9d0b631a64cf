"""A real server and real CLI runs sharing one Redis: a master key other than the store's is
refused by both, with one clear line, before anything is sealed (issue 12)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from pathlib import Path

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from gateway.issue.member_cli import member_token
from gateway.keys.sealing import Sealer, new_master_key
from tests.support import GatewayProcess, Recorder, base_url, gateway_command, write_config


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gateway_command(*args, "--config", str(config)),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_cli_and_server_refuse_another_master_key(
    tmp_path: Path,
    redis_url: str,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    url = base_url(upstream[1])
    name = f"mk-{uuid.uuid4().hex[:8]}"  # one store prefix, shared by all three configs
    server = write_config(tmp_path, url, store=redis_url, name=name)
    other_key = new_master_key()
    other = write_config(tmp_path, url, store=redis_url, name=name, extra={"master_key": other_key})
    await asyncio.to_thread(server.start)
    processes.append(server)

    # The CLI with another master key: refused, one line naming both fingerprints, no key.
    refused = await asyncio.to_thread(run, other.config, "keys", "create", "--account", "acc_1")
    assert refused.returncode == 2, refused.stdout
    assert refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gateway: master_key: "), refused.stderr
    assert "Traceback" not in refused.stderr
    assert Sealer(base64.b64decode(other_key)).fingerprint in lines[0]
    assert other_key not in refused.stderr

    # The server's own key works end to end: CLI create, member token, 200.
    created = await asyncio.to_thread(run, server.config, "keys", "create", "--account", "acc_1")
    assert created.returncode == 0, created.stderr
    record = orjson.loads(created.stdout)
    listed = orjson.loads((await asyncio.to_thread(run, server.config, "keys", "list")).stdout)
    assert [k["key_id"] for k in listed["keys"]] == [record["key_id"]]  # the refused run wrote none
    token = member_token(record["key"], record["key_id"], "usr_1")
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            server.base + "/v1/users/usr_1/scores", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert response.status == 200, await response.text()

    # A server with the other key does not start: one line, exit 2, nothing listening.
    result = await asyncio.to_thread(
        subprocess.run,
        gateway_command("serve", "--config", str(other.config)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("gateway: master_key: ")
    assert '"listening"' not in result.stdout
