"""``gateway demo``, the README's first command: started as a user starts it, its printed curl
lines run as printed (after its printed ``export`` lines), and the line it prints for each
request checked against what the gateway answered."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import OwnedProcess, free_port, require_binary

SCRIPT = Path(sys.executable).with_name("gateway")  # the console script `pip install` made
# A request line: time, method, path, credential kind, status (and error), milliseconds.
REQUEST_LINE = re.compile(
    r"^\d\d:\d\d:\d\d  (?P<method>[A-Z]+) +(?P<path>\S+) +(?P<credential>[a-z_]+) +"
    r"(?P<status>\d{3})(?: (?P<error>[a-z_]+))? +(?P<ms>\d+\.\d) ms$"
)


class Demo:
    def __init__(self, page_port: int | None = None) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.backend_port, self.page_port = free_port(), page_port or free_port()
        self.proc = OwnedProcess(
            [
                str(SCRIPT),
                "demo",
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--backend-port",
                str(self.backend_port),
                "--page-port",
                str(self.page_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode().rstrip("\n"))
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

    def printed(self, count: int, timeout: float = 10.0) -> list[str]:
        """The next ``count`` lines it prints."""
        out: list[str] = []
        for _ in range(count):
            line = self.lines.get(timeout=timeout)
            assert line is not None, f"the demo exited; it had printed {out}"
            out.append(line)
        return out

    def printed_until_exit(self, timeout: float = 10.0) -> list[str]:
        """Every line it printed, once it has exited."""
        out: list[str] = []
        while (line := self.lines.get(timeout=timeout)) is not None:
            out.append(line)
        return out

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        return self.proc.wait(15)

    def stop(self) -> None:
        self.proc.stop(timeout=15)
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


def exports(text: str) -> dict[str, str]:
    """The variables its ``export NAME=value`` lines set."""
    return dict(re.findall(r"^\s*export ([A-Z_]+)=(\S+)$", text, re.MULTILINE))


def run_printed(line: str, env: dict[str, str]) -> str:
    """One printed curl line, run by a shell as a user pastes it (after the exports)."""
    result = subprocess.run(
        ["bash", "-c", line],
        env={**os.environ, **env},
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
    base = f"http://127.0.0.1:{demo.port}"
    assert base in text and f"127.0.0.1:{demo.admin_port}" in text
    assert f"http://127.0.0.1:{demo.page_port}/" in text
    env = exports(text)
    assert set(env) == {"KEY", "CAREGIVER_TOKEN", "STRANGER_TOKEN"}
    key = env["KEY"]
    assert re.fullmatch(r"sk_sandbox_[A-Za-z0-9]+", key)
    curls = [line.strip() for line in banner if line.strip().startswith("curl ")]
    assert len(curls) == 12, curls
    answers = {line: run_printed(line, env) for line in curls}
    assert key not in "".join(answers.values())

    def answer(fragment: str) -> dict[str, Any]:
        [line] = [c for c in curls if fragment in c]
        data: dict[str, Any] = json.loads(answers[line])
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
    # Webhooks and events, for the key.
    hooks = answer(f"curl -s {base}/v1/webhooks -H")
    assert isinstance(hooks["webhooks"], list) and len(hooks["webhooks"]) >= 1
    created = answer("-X POST " + base + "/v1/webhooks")
    assert str(created["id"]).startswith("wh_") and created["events"] == ["scores.updated"]
    events = answer("/v1/events?limit=3")
    assert isinstance(events["events"], list) and len(events["events"]) == 3
    # The caregiver with a relationship reads the member's data; the one without is refused.
    relationships = answer("/v1/relationships")
    [relationship] = relationships["relationships"]
    assert (relationship["subject"], relationship["actor"]) == ("usr_demo", "usr_caregiver")
    allowed = answer("$CAREGIVER_TOKEN")
    assert allowed["user_id"] == "usr_demo" and allowed["data"]
    stranger = answer("$STRANGER_TOKEN")
    assert stranger["error"] == "insufficient_scope"
    assert stranger["details"] == {"reason": "relationship_inactive"}

    # One line per request, in order, saying what the gateway decided.
    decided = [REQUEST_LINE.match(line) for line in demo.printed(len(curls))]
    assert all(decided), decided
    seen = [
        (m["method"], m["path"], m["credential"], int(m["status"]), m["error"])
        for m in decided
        if m is not None
    ]
    assert seen == [
        ("GET", "/v1/users/usr_demo/scores", "api_key", 200, None),
        ("GET", "/v1/users/usr_demo/sleep", "api_key", 200, None),
        ("GET", "/v1/users/usr_demo/devices", "api_key", 200, None),
        ("GET", "/v1/users/usr_demo/scores", "none", 401, "invalid_token"),
        ("POST", "/v1/auth/user-token", "api_key", 200, None),
        ("POST", "/v1/auth/mobile-token", "api_key", 200, None),
        ("GET", "/v1/webhooks", "api_key", 200, None),
        ("POST", "/v1/webhooks", "api_key", 201, None),
        ("GET", "/v1/events", "api_key", 200, None),
        ("GET", "/v1/relationships", "api_key", 200, None),
        ("GET", "/v1/users/usr_demo/sleep", "member_token", 200, None),
        ("GET", "/v1/users/usr_demo/sleep", "member_token", 403, "insufficient_scope"),
    ]
    # The printed user token works like the key, for its own user only.
    own = run_printed(
        f'curl -s {base}/v1/users/usr_demo/scores -H "Authorization: Bearer {user_token["token"]}"',
        env,
    )
    assert json.loads(own)["user_id"] == "usr_demo"
    # A credential pasted into the path is not printed back.
    run_printed(f'curl -s {base}/v1/users/$KEY/scores -u "$KEY:"', env)
    run_printed(f"curl -s {base}/v1/users/$CAREGIVER_TOKEN/scores", env)
    after = demo.printed(3)
    assert "user_token" in after[0] and " 200 " in after[0]
    for line in after[1:]:
        assert "[redacted]" in line, line
    for secret in (key, str(user_token["token"]), env["CAREGIVER_TOKEN"]):
        assert not any(secret in line or secret[-24:] in line for line in after)
    # The admin endpoints it names answer.
    health = run_printed(f"curl -s http://127.0.0.1:{demo.admin_port}/readyz", env)
    assert json.loads(health)["status"] == "ready"
    # Ctrl-C stops it cleanly.
    assert demo.interrupt() == 0


def test_demo_cors_allows_exactly_the_page_origin(demo: Demo) -> None:
    require_binary("curl", "curl")
    demo.banner()
    scores = f"http://127.0.0.1:{demo.port}/v1/users/usr_demo/scores"

    def preflight(origin: str) -> str:
        return subprocess.run(
            [
                "curl", "-s", "-i", "-X", "OPTIONS", scores,
                "-H", f"Origin: {origin}",
                "-H", "Access-Control-Request-Method: GET",
                "-H", "Access-Control-Request-Headers: authorization",
            ],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.lower()  # fmt: skip

    page = f"http://127.0.0.1:{demo.page_port}"
    assert f"access-control-allow-origin: {page}" in preflight(page)
    for other in (f"http://localhost:{demo.page_port}", "http://127.0.0.1:1", "null"):
        assert "access-control-allow-origin" not in preflight(other), other


def test_a_page_port_in_use_is_one_line_naming_the_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = Demo(page_port=port)
        try:
            assert started.proc.wait(30) == 2
            output = started.printed_until_exit()
        finally:
            started.stop()
    assert output == [
        f"gateway: --page-port: cannot listen on 127.0.0.1:{port}: address already in use; "
        "stop what holds it (another demo?) or choose another port with --page-port"
    ]


def test_the_public_port_in_use_is_one_line_naming_the_flag() -> None:
    """Not ``listen.port``, a field of a config file the demo does not have."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(SCRIPT), "demo", "--port", str(port), "--admin-port", str(free_port()),
             "--backend-port", str(free_port()), "--page-port", str(free_port())],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result
    assert result.stderr.splitlines()[-1].startswith(
        f"gateway: --port: cannot listen on 127.0.0.1:{port}: address already in use"
    ), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--port", "18590", "--admin-port", "18590"],
            "gateway: --admin-port: 18590 is already --port's port",
        ),
        (["--backend-port", "8080"], "gateway: --backend-port: 8080 is already --port's port"),
        (["--port", "70000"], "argument --port: must be a port, 1-65535, got '70000'"),
        (["--page-port", "0"], "argument --page-port: must be a port, 1-65535, got '0'"),
    ],
)
def test_ports_the_demo_cannot_use_are_one_line_and_exit_2(argv: list[str], error: str) -> None:
    result = subprocess.run(
        [str(SCRIPT), "demo", *argv], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2, result
    assert error in result.stderr.splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
