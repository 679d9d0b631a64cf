"""``workers: N``: what the supervisor does around its worker processes (gateway.workers)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.support import (
    GatewayProcess,
    OwnedProcess,
    ThreadedUpstream,
    admin_create_key,
    free_port,
    gateway_command,
    wait_for_port,
    write_config,
)


def serve(config: Path, log: Path) -> OwnedProcess:
    """``gateway serve`` (a supervisor, with ``workers: N``), everything it writes in ``log``."""
    with log.open("wb") as out:
        return OwnedProcess(
            gateway_command("serve", "--config", str(config)), stdout=out, stderr=subprocess.STDOUT
        )


def two_workers(
    tmp_path: Path, redis_url: str, upstream: str = "http://127.0.0.1:1"
) -> GatewayProcess:
    """The config of a gateway with two workers on the test Redis (a prefix of its own)."""
    return write_config(
        tmp_path,
        upstream,
        store=redis_url,
        name=f"workers-{uuid.uuid4().hex[:8]}",
        extra={"workers": 2},
    )


def test_a_reload_while_workers_start_does_not_end_them(tmp_path: Path, redis_url: str) -> None:
    """SIGHUP forwarded to a worker still importing (before it installs its own handler) used
    to end it (SIGHUP's default action): the supervisor logged "worker exited; restarting".
    Workers now start with SIGHUP ignored until they serve."""
    decision_port = free_port()
    proc = write_config(
        tmp_path,
        "http://127.0.0.1:1",
        store=redis_url,
        name=f"workers-{uuid.uuid4().hex[:8]}",
        extra={
            "workers": 2,
            "decision": {
                "enabled": True,
                "proxy": "nginx",
                "listen": {"host": "127.0.0.1", "port": decision_port},
            },
        },
    )
    log = tmp_path / "supervisor.log"
    supervisor = serve(proc.config, log)
    try:
        wait_for_port(proc.admin_port)  # the supervisor serves; its workers are starting
        for _ in range(3):
            supervisor.send_signal(signal.SIGHUP)
            time.sleep(0.2)
        wait_for_port(proc.port)
        wait_for_port(decision_port)  # every worker binds the decision listener too
        deadline = time.monotonic() + 15
        while log.read_text().count('"msg":"listening"') < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a worker ended by a signal is noticed within half a second
    finally:
        supervisor.stop()
    text = log.read_text()
    assert text.count('"msg":"listening"') >= 3, text  # the supervisor and both workers
    assert "worker exited" not in text, text


def test_each_workers_lines_name_it_and_a_restarted_worker_keeps_its_index(
    tmp_path: Path, redis_url: str
) -> None:
    proc = two_workers(tmp_path, redis_url)
    log = tmp_path / "supervisor.log"

    def listening() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        return [line for line in lines if line["msg"] == "listening"]

    def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)

    supervisor = serve(proc.config, log)
    try:
        wait_for_port(proc.admin_port)
        until(lambda: len(listening()) >= 3)
        # The supervisor's lines name no worker; each worker's name its index.
        assert sorted(str(line.get("worker")) for line in listening()) == ["1", "2", "None"]
        children = subprocess.run(
            ["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        by_pid = {line["pid"]: line["worker"] for line in listening() if "worker" in line}
        victim = next(int(pid) for pid in children if int(pid) in by_pid)
        index = by_pid[victim]
        os.kill(victim, signal.SIGKILL)
        until(lambda: len(listening()) >= 4)
    finally:
        supervisor.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    exited = [line for line in lines if line["msg"] == "worker exited; restarting"]
    assert [(line["index"], line["pid"], line.get("worker")) for line in exited] == [
        (index, victim, None)
    ]
    restarted = listening()[3]
    assert restarted["worker"] == index and restarted["pid"] != victim


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped yet) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_workers_stop_once_their_supervisor_is_killed(tmp_path: Path, redis_url: str) -> None:
    """A supervisor killed with SIGKILL cannot forward SIGTERM: its workers used to live on
    (parent pid 1), holding the public port and serving with nobody to reload, restart or stop
    them. Each now stops within a second or two, draining as on SIGTERM, and frees the port."""
    proc = two_workers(tmp_path, redis_url)
    log = tmp_path / "supervisor.log"
    supervisor = serve(proc.config, log)
    try:
        wait_for_port(proc.admin_port)
        wait_for_port(proc.port)
        deadline = time.monotonic() + 20
        while log.read_text().count('"msg":"listening"') < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [
            int(pid)
            for pid in subprocess.run(
                ["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
        ]
        assert len(workers) == 2
        supervisor.kill()
        supervisor.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), log.read_text()
    finally:
        for pid in workers if "workers" in locals() else []:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        supervisor.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    gone = [line for line in lines if line["msg"] == "the supervisor is gone; stopping"]
    assert sorted(line["worker"] for line in gone) == [1, 2]
    assert {line["supervisor"] for line in gone} == {supervisor.pid}
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", proc.port))


def test_a_second_gateway_with_workers_is_refused_the_port(tmp_path: Path, redis_url: str) -> None:
    """Workers share their port with SO_REUSEPORT, which the kernel grants any process of the
    same user that sets it: a second gateway with workers (another config, another store) used
    to pass the supervisor's check and take a share of the first one's traffic. It is refused
    now (one line, exit 2), as a single process is."""
    first = write_config(
        tmp_path,
        "http://127.0.0.1:1",
        store=redis_url,
        name=f"first-{uuid.uuid4().hex[:8]}",
        extra={"workers": 2},
    )
    supervisor = serve(first.config, tmp_path / "first.log")
    try:
        wait_for_port(first.port)
        second = write_config(
            tmp_path,
            "http://127.0.0.1:1",
            store=redis_url,
            name=f"second-{uuid.uuid4().hex[:8]}",
            extra={"workers": 2, "listen": {"host": "127.0.0.1", "port": first.port}},
        )
        other = OwnedProcess(
            gateway_command("serve", "--config", str(second.config)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = other.communicate(timeout=60)
        finally:
            other.stop()
    finally:
        supervisor.stop()
    assert other.returncode == 2, out + err
    assert err.decode() == (
        f"gateway: listen.port: cannot listen on 127.0.0.1:{first.port}: address already in "
        "use; stop what holds it (another gateway?) or choose another port\n"
    )
    assert b'"msg":"listening"' not in out


UPSTREAMS_OK = {"upstream:live": "ok", "upstream:sandbox": "ok"}


def _ready(admin_port: int) -> tuple[int, dict[str, str]]:
    url = f"http://127.0.0.1:{admin_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())["checks"]
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())["checks"]


def test_a_supervisor_is_ready_only_while_its_workers_listen(
    tmp_path: Path, redis_url: str, upstream_thread: ThreadedUpstream
) -> None:
    """The supervisor's own process being alive said nothing of its workers': with workers
    that failed at every start (a file broken after a reload that kept the running config,
    read again by workers restarted after a crash), /readyz was 200 while the public port
    refused every connection, and Kubernetes kept sending traffic to the pod."""
    proc = two_workers(tmp_path, redis_url, f"http://127.0.0.1:{upstream_thread.port}")
    log = tmp_path / "supervisor.log"
    supervisor = serve(proc.config, log)

    def until(want: int) -> tuple[int, dict[str, str]]:
        deadline = time.monotonic() + 20
        seen = _ready(proc.admin_port)
        while seen[0] != want and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = _ready(proc.admin_port)
        return seen

    try:
        wait_for_port(proc.admin_port)
        wait_for_port(proc.port)
        assert until(200) == (200, {"listen": "ok", "store": "ok", **UPSTREAMS_OK})
        good = proc.config.read_text()
        proc.config.write_text(good + "bogus_field: 1\n")
        supervisor.send_signal(signal.SIGHUP)  # refused: every process keeps what it runs
        time.sleep(0.5)
        for pid in subprocess.run(
            ["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True, check=False
        ).stdout.split():
            os.kill(int(pid), signal.SIGKILL)  # restarted, they read the broken file and exit
        status, checks = until(503)
        assert (status, checks["listen"]) == (503, "unavailable"), log.read_text()
        proc.config.write_text(good)  # put right: the next restart serves again
        assert until(200)[0] == 200
    finally:
        supervisor.stop()


def test_the_supervisor_serves_health_until_its_workers_have_drained(
    tmp_path: Path, redis_url: str, upstream_thread: ThreadedUpstream
) -> None:
    """On SIGTERM the supervisor closed its admin listener at once and said "stopped" while
    its workers were still answering what was in flight: nothing could be scraped during the
    drain, and the log read as if it were over. Its admin listener now stays up until every
    worker has stopped, and its "stopped" line comes last."""
    proc = two_workers(tmp_path, redis_url, f"http://127.0.0.1:{upstream_thread.port}")
    log = tmp_path / "supervisor.log"
    supervisor = serve(proc.config, log)
    try:
        wait_for_port(proc.admin_port)
        wait_for_port(proc.port)
        key = admin_create_key(proc, "acc_1")
        request = urllib.request.Request(
            f"http://127.0.0.1:{proc.port}/v1/users/usr_a/scores?slow=3",
            headers={"Authorization": f"Bearer {key}"},
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(urllib.request.urlopen, request, timeout=20)
            time.sleep(1.0)  # in flight at a worker
            supervisor.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            health = f"http://127.0.0.1:{proc.admin_port}/healthz"
            with urllib.request.urlopen(health, timeout=5) as answer:
                assert answer.status == 200  # the worker is still draining
            assert slow.result().status == 200
        assert supervisor.wait(timeout=30) == 0
    finally:
        supervisor.stop()
    stopped = [
        json.loads(line).get("worker")
        for line in log.read_text().splitlines()
        if json.loads(line)["msg"] == "stopped"
    ]
    assert sorted(stopped[:-1]) == [1, 2] and stopped[-1] is None, stopped


def test_a_sighup_as_the_process_starts_is_a_reload_not_its_end(tmp_path: Path) -> None:
    """Importing the CLI takes about half a second; a SIGHUP then (a reload sent as a pod
    starts) ended the process: SIGHUP's default action. The entry point remembers it now."""
    proc = write_config(tmp_path, "http://127.0.0.1:1")
    log = tmp_path / "single.log"
    process = serve(proc.config, log)
    try:
        time.sleep(0.05)  # still importing
        process.send_signal(signal.SIGHUP)
        wait_for_port(proc.port, alive=process)
        deadline = time.monotonic() + 10
        while '"msg":"config reloaded"' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, log.read_text()
        assert '"msg":"config reloaded"' in log.read_text()
    finally:
        process.stop()
