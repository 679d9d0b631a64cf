"""The ``gateway`` command as an operator meets it: key commands against a real Redis, files it
writes, listeners it cannot bind (issue 12, "Operations that a first deploy hits")."""

from __future__ import annotations

import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.app import create_admin_app
from gateway.cli import main
from gateway.runtime import Current, build_runtime
from tests.conftest import make_settings
from tests.support import ADMIN_TOKEN, OwnedProcess, free_port, gateway_command, write_config


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> Path:
    """A config on the test Redis, with a store prefix of its own."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    return write_config(tmp_path, "http://127.0.0.1:1", store=redis_url, name=name).config


def gateway(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run ``gateway ARGV`` in this process: (exit code, parsed JSON stdout or None, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, orjson.loads(out) if out.strip() else None, err


def test_keys_create_test_is_a_sandbox_test_key(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, created, _ = gateway(
        capsys, "keys", "create", "--config", str(config), "--account", "acc_1", "--test"
    )
    assert code == 0
    assert created["key"].startswith("sk_test_")
    assert created["environment"] == "sandbox" and created["prefix"] == "sk_test_"
    # Saying sandbox as well is the same key kind; saying live is a contradiction, refused.
    code, created, _ = gateway(
        capsys, "keys", "create", "--config", str(config), "--account", "acc_1", "--test",
        "--environment", "sandbox",
    )  # fmt: skip
    assert code == 0 and created["key"].startswith("sk_test_")
    code, out, err = gateway(
        capsys, "keys", "create", "--config", str(config), "--account", "acc_1", "--test",
        "--environment", "live",
    )  # fmt: skip
    assert code == 2 and out is None
    assert err == (
        "gateway: --test makes a sandbox key (sk_test_…); it cannot be combined with "
        "--environment live\n"
    )
    # Without --test: a live key, as before.
    code, created, _ = gateway(
        capsys, "keys", "create", "--config", str(config), "--account", "acc_1"
    )
    assert code == 0 and created["key"].startswith("sk_live_")
    code, listed, _ = gateway(capsys, "keys", "list", "--config", str(config))
    assert [k["prefix"] for k in listed["keys"]] == ["sk_test_", "sk_test_", "sk_live_"]


@pytest.mark.parametrize(
    ("given", "seconds"), [("3600", 3600), ("12h", 12 * 3600), ("30d", 30 * 86400), ("1.5h", 5400)]
)
def test_keys_create_lifetime_takes_seconds_or_a_duration(
    config: Path, capsys: pytest.CaptureFixture[str], given: str, seconds: int
) -> None:
    code, created, _ = gateway(
        capsys, "keys", "create", "--config", str(config), "--account", "acc_1",
        "--lifetime", given,
    )  # fmt: skip
    assert code == 0, created
    [key] = gateway(capsys, "keys", "list", "--config", str(config))[1]["keys"]
    assert rfc3339_seconds(key["expires_at"]) - rfc3339_seconds(key["created_at"]) == seconds


@pytest.mark.parametrize("given", ["abc", "-5", "30 days", "1w"])
def test_keys_create_refuses_a_lifetime_that_is_no_duration(
    config: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--config", str(config), "--account", "acc_1", "--lifetime", given])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --lifetime: must be a duration such as 3600, 12h or 30d, got {given!r}" in err
    assert gateway(capsys, "keys", "list", "--config", str(config))[1]["keys"] == []


def test_keys_rotate_grace_takes_a_duration(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, created, _ = gateway(capsys, "keys", "create", "--config", str(config), "--account", "a")
    code, rotated, _ = gateway(
        capsys, "keys", "rotate", "--config", str(config), created["key_id"], "--grace", "5m"
    )
    assert code == 0, rotated
    ends = rfc3339_seconds(rotated["previous"]["revoked_at"])
    assert ends - rfc3339_seconds(rotated["created_at"]) == 300


def rfc3339_seconds(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def test_the_first_run_on_a_store_says_it_recorded_the_master_key(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store with no fingerprint is new, or lost its data: the run that records one says so
    (on stderr, the key's JSON on stdout stays clean); the runs after it do not."""
    code, _, err = gateway(capsys, "keys", "create", "--config", str(config), "--account", "a")
    assert code == 0
    assert err.startswith("gateway: note: the store held no master-key fingerprint: recorded")
    code, _, err = gateway(capsys, "keys", "create", "--config", str(config), "--account", "a")
    assert code == 0 and "note" not in err


