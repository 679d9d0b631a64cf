"""A first deploy, done exactly as the README's "Deployment" section says: the shipped
``config/`` (byte for byte), ``gateway init``, the environment file loaded by the shell, then
``check-config``, ``serve``, a key from the CLI and requests with it (issue 12)."""

from __future__ import annotations

import asyncio
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from tests.support import ROOT, OwnedProcess, Recorder, base_url, free_port, wait_for_port

# The README's commands, run verbatim below (the test checks that they are the README's).
INIT = "gateway init --config config/gateway.yaml --redis-url "
LOAD_ENV = "set -a; . config/gateway.env; set +a"
CHECK = "gateway check-config config/gateway.yaml"
SERVE = "gateway serve --config config/gateway.yaml"
CREATE_KEY = "gateway keys create --config config/gateway.yaml --account acc_123 --environment live"


def deployment_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Deployment", 1)[1].split("\n## ", 1)[0]


def test_the_readme_gives_these_commands() -> None:
    section = deployment_section()
    for command in (INIT, LOAD_ENV, CHECK, SERVE, CREATE_KEY):
        assert command in section, command
    assert "config/gateway.env.example" in section


class Operator:
    """A shell in a deploy directory, where ``gateway`` is the code under test and the
    environment holds nothing but what the documented steps put there."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        shim = directory / "bin"
        shim.mkdir()
        (shim / "gateway").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gateway "$@"\n')
        (shim / "gateway").chmod(0o755)
        self.env = {
            "PATH": f"{shim}:/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),  # `python -m gateway` runs this tree's package
            "HOME": str(directory),
        }

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", script],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self, script: str, log: Path) -> OwnedProcess:
        with log.open("wb") as out:
            return OwnedProcess(
                ["bash", "-c", script],
                cwd=self.directory,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def uncomment(env_file: Path, **values: str) -> None:
    """What an operator does in an editor: set optional variables the file lists commented."""
    text = env_file.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^# {name}=.*$", f"{name}={value}", text, flags=re.M)
        assert count == 1, name
    env_file.write_text(text)


async def test_first_deploy_by_the_docs(
    tmp_path: Path, redis_url: str, upstream: tuple[Recorder, TestServer]
) -> None:
    recorder, server = upstream
    shutil.copytree(ROOT / "config", tmp_path / "config")
    for name in ("gateway.yaml", "policy.yaml", "gateway.env.example"):
        assert (tmp_path / "config" / name).read_bytes() == (ROOT / "config" / name).read_bytes()
    shell = Operator(tmp_path)
    # A database of its own: the shipped config's store prefix (gw:) is fixed.
    redis = redis_url.rsplit("/", 1)[0] + "/9"

    init = await asyncio.to_thread(shell.run, INIT + redis)
    assert init.returncode == 0, init.stderr
    env_file, key_file = tmp_path / "config/gateway.env", tmp_path / "config/keys/gw-1.pem"
    for path in (env_file, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"created config/{path.relative_to(tmp_path / 'config')}" in init.stdout
    secrets = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(secrets) == {"GATEWAY_ADMIN_TOKEN", "REDIS_URL", "GATEWAY_MASTER_KEY"}
    assert secrets["REDIS_URL"] == redis
    for name in ("GATEWAY_ADMIN_TOKEN", "GATEWAY_MASTER_KEY"):
        assert len(secrets[name]) >= 32 and secrets[name] not in init.stdout + init.stderr

    # The editor step: this machine's ports and backend.
    port, admin_port = free_port(), free_port()
    backend = base_url(server)
    uncomment(
        env_file,
        GATEWAY_PORT=str(port),
        GATEWAY_ADMIN_PORT=str(admin_port),
        GATEWAY_LIVE_UPSTREAM=backend,
        GATEWAY_SANDBOX_UPSTREAM=backend,
    )
    checked = await asyncio.to_thread(shell.run, f"{LOAD_ENV}; {CHECK}")
    assert checked.returncode == 0, checked.stderr
    assert "config/gateway.yaml: OK" in checked.stdout

    log = tmp_path / "serve.log"
    proc = shell.start(f"{LOAD_ENV}; exec {SERVE}", log)
    try:
        await asyncio.to_thread(wait_for_port, port)
        await asyncio.to_thread(wait_for_port, admin_port)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{admin_port}/readyz") as r:
                ready = await r.json()
                assert r.status == 200, ready
            assert ready["checks"] == {
                "store": "ok",
                "upstream:live": "ok",
                "upstream:sandbox": "ok",
            }
            created = await asyncio.to_thread(shell.run, f"{LOAD_ENV}; {CREATE_KEY}")
            assert created.returncode == 0, created.stderr
            key = orjson.loads(created.stdout)
            base = f"http://127.0.0.1:{port}"
            bearer = {"Authorization": f"Bearer {key['key']}"}
            async with s.get(base + "/v1/users/usr_1/scores", headers=bearer) as r:
                assert r.status == 200, await r.text()
            assert recorder.last.headers["x-auth-account"] == ["acc_123"]
            # A user token, signed with the key `gateway init` made.
            async with s.post(
                base + "/v1/auth/user-token", json={"user_id": "usr_1"}, headers=bearer
            ) as r:
                assert r.status == 200, await r.text()
                user_token = (await r.json())["token"]
            async with s.get(
                base + "/v1/users/usr_1/scores", headers={"Authorization": f"Bearer {user_token}"}
            ) as r:
                assert r.status == 200
            # A member token signed with the key the CLI created: the CLI and the server share
            # the master key from the environment file, so the server opens the key.
            signed = await asyncio.to_thread(
                shell.run,
                f"GATEWAY_API_KEY={key['key']} gateway tokens member --key-id {key['key_id']} "
                "--sub usr_1",
            )
            member = signed.stdout.strip()
            async with s.get(
                base + "/v1/users/usr_1/scores", headers={"Authorization": f"Bearer {member}"}
            ) as r:
                assert r.status == 200, await r.text()
    finally:
        await asyncio.to_thread(proc.stop)
    assert proc.returncode == 0
    lines = [orjson.loads(line) for line in log.read_text().splitlines()]
    # A new store is said to be one (as one that lost its data would be), once, then it serves.
    assert lines[0]["msg"].startswith("the store held no master-key fingerprint")
    assert lines[1]["msg"] == "listening" and "stopped" in [line["msg"] for line in lines]
    assert not [line for line in lines if line["level"] not in ("info", "debug")]
    text = log.read_text()
    for secret in (secrets["GATEWAY_MASTER_KEY"], secrets["GATEWAY_ADMIN_TOKEN"], key["key"]):
        assert secret not in text
