"""``gateway tokens member``: the signing key from the environment, not the process list."""

from __future__ import annotations

import os
import subprocess

import jwt
import pytest

from tests.support import gateway_command

KEY = "sk_test_" + "a" * 43
KEY_ID = "key_0123456789abcdef01234567"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gateway_command("tokens", "member", *args),
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("how", ["env", "argument"])
def test_the_key_signs_from_the_environment_or_an_argument(how: str) -> None:
    env = {**os.environ, "GATEWAY_API_KEY": KEY} if how == "env" else None
    extra = () if how == "env" else ("--key", KEY)
    result = run(*extra, "--key-id", KEY_ID, "--sub", "usr_1", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), KEY.encode(), algorithms=["HS256"])
    assert claims["sub"] == "usr_1"
    assert jwt.get_unverified_header(result.stdout.strip())["kid"] == KEY_ID


def test_without_a_key_it_says_where_to_put_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_API_KEY"}
    result = run("--key-id", KEY_ID, "--sub", "usr_1", env=env)
    assert result.returncode == 2
    assert "set GATEWAY_API_KEY" in result.stderr


def test_a_malformed_key_in_the_environment_is_named_without_being_echoed() -> None:
    env = {**os.environ, "GATEWAY_API_KEY": "not-a-key-at-all"}
    result = run("--key-id", KEY_ID, "--sub", "usr_1", env=env)
    assert result.returncode == 2
    assert "GATEWAY_API_KEY must be an API key" in result.stderr
    assert "not-a-key-at-all" not in result.stderr


@pytest.mark.parametrize(
    ("scopes", "signed"),
    [
        ("sleep:read,scores:read", ["sleep:read", "scores:read"]),
        ("a b", None),  # what the gateway refuses (401 claims) is not signed
        ('sleep:read,"x', None),
        ("back\\slash", None),
        ("x" * 129, None),
        (",".join(f"s{i}" for i in range(65)), None),
    ],
)
def test_scopes_the_gateway_would_refuse_are_not_signed(
    scopes: str, signed: list[str] | None
) -> None:
    env = {**os.environ, "GATEWAY_API_KEY": KEY}
    result = run("--key-id", KEY_ID, "--sub", "usr_1", "--scopes", scopes, env=env)
    if signed is None:
        assert (result.returncode, result.stdout) == (2, "")
        assert "--scopes must be at most 64 comma-separated scopes" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), KEY.encode(), algorithms=["HS256"])
    assert claims["scopes"] == signed