def test_revoke_and_rotate_print_the_status_after_the_change(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, first, _ = gateway(capsys, "keys", "create", "--config", str(config), "--account", "a")
    code, revoked, _ = gateway(capsys, "keys", "revoke", "--config", str(config), first["key_id"])
    assert code == 0
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    _, second, _ = gateway(capsys, "keys", "create", "--config", str(config), "--account", "a")
    code, rotated, _ = gateway(capsys, "keys", "rotate", "--config", str(config), second["key_id"])
    assert code == 0
    assert rotated["status"] == "active"
    assert rotated["previous"]["status"] == "rotated"
    assert rotated["previous"]["rotated_to"] == rotated["key_id"]
    _, listed, _ = gateway(capsys, "keys", "list", "--config", str(config))
    assert [k["status"] for k in listed["keys"]] == ["revoked", "rotated", "active"]


def cli_change(config: Path, *argv: str) -> tuple[int, Any, list[dict[str, Any]], str]:
    """``gateway ARGV --config CONFIG`` as an operator runs it, a process of its own:
    (exit code, its JSON stdout or None, the audit lines of its stderr, all of its stderr)."""
    returncode, out, err = run_gateway(*argv, "--config", str(config))
    text = err.decode()
    audit = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert all(line["logger"] == "gateway.audit" for line in audit), text
    return returncode, orjson.loads(out) if out.strip() else None, audit, text


def test_key_changes_from_the_cli_are_audited_as_the_admin_api_audits_them(
    config: Path,
) -> None:
    """Each key change (create, rotate, revoke), and each one refused, writes one
    ``gateway.audit`` line on stderr naming the account and key ids like the admin API's
    (actor ``cli``); never a key, not even one pasted where a key id goes. Listing is no
    change: no line."""
    code, created, audit, err = cli_change(config, "keys", "create", "--account", "acc_cli")
    assert code == 0
    (line,) = audit
    assert {k: line.get(k) for k in ("route", "credential", "actor", "outcome", "error")} == {
        "route": "cli:create_key",
        "credential": "cli",
        "actor": "cli",
        "outcome": "allow",
        "error": None,
    }
    assert (line["account"], line["key_id"]) == ("acc_cli", created["key_id"])
    assert line["os_user"] and line["request_id"]
    assert created["key"] not in err
    old = created["key_id"]

    code, rotated, audit, err = cli_change(config, "keys", "rotate", old, "--grace", "300")
    assert code == 0
    (line,) = audit
    assert (line["route"], line["outcome"], line["account"]) == (
        "cli:rotate_key",
        "allow",
        "acc_cli",
    )
    assert (line["key_id"], line["new_key_id"]) == (old, rotated["key_id"])
    assert rotated["key"] not in err

    code, revoked, audit, _ = cli_change(config, "keys", "revoke", rotated["key_id"])
    assert code == 0 and revoked["status"] == "revoked"
    (line,) = audit
    assert (line["route"], line["outcome"], line["key_id"]) == (
        "cli:revoke_key",
        "allow",
        rotated["key_id"],
    )

    # Refused: on record, without what was asked for.
    code, out, audit, err = cli_change(config, "keys", "rotate", old)
    assert (code, out) == (2, None)
    (line,) = audit
    assert (line["route"], line["outcome"], line["error"]) == (
        "cli:rotate_key",
        "error",
        "conflict",
    )
    assert "key_id" not in line and "account" not in line
    assert err.splitlines()[-1].startswith("gateway: conflict: ")
    code, _, audit, err = cli_change(config, "keys", "revoke", created["key"])
    assert code == 2
    assert [(line["route"], line["outcome"]) for line in audit] == [("cli:revoke_key", "error")]
    assert created["key"] not in err

    code, listed, audit, _ = cli_change(config, "keys", "list", "--account", "acc_cli")
    assert code == 0 and len(listed["keys"]) == 2
    assert audit == []


def test_relationship_changes_from_the_cli_are_audited_as_the_admin_api_audits_them(
    config: Path,
) -> None:
    """``relationships grant|revoke`` write one ``gateway.audit`` line each on stderr naming
    the account, the member and the caregiver, as the admin API's line does."""
    who = ("--account", "acc_cli", "--subject", "usr_a", "--actor", "usr_carer")
    for action in ("grant", "revoke"):
        code, answer, audit, _ = cli_change(config, "relationships", action, *who)
        assert code == 0 and answer["active"] is (action == "grant"), answer
        (line,) = audit
        assert {
            k: line.get(k) for k in ("route", "actor", "outcome", "account", "subject", "caregiver")
        } == {
            "route": f"cli:{action}_relationship",
            "actor": "cli",
            "outcome": "allow",
            "account": "acc_cli",
            "subject": "usr_a",
            "caregiver": "usr_carer",
        }


def test_signing_key_creates_missing_directories_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "config" / "keys" / "gw-1.pem"
    assert main(["signing-key", "--out", str(out)]) == 0
    assert f"wrote EdDSA private key to {out} (mode 0600)" in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    # The default for new deployments: Ed25519 (the cheapest to sign).
    assert isinstance(load_pem_private_key(out.read_bytes(), password=None), Ed25519PrivateKey)
    before = out.read_bytes()
    assert main(["signing-key", "--alg", "ES256", "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"gateway: {out} exists; it is never overwritten\n"
    assert out.read_bytes() == before


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other program listens on (no SO_REUSEPORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run_gateway(*argv: str) -> tuple[int, bytes, bytes]:
    """``gateway ARGV`` in a process of its own, expected to exit by itself: its exit code,
    stdout and stderr. On a timeout it and everything it started (workers) are stopped, and
    the test fails."""
    proc = OwnedProcess(gateway_command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.stop()
    return proc.returncode, out, err


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    """``gateway serve`` expected to exit by itself (:func:`run_gateway`)."""
    command = ["serve", "--config", str(config)]
    returncode, out, err = run_gateway(*command)
    return subprocess.CompletedProcess(command, returncode, out.decode(), err.decode())


def _listener_on(listener: str, port: int) -> dict[str, Any]:
    if listener == "decision.listen":
        return {
            "decision": {
                "enabled": True,
                "proxy": "nginx",
                "listen": {"host": "127.0.0.1", "port": port},
            }
        }
    return {listener: {"host": "127.0.0.1", "port": port}}


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("listener", ["listen", "admin", "decision.listen"])
def test_a_port_in_use_is_one_line_naming_it(
    tmp_path: Path, held_port: int, listener: str, store: str, request: pytest.FixtureRequest
) -> None:
    """With a Redis store too: the store watch, started as the public app is set up, used to
    swallow its cancellation when it came during its first connection (Python 3.11's
    ``asyncio.wait_for``, which redis-py connects with), and the process never exited."""
    proc = write_config(
        tmp_path,
        "http://127.0.0.1:1",
        store=request.getfixturevalue("redis_url") if store == "redis" else "memory",
        extra=_listener_on(listener, held_port),
    )
    result = serve(proc.config)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f"gateway: {listener}.port: cannot listen on 127.0.0.1:{held_port}: address already in "
        "use; stop what holds it (another gateway?) or choose another port\n"
    )
    # Nothing on stdout claims a stop of what never listened.
    assert '"stopped"' not in result.stdout and '"listening"' not in result.stdout


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("10.255.255.1", "no interface of this machine has it"),
        ("no-such-host.invalid", "the host name does not resolve"),
    ],
)
def test_a_host_it_cannot_listen_on_is_named_as_the_host(
    tmp_path: Path, host: str, said: str
) -> None:
    """Not as a port in use ("unknown error -2; stop what holds it")."""
    port = free_port()
    proc = write_config(
        tmp_path, "http://127.0.0.1:1", extra={"listen": {"host": host, "port": port}}
    )
    result = serve(proc.config)
    assert result.returncode == 2
    assert result.stderr == f"gateway: listen.host: cannot listen on {host}:{port}: {said}\n"


@pytest.mark.parametrize("host", ["999.1.1.1", "1.2.3", "a b", "-gw.example.com", "gw..example"])
def test_check_config_refuses_a_host_that_is_no_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    proc = write_config(tmp_path, "http://127.0.0.1:1", extra={"admin": {"host": host}})
    assert main(["check-config", str(proc.config)]) == 2
    assert (
        f"admin.host: must be an IP address or a host name, got {host!r}" in capsys.readouterr().err
    )


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "localhost", "gateway_1", "bücher.example"])
def test_check_config_takes_any_address_or_name_it_can_bind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    """``""`` binds every interface (as asyncio reads it); a container's service name may hold
    an underscore."""
    proc = write_config(tmp_path, "http://127.0.0.1:1", extra={"admin": {"host": host}})
    assert main(["check-config", str(proc.config)]) == 0, capsys.readouterr().err


