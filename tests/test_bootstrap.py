"""``gateway init`` and the shipped environment example: every variable a shipped config uses is
named and explained, init creates only what is missing and never prints a secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.bootstrap import DESCRIPTIONS, render_env, variables
from gateway.cli import main
from gateway.settings import load_settings
from tests.support import ROOT


def shipped(name: str) -> object:
    return yaml.safe_load((ROOT / name).read_text())


def test_the_example_is_what_init_writes_without_values() -> None:
    example = (ROOT / "config/gateway.env.example").read_text()
    assert example == render_env("gateway.yaml", shipped("config/gateway.yaml"), None)
    names = set(re.findall(r"^(?:# )?([A-Z_]+)=", example, flags=re.M))
    assert names == {v.name for v in variables(shipped("config/gateway.yaml"))}


def test_every_variable_of_the_shipped_configs_is_explained() -> None:
    for config in ("config/gateway.yaml", "k8s/base/gateway.yaml"):
        for var in variables(shipped(config)):
            assert var.name in DESCRIPTIONS, (config, var.name)
    # The Kubernetes Secret provides every required variable of the Kubernetes config.
    secret = next(yaml.safe_load_all((ROOT / "k8s/base/secret.yaml").read_text()))
    required = {v.name for v in variables(shipped("k8s/base/gateway.yaml")) if v.default is None}
    assert required == set(secret["stringData"])


def test_init_creates_what_is_missing_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store": "${REDIS_URL}",
                "master_key_file": "secrets/master.key",
                "admin": {"token": "${GATEWAY_ADMIN_TOKEN}"},
                "upstreams": {"live": {"url": "${BACKEND}"}},
                "tokens": {
                    "signing_keys": [
                        {"kid": "a", "file": "keys/a.pem"},
                        {"kid": "b", "file": "keys/b.pem", "algorithm": "ES256"},
                        {"kid": "c", "file": "keys/c.pem", "algorithm": "EdDSA"},
                    ]
                },
            }
        )
    )
    assert main(["init", "--config", str(config), "--redis-url", "redis://db:6379/1"]) == 0
    out = capsys.readouterr().out
    for path in ("keys/a.pem", "keys/b.pem", "keys/c.pem", "secrets/master.key", "gateway.env"):
        assert f"created {tmp_path / path}" in out
    env = (tmp_path / "gateway.env").read_text()
    assert "REDIS_URL=redis://db:6379/1" in env
    assert "BACKEND=\n" in env and "Used by upstreams.live.url." in env
    assert f"fill in BACKEND in {tmp_path / 'gateway.env'}" in out
    token = re.search(r"^GATEWAY_ADMIN_TOKEN=(.+)$", env, flags=re.M)
    assert token is not None and token.group(1) not in out
    master = (tmp_path / "secrets/master.key").read_text().strip()
    assert master not in out
    # The files it wrote make a valid config once the environment is loaded.
    monkeypatch.setenv("REDIS_URL", "redis://db:6379/1")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", token.group(1))
    monkeypatch.setenv("BACKEND", "http://127.0.0.1:8000")
    settings = load_settings(config)
    assert [k.algorithm for k in settings.tokens.signing_keys] == ["RS256", "ES256", "EdDSA"]
    assert len(settings.master_key) == 32
    # A second run keeps everything.
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["init", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("kept    ") == 5
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_init_names_an_unreadable_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("written", ["file: ${KEYDIR/signing.pem", "token: ${GATEWAY_ADMIN_TOKEN"])
def test_init_refuses_a_broken_placeholder_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str
) -> None:
    field, value = written.split(": ", 1)
    section = (
        f"tokens:\n  signing_keys:\n    - {{kid: k1, algorithm: RS256, file: '{value}'}}\n"
        if field == "file"
        else f"admin:\n  token: '{value}'\n"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(section + "upstreams: {live: {url: 'http://127.0.0.1:1'}}\n")
    assert main(["init", "--config", str(config)]) == 2
    assert "is not a placeholder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml"]


def test_a_missing_variable_points_at_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = tmp_path / "gateway.yaml"
    config.write_text("store: ${REDIS_URL}\nupstreams: {live: {url: 'http://127.0.0.1:1'}}\n")
    assert main(["check-config", str(config)]) == 2
    assert capsys.readouterr().err == (
        "gateway: store: environment variable REDIS_URL is not set (`gateway init` writes an "
        "environment file with every variable the config uses; load it first)\n"
    )
