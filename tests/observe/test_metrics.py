"""Request metrics: bound label values, children bound once per label set."""

from __future__ import annotations

from prometheus_client import generate_latest

from gateway.observe.metrics import Metrics


def test_invented_methods_fold_to_other_and_do_not_grow_the_label_set() -> None:
    metrics = Metrics()
    for i in range(500):
        metrics.request_done("users", f"X{i}", "api_key", 200, 0.001)
    metrics.request_done("users", "GET", "api_key", 200, 0.001)
    text = generate_latest(metrics.registry).decode()
    assert (
        'gateway_requests_total{credential="api_key",method="OTHER",route="users",status="200"}'
        " 500.0" in text
    )
    assert 'method="GET"' in text and 'method="X1"' not in text
    assert len(metrics._requests) == 2  # SECURITY: bounded by the folded label values


def test_auth_decisions_and_upstream_durations_are_counted_per_label_set() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.auth_decision("user_token", "deny", "token_expired")
    metrics.upstream_done("live", 0.002)
    metrics.upstream_done("live", 0.004)
    text = generate_latest(metrics.registry).decode()
    assert (
        'gateway_auth_decisions_total{credential="user_token",outcome="deny",'
        'reason="token_expired"} 3.0' in text
    )
    assert 'gateway_upstream_duration_seconds_count{upstream="live"} 2.0' in text