def test_a_second_gateway_on_the_same_port_is_refused(tmp_path: Path) -> None:
    """A single-process gateway does not share its public port (SO_REUSEPORT is for the workers
    of one supervisor): a second one, an old instance left running, is an error, not two
    gateways silently splitting the traffic."""
    first = write_config(tmp_path, "http://127.0.0.1:1", name="first")
    first.start()
    try:
        second = write_config(
            tmp_path,
            "http://127.0.0.1:1",
            name="second",
            extra={"listen": {"host": "127.0.0.1", "port": first.port}},
        )
        result = serve(second.config)
    finally:
        first.stop()
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"gateway: listen.port: cannot listen on 127.0.0.1:{first.port}"
    )


async def test_the_admin_api_makes_test_keys_like_the_cli(aiohttp_client: Any) -> None:
    settings = make_settings("http://127.0.0.1:1", admin={"token": ADMIN_TOKEN})
    client = await aiohttp_client(create_admin_app(Current(build_runtime(settings))))
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = await client.post("/admin/keys", json={"account": "a", "test": True}, headers=auth)
    created = await response.json()
    assert response.status == 201
    assert created["key"].startswith("sk_test_") and created["environment"] == "sandbox"
    response = await client.post(
        "/admin/keys", json={"account": "a", "test": True, "environment": "live"}, headers=auth
    )
    assert response.status == 400
    assert (await response.json())["details"] == {"field": "test"}


