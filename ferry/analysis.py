"""Pure analysis rules (issue 29): the built-in checks' PromQL, and the verdict over per-interval results.

Built-in checks follow Flagger's request-success-rate (percent of non-5xx) and request-duration (p99, compared in ms),
over the simulated traffic generator's metrics (devstack/simulated_traffic.py), selecting the canary by its namespace
and Deployment (label `deployment`: W, not W-primary, whichever route or Service carried the request). Label values
are DNS labels only, so no input can inject PromQL.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from ferry.model import Message
from ferry.rollout_spec import Analysis, Check

REQUESTS = "ferry_simulated_requests_total"
DURATION_BUCKET = "ferry_simulated_request_duration_seconds_bucket"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
MAX_FAILURES_RECORDED = 16

Outcome = Literal["continue", "passed", "failed"]


def _label(value: str, what: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(f"{what} {value[:80]!r} is not a DNS label: refused in a query")
    return value


def _window(seconds: float) -> str:
    return f"{max(1, int(seconds))}s"


def _selector(namespace: str, deployment: str) -> str:
    """The canary's series: its namespace and its Deployment (the generator labels every request with the
    Deployment that answered it; a route's or a Service's other backends carry other deployment labels)."""
    return f'namespace="{_label(namespace, "namespace")}",deployment="{_label(deployment, "deployment")}"'


def success_rate_query(namespace: str, deployment: str, interval_seconds: float) -> str:
    sel = _selector(namespace, deployment)
    w = _window(interval_seconds)
    return f'100 * sum(rate({REQUESTS}{{{sel},code!~"5.."}}[{w}])) / sum(rate({REQUESTS}{{{sel}}}[{w}]))'


def latency_p99_query(namespace: str, deployment: str, interval_seconds: float) -> str:
    sel = _selector(namespace, deployment)
    return f"histogram_quantile(0.99, sum by (le) (rate({DURATION_BUCKET}{{{sel}}}[{_window(interval_seconds)}])))"


class CheckQuery(Message):
    name: str
    promql: str
    min: float | None = None
    max: float | None = None
    scale: float = 1.0  # the query's value times scale is compared (p99: seconds to ms)


def check_queries(analysis: Analysis, namespace: str, deployment: str) -> list[CheckQuery]:
    """The checks' queries over the canary Deployment `deployment` in `namespace` (custom queries as written)."""
    seconds = analysis.interval.delta.total_seconds()
    return [_one(c, namespace, deployment, seconds) for c in analysis.checks]


def _one(check: Check, namespace: str, deployment: str, seconds: float) -> CheckQuery:
    if check.success_rate is not None:
        q = success_rate_query(namespace, deployment, seconds)
        return CheckQuery(name="success-rate", promql=q, min=check.success_rate.min)
    if check.latency_p99 is not None:
        q = latency_p99_query(namespace, deployment, seconds)
        ms = check.latency_p99.max.delta.total_seconds() * 1000
        return CheckQuery(name="latency-p99", promql=q, max=ms, scale=1000.0)
    assert check.query is not None
    return CheckQuery(name=check.query.name, promql=check.query.promql, min=check.query.min, max=check.query.max)


class Result(Message):
    """One check's result for one interval: a value, no data, or an error (message bounded)."""

    kind: Literal["value", "no-data", "error"]
    value: float | None = None
    error: str | None = None


class Failure(Message):
    interval: int
    metric: str
    value: float | None  # None: no data or an error
    threshold: str


class Verdict(Message):
    outcome: Outcome
    failed_intervals: int
    failures: list[Failure]


def _fails(q: CheckQuery, r: Result, no_data: str) -> str | None:
    if r.kind == "error":
        return f"error: {(r.error or '')[:200]}"
    if r.kind == "no-data" or r.value is None or not math.isfinite(r.value):
        return None if no_data == "pass" else "no data"
    v = r.value * q.scale
    if q.min is not None and v < q.min:
        return f">= {q.min:g}"
    if q.max is not None and v > q.max:
        return f"<= {q.max:g}"
    return None


def verdict(analysis: Analysis, queries: list[CheckQuery], intervals: list[list[Result]]) -> Verdict:
    """Intervals so far (each: one Result per query, in order) -> continue, passed (count clean enough), or failed."""
    failed, failures = 0, list[Failure]()
    for i, results in enumerate(intervals):
        bad = False
        for q, r in zip(queries, results, strict=True):
            why = _fails(q, r, analysis.no_data)
            if why is not None:
                bad = True
                if len(failures) < MAX_FAILURES_RECORDED:
                    value = r.value * q.scale if r.kind == "value" and r.value is not None else None
                    failures.append(Failure(interval=i, metric=q.name, value=value, threshold=why))
        failed += bad
        if failed >= analysis.failure_limit:
            return Verdict(outcome="failed", failed_intervals=failed, failures=failures)
    outcome: Outcome = "passed" if len(intervals) >= analysis.count else "continue"
    return Verdict(outcome=outcome, failed_intervals=failed, failures=failures)


class AnalysisQueryInput(Message):
    """One interval's queries for an environment's rollout; the worker picks the Prometheus by `cluster`."""

    environment: str
    cluster: str
    queries: list[CheckQuery]


class AnalysisQueryResult(Message):
    results: list[Result]  # one per query, in order
    url: str  # the Prometheus that answered, for the record
