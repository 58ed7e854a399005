import pytest

from ferry.analysis import Result, check_queries, latency_p99_query, success_rate_query, verdict
from ferry.rollout_spec import Analysis

V = lambda x: Result(kind="value", value=x)  # noqa: E731
NO = Result(kind="no-data")
ERR = Result(kind="error", error="boom")


def mk(**kw: object) -> Analysis:
    data = {"interval": "30s", "count": 3, "failure-limit": 2, "checks": [{"success-rate": {"min": 99}}], **kw}
    return Analysis.model_validate(data)


def run(a: Analysis, *rs: Result) -> str:
    return verdict(a, check_queries(a, "prod", "shop"), [[r] for r in rs]).outcome


def test_passes_after_count() -> None:
    a = mk()
    assert run(a, V(100), V(99.5)) == "continue"
    assert run(a, V(100), V(99.5), V(99)) == "passed"


def test_fails_at_failure_limit_and_records() -> None:
    a = mk()
    assert run(a, V(90), V(100)) == "continue"
    v = verdict(a, check_queries(a, "prod", "shop"), [[V(90)], [V(100)], [V(80)]])
    assert v.outcome == "failed" and [(f.metric, f.value, f.threshold) for f in v.failures] == [
        ("success-rate", 90, ">= 99"),
        ("success-rate", 80, ">= 99"),
    ]


def test_no_data_policies_and_error() -> None:
    assert run(mk(), NO, NO) == "failed"
    assert run(mk(**{"no-data": "pass"}), NO, NO, NO) == "passed"
    assert run(mk(**{"no-data": "pass"}), ERR, ERR) == "failed"


def test_latency_in_ms() -> None:
    a = mk(checks=[{"latency-p99": {"max": "500ms"}}], **{"failure-limit": 1})
    assert run(a, V(0.4)) == "continue"
    assert run(a, V(0.6)) == "failed"


def test_label_injection_refused() -> None:
    with pytest.raises(ValueError, match="not a DNS label"):
        success_rate_query('prod"}) or up{', "shop", 60)
    assert 'code!~"5.."' in success_rate_query("prod", "shop", 60)


def test_queries_select_the_canary_by_namespace_and_deployment() -> None:
    sr = success_rate_query("prod", "shop", 60)
    assert sr == (
        '100 * sum(rate(ferry_simulated_requests_total{namespace="prod",deployment="shop",code!~"5.."}[60s]))'
        ' / sum(rate(ferry_simulated_requests_total{namespace="prod",deployment="shop"}[60s]))'
    )
    p99 = latency_p99_query("prod", "shop", 30)
    assert p99 == (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(ferry_simulated_request_duration_seconds_bucket{namespace="prod",deployment="shop"}[30s])))'
    )
    assert "service=" not in sr + p99  # the primary's Service carries the canary's requests too in replica-ratio mode
    a = mk(checks=[{"success-rate": {"min": 99}}, {"latency-p99": {"max": "500ms"}}])
    assert all('deployment="shop"' in q.promql for q in check_queries(a, "prod", "shop"))


def test_a_deployment_name_that_is_not_a_dns_label_is_refused() -> None:
    with pytest.raises(ValueError, match="deployment"):
        latency_p99_query("prod", 'shop",deployment=~".*', 60)
