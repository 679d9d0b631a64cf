"""Every kind of credential goes through; no key or token appears in any log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import jwt
import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import Gateway, GatewayFactory, make_settings
from tests.functional.test_team_sessions import AUDIENCE, ISSUER, IdentityProvider
from tests.observe.test_lines import ACCESS_FIELDS, AUDIT_FIELDS, EXCHANGE
from tests.support import base_url


async def test_no_secret_in_any_log_line(
    make_gateway: GatewayFactory,
    aiohttp_server: Any,
    upstream: tuple[Any, TestServer],
    log_lines: io.StringIO,
) -> None:
    idp = IdentityProvider()
    idp_server = await aiohttp_server(idp.app())
    url = base_url(upstream[1])
    gw = await make_gateway(
        settings=make_settings(
            url,
            identity_providers=[
                {
                    "name": "corp",
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_url": str(idp_server.make_url("/.well-known/jwks.json")),
                }
            ],
        )
    )
    key, record = await gw.runtime.keys.create("acc_1", "live")
    await gw.runtime.store.set_relationship("acc_1", "usr_a", "usr_c", True)
    secrets: list[str] = [key]

    async def call(method: str, path: str, token: str, **kw: Any) -> Any:
        response = await gw.client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kw
        )
        assert response.status < 500
        return await response.json() if response.content_type == "application/json" else None

    user = (await call("POST", "/v1/auth/user-token", key, json={"user_id": "usr_a"}))["token"]
    mobile = (await call("POST", "/v1/auth/mobile-token", key, json={"user_id": "usr_a"}))["token"]
    session = (await call("POST", "/v1/sdk/initialize", mobile))["session_token"]
    now = int(gw.clock.now())
    member = jwt.encode(
        {"sub": "usr_a", "iat": now, "exp": now + 60, "scopes": []},
        key.encode(),
        algorithm="HS256",
        headers={"kid": record.key_id},
    )
    caregiver = jwt.encode(
        {"sub": "usr_a", "act": "usr_c", "iat": now, "exp": now + 60, "scopes": []},
        key.encode(),
        algorithm="HS256",
        headers={"kid": record.key_id},
    )
    team = idp.token(now=now)
    secrets += [user, mobile, session, member, caregiver, team]
    for token in (key, user, member, caregiver, team):
        await call("GET", "/v1/users/usr_a/scores", token)
        await call("GET", "/v1/users/usr_b/scores", token)  # refused
        await call("GET", "/v1/users/usr_a/scores", token + "x")  # broken
    await call("GET", "/v1/sdk/config", session)
    await call("POST", "/v1/sdk/initialize", mobile)  # used
    text = log_lines.getvalue()
    lines = [orjson.loads(line) for line in text.splitlines()]
    kinds = {line.get("credential") for line in lines if line["logger"] == "gateway.access"}
    assert {
        "api_key",
        "user_token",
        "mobile_token",
        "sdk_session",
        "member_token",
        "team_session",
    } <= kinds
    audit = [line for line in lines if line["logger"] == "gateway.audit"]
    assert any(line["actor"] == "usr_c" and line["subject"] == "usr_a" for line in audit)
    for secret in secrets:
        for part in {secret, secret[-24:], *secret.split(".")[2:]}:
            assert part not in text


async def test_a_method_the_gateway_does_not_know_is_logged_as_other(
    gateway: Gateway, log_lines: io.StringIO
) -> None:
    """A client chooses its method: one outside the known set reaches the access and audit
    lines as OTHER, never as sent (aiohttp's pure-Python parser takes any token as a method, a
    secret included: tests/security/test_edge_hygiene.py sends one)."""
    key, _ = await gateway.runtime.keys.create("acc_1", "live")
    response = await gateway.client.request(
        "PURGE", "/v1/users/usr_a/scores", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status == 403
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    built = [line for line in lines if line["logger"] in ("gateway.access", "gateway.audit")]
    assert sorted(line["logger"] for line in built) == ["gateway.access", "gateway.audit"]
    assert [line["method"] for line in built] == ["OTHER", "OTHER"]


@pytest.fixture
def configured() -> Iterator[Any]:
    """``logs.configure`` as ``gateway serve`` runs it, undone afterwards."""
    import sys
    import threading
    import warnings

    from gateway.observe import logs

    gateway, root = logging.getLogger("gateway"), logging.getLogger()
    saved = (gateway.handlers[:], gateway.level, gateway.propagate)
    saved_root = (root.handlers[:], root.level)
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)

    def start(level: str, stream: Any = None) -> tuple[Any, Any]:
        stream = io.StringIO() if stream is None else stream
        return stream, logs.configure(level, stream)

    with warnings.catch_warnings():
        yield start
    logs._LINES.queue = None
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
    gateway.handlers[:], gateway.level, gateway.propagate = saved
    root.handlers[:], root.level = saved_root


@pytest.mark.parametrize("level, expected", [("INFO", 2), ("WARNING", 0)])
def test_access_and_audit_lines_are_built_off_the_request_path(
    configured: Any, level: str, expected: int
) -> None:
    from gateway.observe import logs

    stream, listener = configured(level)
    logs.access(request_id="r1", route="users", status=200, credential="api_key")
    logs.audit(request_id="r1", route="users", outcome="allow", account="acc_1")
    logs.event("reloaded", logging.WARNING, result="ok")
    listener.stop()  # drains the queue
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    built = [line for line in lines if line["logger"] in ("gateway.access", "gateway.audit")]
    assert len(built) == expected
    if expected:
        access, audit = built
        assert access["msg"] == "access" and access["status"] == 200 and access["level"] == "info"
        assert audit["msg"] == "audit" and audit["account"] == "acc_1"
        assert access["ts"].endswith("Z")
    assert lines[-1]["msg"] == "reloaded" and lines[-1]["result"] == "ok"


async def test_lines_from_the_event_loop_are_written_in_batches_and_on_stop(
    configured: Any,
) -> None:
    import asyncio

    from gateway.observe import logs

    stream, listener = configured("INFO")
    for i in range(3):
        logs.access(request_id=f"r{i}", status=200)
    assert len(logs._LINES.batch) == 3  # held on the loop, not yet handed to the writer
    await asyncio.sleep(logs._Lines.FLUSH_SECONDS * 4)
    assert logs._LINES.batch == []
    logs.audit(request_id="last", outcome="allow")
    listener.stop()  # nothing pending is lost
    ids = [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == ["r0", "r1", "r2", "last"]


async def test_a_large_batch_is_written_whole_and_in_order(configured: Any) -> None:
    """The writer formats a batch a chunk at a time (the GIL is let go between writes); every
    line still arrives, in order, each one whole."""
    from gateway.observe import logs

    stream, listener = configured("INFO")
    count = logs._Listener.CHUNK * 5 + 3
    for i in range(count):
        logs.access(request_id=f"r{i}", status=200)
    listener.stop()
    ids = [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
    assert ids == [f"r{i}" for i in range(count)]


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "latin-1"])
def test_lines_reach_a_byte_stream_in_order_whatever_its_text_encoding(
    configured: Any, encoding: str
) -> None:
    """Under a UTF-8 text stream (``sys.stdout``) the writer puts access and audit lines on
    the byte stream beneath as orjson made them; under any other encoding through the text
    layer. Either way each line is whole, in the order logged, records written through the
    text layer included."""
    from gateway.observe import logs

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding=encoding, write_through=False)
    _, listener = configured("INFO", stream)
    logs.event("first")
    logs.access(request_id="r1", route="caf\u00e9")
    logs.exchange(1700000000.5, (*EXCHANGE[:1], "caf\u00e9", *EXCHANGE[2:]), True)
    listener.stop()  # the batch goes to the writer: written before what follows
    logs.event("last")
    stream.flush()
    lines = [orjson.loads(line) for line in raw.getvalue().decode(encoding).splitlines()]
    assert [line["msg"] for line in lines] == ["first", "access", "access", "audit", "last"]
    assert [line.get("route") for line in lines[1:4]] == ["caf\u00e9"] * 3


def test_every_logger_writes_one_redacted_json_line(configured: Any) -> None:
    """aiohttp's and asyncio's loggers, warnings, and exceptions nobody caught in a thread all
    come out as JSON, with credentials in their messages and tracebacks redacted."""
    import threading
    import warnings

    from gateway.keys.material import new_key

    key = new_key("sk_live_")
    stream, listener = configured("INFO")
    logging.getLogger("aiohttp.server").error("Error handling request: b'Bearer %s'", key)
    try:
        raise ValueError(f"Invalid HTTP header: b'Authorization : Bearer {key}'")
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    warnings.simplefilter("default")  # pytest makes warnings errors; here one is logged
    warnings.warn(f"unclosed thing holding {key}", UserWarning, stacklevel=1)

    def fail() -> None:
        raise RuntimeError(f"boom {key}")

    thread = threading.Thread(target=fail, name="worker-1")
    thread.start()
    thread.join()
    listener.stop()
    text = stream.getvalue()
    assert key[8:] not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    by_logger = {line["logger"]: line for line in lines}
    assert set(by_logger) >= {"aiohttp.server", "asyncio", "py.warnings", "gateway.uncaught"}
    assert by_logger["asyncio"]["exc_type"] == "ValueError"
    assert "Traceback" in by_logger["asyncio"]["traceback"]
    assert by_logger["gateway.uncaught"]["thread"] == "worker-1"


@pytest.mark.parametrize("level, audited, expected", [
    ("INFO", True, ["access", "audit"]),
    ("INFO", False, ["access"]),
    ("WARNING", True, []),
])  # fmt: skip
def test_a_requests_lines_are_batched_and_written_in_order(
    configured: Any, level: str, audited: bool, expected: list[str]
) -> None:
    from gateway.observe import logs

    stream, listener = configured(level)
    logs.exchange(1700000000.5, EXCHANGE, audited)
    logs.access(request_id="after", status=200)
    listener.stop()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    built = [line for line in lines if line["logger"] in ("gateway.access", "gateway.audit")]
    assert [line["msg"] for line in built] == [*expected, *(["access"] if level == "INFO" else [])]
    if expected:
        assert {k: v for k, v in built[0].items() if k not in ("ts", "level", "logger", "msg")} == (
            ACCESS_FIELDS
        )
        assert built[0]["ts"] == "2023-11-14T22:13:20.500Z"
    if audited and expected:
        assert {k: v for k, v in built[1].items() if k not in ("ts", "level", "logger", "msg")} == (
            AUDIT_FIELDS
        )


def test_a_requests_lines_go_through_logging_before_configure(log_lines: io.StringIO) -> None:
    from gateway.observe import logs

    logs.exchange(1700000000.5, EXCHANGE, True)
    lines = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["access", "audit"]
    strip = ("ts", "level", "logger", "msg")
    assert {k: v for k, v in lines[0].items() if k not in strip} == ACCESS_FIELDS
    assert {k: v for k, v in lines[1].items() if k not in strip} == AUDIT_FIELDS


def test_an_entry_that_cannot_be_written_is_replaced_by_a_line_saying_so(
    configured: Any,
) -> None:
    """One bad entry in a batch (here fields that cannot be a key) costs its own lines only:
    the writer says so in their place, writes the rest, and goes on with later batches."""
    from gateway.observe import logs

    stream, listener = configured("INFO")
    bad = (*EXCHANGE[:1], ["not", "hashable"], *EXCHANGE[2:])
    logs.exchange(1700000000.5, EXCHANGE, True)
    logs.exchange(1700000000.6, bad, True)  # type: ignore[arg-type]
    logs.exchange(1700000000.7, EXCHANGE, False)
    logs._LINES.flush()
    logs.exchange(1700000000.8, EXCHANGE, False)  # a later batch
    listener.stop()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["logger"], line["msg"]) for line in lines] == [
        ("gateway.access", "access"),
        ("gateway.audit", "audit"),
        ("gateway.logging", "a log record could not be written"),
        ("gateway.access", "access"),
        ("gateway.access", "access"),
    ]
    assert lines[2]["exc_type"] == "TypeError"


def test_lines_on_the_process_stdout_are_written_as_bytes_in_order() -> None:
    """On the process's own stdout (``gateway serve``'s), the writer writes its UTF-8 bytes
    beneath the text layer: text printed before them, records and lines all arrive in the
    order written, each whole."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from gateway.observe import logs\n"
        "listener = logs.configure('INFO')\n"
        "assert logs._utf8_bytes_under(sys.stdout) is sys.stdout.buffer\n"
        'print(\'{"msg": "printed"}\')\n'
        "logs.event('first')\n"
        "logs.exchange(1.7e9, ('r1', 'caf\\u00e9', *" + repr(EXCHANGE[2:]) + "), True)\n"
        "listener.stop()\n"
        "logs.event('last')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=True,
        env={"PYTHONIOENCODING": "utf-8", "PATH": ""},
    ).stdout  # fmt: skip
    lines = [orjson.loads(line) for line in out.decode().splitlines()]
    assert [line["msg"] for line in lines] == ["printed", "first", "access", "audit", "last"]
    assert lines[2]["route"] == "caf\u00e9"
