"""docs/configuration.md's field table is generated from the models, and stale is a failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.doc import END, START, main, replace_table, rows
from gateway.config.durations import format_duration
from gateway.settings import MODEL

DOC = Path(__file__).resolve().parent.parent.parent / "docs" / "configuration.md"
WRITE = f"{sys.executable} -m gateway.settings --write docs/configuration.md"


def test_the_table_in_the_docs_is_the_generated_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert replace_table(text, MODEL) == text, f"the field table is stale: run {WRITE}"


def test_every_field_is_described_and_typed() -> None:
    found = list(rows(MODEL))
    assert len(found) > 100
    for row in found:
        assert row.description, f"{row.section} {row.field} has no description"
        assert row.type and "<" not in row.type, f"{row.section} {row.field}: {row.type}"
    paths = {f"{row.section}.{row.field}" for row in found}
    assert {
        "listen.port",
        "upstreams.NAME.url",
        "tokens.signing_keys[].file",
        "policy.routes[].allow",
        "cors[].origins",
        "rate_limits.rules[].period",
        "abuse.trusted_proxies",
        # declared by the credential kinds' own modules (gateway/authn/)
        "member_tokens.max_lifetime",
        "identity_providers[].jwks_url",
        "introspection.token_pattern",
    } <= paths


def test_check_fails_on_a_stale_table_and_write_repairs_it(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# Config\n\n{START}\n| old | table |\n{END}\n\nprose stays\n")
    assert main(["--check", str(doc)], model=MODEL) == 1
    assert main(["--write", str(doc)], model=MODEL) == 0
    assert main(["--check", str(doc)], model=MODEL) == 0
    text = doc.read_text()
    assert "| old | table |" not in text and "`upstreams.NAME` | `url`" in text
    assert text.startswith("# Config\n") and text.endswith("prose stays\n")


def test_the_module_runs_as_documented() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.settings", "--check", str(DOC)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(7776000, "90d"), (86400, "1d"), (3600, "1h"), (90, "90s"), (0.5, "500ms"), (0, "0s")],
)
def test_durations_are_shown_in_their_largest_whole_unit(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
