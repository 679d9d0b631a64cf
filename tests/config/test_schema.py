"""The JSON Schema: what `gateway config schema` prints, shipped for editors, and true to the
loader (what the loader accepts, the schema accepts; typos and wrong types it refuses)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.authz.policy_file import DEFAULT_POLICY
from gateway.settings import config_schema, policy_schema
from tests.support import gateway_command

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize(
    ("args", "shipped"),
    [((), "config/gateway.schema.json"), (("--policy",), "config/policy.schema.json")],
)
def test_the_shipped_schema_is_what_the_command_prints(args: tuple[str, ...], shipped: str) -> None:
    printed = subprocess.run(
        gateway_command("config", "schema", *args),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert (ROOT / shipped).read_text(encoding="utf-8") == printed, (
        f"{shipped} is stale: gateway config schema {' '.join(args)} > {shipped}"
    )


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_files_satisfy_the_schemas() -> None:
    config = validator(config_schema())
    config.validate(yaml.safe_load((ROOT / "config/gateway.yaml").read_text()))
    policy = validator(policy_schema())
    for path in (ROOT / "config/policy.yaml", DEFAULT_POLICY):
        policy.validate(yaml.safe_load(path.read_text()))


FULL: dict[str, Any] = {
    "listen": {"host": "0.0.0.0", "port": "${PORT:-8080}"},
    "admin": {"port": 9090, "token": "${ADMIN_TOKEN}"},
    "workers": 2,
    "store": {"url": "redis://127.0.0.1:6379/0", "timeout": "500ms", "prefix": "gw:"},
    "master_key": "${GATEWAY_MASTER_KEY}",
    "upstreams": {"live": {"url": "${LIVE_URL}", "read_timeout": "30s", "max_in_flight": 64}},
    "environments": {"live": "live"},
    "limits": {"max_body_bytes": 1024},
    "headers": {"user": "X-User", "forward_authorization": False},
    "tokens": {"signing_keys": [{"kid": "k1", "file": "k1.pem"}], "user_token_ttl": "30m"},
    "api_keys": {"cache_ttl": 0.5},
    "relationships": {"provider": "http", "url_template": "https://b/{subject}/{actor}"},
    "identity_providers": [
        {"name": "corp", "issuer": "i", "audience": "a", "jwks_url": "https://idp/jwks"}
    ],
    "policy": {"routes": [{"id": "a", "methods": ["GET"], "paths": ["/x"], "allow": ["api_key"]}]},
    "cors": [{"origins": ["https://app.example.com"], "max_age": 60}],
    "rate_limits": {"rules": [{"group": "default", "limit": 10, "period": "1m"}]},
    "abuse": {"enabled": True, "trusted_proxies": ["10.0.0.0/8"]},
    "decision": {"enabled": True, "proxy": "nginx"},
    "log_level": "DEBUG",
}


def test_every_section_and_env_placeholders_are_accepted() -> None:
    validator(config_schema()).validate(FULL)


@pytest.mark.parametrize(
    "change",
    [
        {"colour": "blue"},  # an unknown field
        {"listen": {"prot": 8080}},  # a typo
        {"listen": {"port": 70000}},  # out of bounds
        {"workers": "many"},  # a string that is no placeholder
        {"log_level": "TRACE"},
        {"upstreams": {}},
        {"upstreams": {"live": {"url": "ftp://x"}}},
        {"api_keys": {"cache_ttl": "soon"}},
        {"policy": {"routes": [{"id": "a", "methods": ["GET"], "paths": ["x"], "allow": ["k"]}]}},
        {"abuse": {"trusted_proxies": "10.0.0.0/8"}},
    ],
)
def test_what_the_loader_refuses_the_schema_refuses(change: dict[str, Any]) -> None:
    assert not validator(config_schema()).is_valid({**FULL, **change})
