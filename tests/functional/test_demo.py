"""``gateway demo``, the README's first command: started as a user starts it, its printed curl
lines run as printed, with the key it printed."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, require_binary

SCRIPT = Path(sys.executable).with_name("gateway")  # the console script `pip install` made


class Demo:
    def __init__(self) -> None:
        self.port, self.admin_port, self.backend_port = free_port(), free_port(), free_port()
        self.proc = subprocess.Popen(
            [
                str(SCRIPT),
                "demo",
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--backend-port",
                str(self.backend_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def banner(self, timeout: float = 30.0) -> list[str]:
        """What it printed, up to its last line ("Ctrl-C stops it.")."""
        printed: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no complete banner after {timeout}s: {printed}") from None
            if line is None:
                raise AssertionError(f"the demo exited ({self.proc.wait()}): {printed}")
            printed.append(line)
            if line.strip() == "Ctrl-C stops it.":
                return printed

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.proc.wait(15)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)  # it ends at the pipe's end of file
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def demo() -> Iterator[Demo]:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} not found: install the project first (pip install -e .)")
    started = Demo()
    try:
        yield started
    finally:
        started.stop()


def run_printed(line: str, key: str) -> str:
    """One printed curl line, run by a shell as a user pastes it (with $KEY exported)."""
    result = subprocess.run(
        ["bash", "-c", line],
        env={**os.environ, "KEY": key},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (line, result.stderr)
    return result.stdout


def test_demo_prints_a_key_and_curl_lines_that_work(demo: Demo) -> None:
    require_binary("curl", "curl")
    banner = demo.banner()
    text = "\n".join(banner)
    assert f"http://127.0.0.1:{demo.port}" in text and f"127.0.0.1:{demo.admin_port}" in text
    [key] = re.findall(r"^\s*export KEY=(sk_sandbox_[A-Za-z0-9]+)$", text, re.MULTILINE)
    curls = [line.strip() for line in banner if line.strip().startswith("curl ")]
    assert len(curls) == 6, curls
    answers = {line: run_printed(line, key) for line in curls}
    assert key not in "".join(answers.values())

    def answer(fragment: str) -> dict[str, object]:
        [line] = [c for c in curls if fragment in c]
        data: dict[str, object] = json.loads(answers[line])
        return data

    # The bundled backend's synthetic data for the demo user, with a Bearer key and with Basic.
    for fragment in ("/scores -H", "/sleep -u", "/devices -H"):
        data = answer(fragment)
        assert data["user_id"] == "usr_demo" and data["data"], (fragment, data)
    # No key: the gateway's own JSON error.
    refused = answer("# no key")
    assert refused["error"] == "invalid_token"
    # Token issuance for the demo user.
    user_token = answer("/v1/auth/user-token")
    assert user_token["user_id"] == "usr_demo" and str(user_token["token"]).count(".") == 2
    mobile_token = answer("/v1/auth/mobile-token")
    assert str(mobile_token["token"]).startswith("mt_")
    # The printed user token works like the key, for its own user only.
    own = run_printed(
        f'curl -s http://127.0.0.1:{demo.port}/v1/users/usr_demo/scores -H "Authorization: '
        f'Bearer {user_token["token"]}"',
        key,
    )
    assert json.loads(own)["user_id"] == "usr_demo"
    # The admin endpoints it names answer.
    health = run_printed(f"curl -s http://127.0.0.1:{demo.admin_port}/readyz", key)
    assert json.loads(health)["status"] == "ready"
    # Ctrl-C stops it cleanly.
    assert demo.interrupt() == 0