@pytest.mark.parametrize("listener", ["listen", "decision.listen"])
def test_workers_do_not_start_on_a_port_in_use(
    tmp_path: Path, held_port: int, redis_url: str, listener: str
) -> None:
    """With workers, the supervisor checks the public port (and the decision listener's) before
    starting any: one line and exit 2, as a single process, not workers failing and restarted
    forever."""
    proc = write_config(
        tmp_path,
        "http://127.0.0.1:1",
        store=redis_url,
        name=f"workers-{uuid.uuid4().hex[:8]}",
        extra={"workers": 2, **_listener_on(listener, held_port)},
    )
    result = serve(proc.config)
    assert result.returncode == 2
    assert result.stderr == (
        f"gateway: {listener}.port: cannot listen on 127.0.0.1:{held_port}: address already in "
        "use; stop what holds it (another gateway?) or choose another port\n"
    )
    assert "worker exited" not in result.stdout


# `gateway keys rotate` on a key already rotated: the key service's refusal as an operator reads it
# (exit 2, the successor to rotate instead), and nothing written to the shared store.
def test_rotating_a_rotated_key_names_its_successor(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, created, _ = gateway(capsys, "keys", "create", "--config", str(config), "--account", "a")
    old = created["key_id"]
    code, rotated, _ = gateway(
        capsys, "keys", "rotate", "--config", str(config), old, "--grace", "300"
    )
    assert code == 0
    successor = rotated["key_id"]
    _, before, _ = gateway(capsys, "keys", "list", "--config", str(config))
    code, out, err = gateway(capsys, "keys", "rotate", "--config", str(config), old)
    assert (code, out) == (2, None)
    *audit, message = err.splitlines()  # the refusal's audit line first (see above)
    assert [orjson.loads(line)["outcome"] for line in audit] == ["error"]
    assert message == (
        f"gateway: conflict: Key {old} has already been rotated to {successor}; "
        f"rotate {successor} instead."
    )
    _, after, _ = gateway(capsys, "keys", "list", "--config", str(config))
    assert after == before  # no second successor, the first still the one named
    assert [(k["key_id"], k["rotated_to"]) for k in after["keys"]] == [
        (old, successor),
        (successor, None),
    ]
    code, _, _ = gateway(capsys, "keys", "rotate", "--config", str(config), successor)
    assert code == 0


def test_a_store_that_does_not_answer_is_said_with_what_the_client_said(tmp_path: Path) -> None:
    """Every store failure printed the same line (``The credential store is unavailable``):
    a wrong password, a stopped Redis, a missing replica. The line now says why."""
    proc = write_config(tmp_path, "http://127.0.0.1:1", store=f"redis://127.0.0.1:{free_port()}/0")
    code, _, err = run_gateway("keys", "list", "--config", str(proc.config))
    assert code == 2
    # That one line: the store's own warning (a server's log line) was printed, in plain text,
    # before it.
    [last] = err.decode().strip().splitlines()
    assert last.startswith("gateway: service_unavailable: The credential store is unavailable")
    assert "(ConnectionError: Error 111 connecting to 127.0.0.1:" in last, last


def test_init_refuses_a_redis_url_serve_could_not_open(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("store: {url: '${REDIS_URL}'}\n")
    code, _, err = run_gateway("init", "--config", str(config), "--redis-url", "http://nope")
    assert code == 2
    assert err.decode() == "gateway: --redis-url: must be a redis://, rediss:// or unix:// URL\n"
    assert not (tmp_path / "gateway.env").exists()


@pytest.mark.parametrize(
    ("kid", "algorithm", "content", "error"),
    [
        (
            "ed1",
            "RS256",
            None,
            "is not a key for RS256 (it is an Ed25519 key: set algorithm: EdDSA)",
        ),
        ("es1", "EdDSA", None, "is not a key for EdDSA (it is a P-256 key: set algorithm: ES256)"),
        ("rs1", "RS256", "garbage\n", "is not an unencrypted PEM private key"),
    ],
)
def test_check_config_loads_the_signing_keys_as_serve_does(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kid: str,
    algorithm: str,
    content: str | None,
    error: str,
) -> None:
    """``check-config`` said OK to a key ``serve`` then refused (an EdDSA key `gateway init`
    wrote, with ``algorithm`` left at its RS256 default)."""
    import yaml

    from tests.support import signing_key_files

    proc = write_config(tmp_path, "http://127.0.0.1:1")
    document = yaml.safe_load(proc.config.read_text())
    path = signing_key_files()[kid]
    if content is not None:
        path = tmp_path / "bad.pem"
        path.write_text(content)
    document["tokens"] = {
        "signing_keys": [{"kid": "k", "file": str(path), "algorithm": algorithm}],
        "active_kid": "k",
    }
    proc.config.write_text(yaml.safe_dump(document))
    assert main(["check-config", str(proc.config)]) == 2
    err = capsys.readouterr().err
    assert "tokens.signing_keys[0].file: " in err and error in err, err
