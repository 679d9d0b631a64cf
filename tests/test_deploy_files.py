"""The deployment files stay in step with the package."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_k8s_policy_is_the_shipped_default() -> None:
    shipped = (ROOT / "gateway/defaults/policy.yaml").read_text()
    assert (ROOT / "k8s/base/policy.yaml").read_text() == shipped
    assert (ROOT / "config/policy.yaml").read_text() == shipped


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text
    assert text.count("FROM ") == 2  # multi-stage: no build tools in the final image


def test_the_healthcheck_asks_the_admin_port_the_shipped_config_listens_on() -> None:
    """The shipped config takes its admin port from GATEWAY_ADMIN_PORT; a healthcheck fixed to
    9090 reported a container on another port unhealthy."""
    import re

    config = (ROOT / "config/gateway.yaml").read_text()
    assert "port: ${GATEWAY_ADMIN_PORT:-9090}" in config
    command = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (.*)", (ROOT / "Dockerfile").read_text())
    assert command is not None
    assert "os.environ.get('GATEWAY_ADMIN_PORT', '9090')" in command.group(1)
