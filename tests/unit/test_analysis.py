import pytest

from ferry.analysis import Result, check_queries, success_rate_query, verdict
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
