"""The sample alerts shipped in k8s/prometheusrule.yaml: promtool accepts them as rules, each one
fires on the series it is about (``promtool test rules``, a unit test per alert), and every
metric they read is one a real gateway exports from its start (a counter that appeared only at
its first increment would never show Prometheus an increase)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from gateway.observe.metrics import Metrics
from tests.support import ROOT, require_binary

RULES = ROOT / "k8s/prometheusrule.yaml"

# One case per alert: series over time (promtool's notation), the time to look, and the labels
# the alert fires with; and a quiet series that must not set it off.
CASES: dict[str, dict[str, Any]] = {
    "GatewayStoreDataLost": {
        "series": [
            ('gateway_store_alarms_total{alarm="data_lost"}', "0 0 0 1x60"),
            ('gateway_store_alarms_total{alarm="master_key_mismatch"}', "0x63"),
        ],
        "at": "50m",  # 47 minutes after the loss: it stays an hour
        "labels": {"severity": "critical"},
    },
    "GatewayMasterKeyMismatch": {
        "series": [("gateway_store_master_key_mismatch", "0 0 1x10")],
        "at": "5m",
        "labels": {"severity": "critical"},
    },
    "GatewayStoreMayEvict": {
        "series": [("gateway_store_evicting", "0 0 1x20")],
        "at": "18m",
        "labels": {"severity": "warning"},
    },
    "GatewayStoreUnavailable": {
        "series": [('gateway_store_errors_total{operation="key_by_digest"}', "0+60x10")],
        "at": "8m",
        "labels": {},
    },
    "GatewayUpstreamErrors": {
        "series": [('gateway_upstream_errors_total{upstream="live",error="timeout"}', "0+600x15")],
        "at": "12m",
        "labels": {"upstream": "live"},
    },
    "GatewayAuthFailureSpike": {  # 100 refusals a minute where yesterday saw 1
        "series": [
            (
                'gateway_auth_decisions_total{credential="api_key",outcome="deny",'
                'reason="invalid_token"}',
                "0+1x1440 1540+100x30",
            )
        ],
        "at": "1460m",
        "labels": {},
    },
    "GatewayConfigReloadFailed": {
        "series": [('gateway_config_reloads_total{result="error"}', "0 0 1 1 1")],
        "at": "3m",
        "labels": {"result": "error"},
    },
    "GatewayLatencyHigh": {
        "series": [
            ('gateway_request_duration_seconds_bucket{le="0.5"}', "0+10x20"),
            ('gateway_request_duration_seconds_bucket{le="1"}', "0+10x20"),
            ('gateway_request_duration_seconds_bucket{le="+Inf"}', "0+100x20"),
        ],
        "at": "18m",
        "labels": {},
    },
}


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert document["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = document["spec"]["groups"]
    return groups


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", "prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


def test_the_shipped_alerts_are_valid_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rules()}))
    check = promtool("check", "rules", str(path))
    assert check.returncode == 0, check.stdout + check.stderr


def test_each_alert_fires_on_what_it_is_about_and_not_on_quiet_series(tmp_path: Path) -> None:
    names = {rule["alert"] for group in rules() for rule in group["rules"]}
    assert set(CASES) == names  # a new alert gets a case here
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules()}))
    rule_annotations = {
        rule["alert"]: rule["annotations"] for group in rules() for rule in group["rules"]
    }
    summaries = {
        rule["alert"]: rule["annotations"]["summary"] for g in rules() for rule in g["rules"]
    }
    tests = []
    for name, case in CASES.items():
        summary = summaries[name]
        for label, value in case["labels"].items():  # the template as Prometheus fills it
            summary = summary.replace(f"{{{{ $labels.{label} }}}}", value)
        annotations = {**rule_annotations[name], "summary": summary}
        fired = {"exp_labels": case["labels"], "exp_annotations": annotations}
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case["series"]],
                "alert_rule_test": [
                    {"eval_time": case["at"], "alertname": name, "exp_alerts": [fired]}
                ],
            }
        )
        quiet = [{"series": s, "values": "0x1500"} for s, _ in case["series"]]
        tests.append(
            {
                "interval": "1m",
                "input_series": quiet,
                "alert_rule_test": [{"eval_time": case["at"], "alertname": name, "exp_alerts": []}],
            }
        )
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests})
    )
    run = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert run.returncode == 0, run.stdout + run.stderr


def test_what_an_alert_on_one_event_reads_is_exported_at_zero_from_the_start() -> None:
    """``increase()`` of a series that appears at its first event is 0: Prometheus sees no
    increase and the alert never fires for that event (so it was for a first failed reload)."""
    exported = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in Metrics().registry.collect()
        for sample in family.samples
    }
    one_event = [
        rule for group in rules() for rule in group["rules"] if "increase(" in rule["expr"]
    ]
    assert {rule["alert"] for rule in one_event} >= {
        "GatewayStoreDataLost",
        "GatewayConfigReloadFailed",
    }
    for name, labels in [
        ("gateway_store_alarms_total", {"alarm": "data_lost"}),
        ("gateway_store_alarms_total", {"alarm": "master_key_mismatch"}),
        ("gateway_config_reloads_total", {"result": "error"}),
    ]:
        assert any(name in rule["expr"] for rule in one_event), name
        assert (name, tuple(sorted(labels.items()))) in exported, (name, labels)
    for state in ("gateway_store_master_key_mismatch", "gateway_store_evicting"):
        assert (state, ()) in exported  # a state, at 0 until it is
