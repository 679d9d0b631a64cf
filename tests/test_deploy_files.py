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
