"""``gateway keys rotate`` on a key already rotated: the key service's refusal, as an operator
reads it (exit 2, the successor to rotate instead), and nothing written to the shared store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import main
from tests.support import write_config


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
    assert err == (
        f"gateway: conflict: Key {old} has already been rotated to {successor}; "
        f"rotate {successor} instead.\n"
    )
    _, after, _ = gateway(capsys, "keys", "list", "--config", str(config))
    assert after == before  # no second successor, the first still the one named
    assert [(k["key_id"], k["rotated_to"]) for k in after["keys"]] == [
        (old, successor),
        (successor, None),
    ]
    code, _, _ = gateway(capsys, "keys", "rotate", "--config", str(config), successor)
    assert code == 0
