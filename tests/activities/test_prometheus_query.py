"""The analysis query activity against Debian's real Prometheus (the session fixture `prometheus`), scraping a real
small HTTP server started here that serves counters in Prometheus's text format, advanced at every scrape."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.analysis.activity import AnalysisActivities
from activities.analysis.prometheus import MAX_RESPONSE_BYTES, instant_query
from devstack import prometheus as prom
from devstack.procs import free_port
from devstack.prometheus import PrometheusProcess
from ferry.analysis import REQUESTS, AnalysisQueryInput, CheckQuery, Result, success_rate_query
from ferry.clusters import ClusterEntry, ClustersFile

NAMESPACE, SERVICE = "shop", "web"
OK_PER_SCRAPE, ERRORS_PER_SCRAPE = 9, 1  # 90 % success
BIG_SERIES, PAD = 6000, "x" * 200  # a family whose every series, queried at once, is over MAX_RESPONSE_BYTES
SCRAPED_WITHIN = 30.0


class MetricsServer(ThreadingHTTPServer):
    """GET /metrics: request counters per code (labels as the simulated traffic generator's), +9 ok and +1 5xx at
    every scrape; `big`: also a large gauge family. POST (as Prometheus's API): answers `post_status`."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.scrapes = 0
        self.big = False
        self.post_status = 503
        self.post_headers: dict[str, str] = {}

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def text(self) -> str:
        self.scrapes += 1
        labels = f'namespace="{NAMESPACE}",service="{SERVICE}",deployment="{SERVICE}",route="/"'
        lines = [
            f"# TYPE {REQUESTS} counter",
            f'{REQUESTS}{{{labels},code="200"}} {self.scrapes * OK_PER_SCRAPE}',
            f'{REQUESTS}{{{labels},code="500"}} {self.scrapes * ERRORS_PER_SCRAPE}',
        ]
        if self.big:
            lines.append("# TYPE test_big_gauge gauge")
            lines += [f'test_big_gauge{{i="{i}",pad="{PAD}"}} {i}' for i in range(BIG_SERIES)]
        return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        body = self.server.text().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"status":"error","errorType":"unavailable","error":"test server says so"}'
        self.send_response(self.server.post_status)
        for name, value in self.server.post_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def metrics(prometheus: PrometheusProcess) -> Iterator[MetricsServer]:
    server = MetricsServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    prometheus.add_target(server.target)
    yield server
    prometheus.set_targets([])
    server.shutdown()
    server.server_close()


def _analysis(url: str | None, fallback: str | None = None, cluster: str = "default") -> AnalysisActivities:
    return AnalysisActivities(ClustersFile(clusters={cluster: ClusterEntry(prometheus=url)}), fallback)


def _query(activities: AnalysisActivities, promql: str, cluster: str = "default") -> Result:
    input = AnalysisQueryInput(environment="shop", cluster=cluster, queries=[CheckQuery(name="q", promql=promql)])
    return activities.query_analysis(input).results[0]


def _until_value(activities: AnalysisActivities, promql: str) -> tuple[Result, float]:
    start = time.monotonic()
    while time.monotonic() - start < SCRAPED_WITHIN:
        result = _query(activities, promql)
        if result.kind == "value":
            return result, time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"no value for {promql} within {SCRAPED_WITHIN}s: {result}")


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_success_rate_of_the_scraped_counters(prometheus: PrometheusProcess, metrics: MetricsServer) -> None:
    activities = _analysis(prometheus.url)
    result, waited = _until_value(activities, success_rate_query(NAMESPACE, SERVICE, 10))
    assert result.value == pytest.approx(100 * OK_PER_SCRAPE / (OK_PER_SCRAPE + ERRORS_PER_SCRAPE))
    print(f"\nfirst success-rate value {result.value} after {waited:.1f}s ({metrics.scrapes} scrapes)")
    answer = activities.query_analysis(
        AnalysisQueryInput(environment="shop", cluster="default", queries=[CheckQuery(name="one", promql="1")])
    )
    assert answer.url == prometheus.url and answer.results == [Result(kind="value", value=1.0)]


def test_missing_series_is_no_data(prometheus: PrometheusProcess, metrics: MetricsServer) -> None:
    assert _query(_analysis(prometheus.url), success_rate_query(NAMESPACE, "absent", 10)) == Result(kind="no-data")


def test_a_query_that_does_not_parse_is_bad_query(prometheus: PrometheusProcess) -> None:
    with pytest.raises(ApplicationError) as err:
        _query(_analysis(prometheus.url), "sum(rate(")
    assert err.value.type == "BadQuery" and err.value.non_retryable
    assert "parse error" in err.value.message  # Prometheus's own message


def test_a_query_that_cannot_be_evaluated_is_bad_query(prometheus: PrometheusProcess) -> None:
    # HTTP 422, errorType execution: many-to-many matching
    two = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(1), "a", "y", "", "")'
    with pytest.raises(ApplicationError) as err:
        _query(_analysis(prometheus.url), f"vector(1) + on() group_left() ({two})")
    assert err.value.type == "BadQuery" and err.value.non_retryable
    assert "(execution)" in err.value.message and "many-to-many matching not allowed" in err.value.message


def test_a_query_over_its_timeout_is_metrics_unavailable(prometheus: PrometheusProcess) -> None:
    # HTTP 503, errorType timeout: Prometheus's own answer to the `timeout` parameter (1 ms here)
    with pytest.raises(ApplicationError) as err:
        instant_query(prometheus.url, "count(count_over_time(vector(1)[30d:1s]))", 0.001)
    assert err.value.type == "MetricsUnavailable" and not err.value.non_retryable
    assert "HTTP 503 timeout" in err.value.message


def test_more_than_one_series_is_refused(prometheus: PrometheusProcess, metrics: MetricsServer) -> None:
    activities = _analysis(prometheus.url)
    _until_value(activities, f'sum({REQUESTS}{{namespace="{NAMESPACE}"}})')
    result = _query(activities, f'{REQUESTS}{{namespace="{NAMESPACE}"}}')
    assert result.kind == "error" and result.error is not None
    assert result.error.startswith("the query returns 2 series; a check needs exactly one (the first: {")
    assert '"code": "200"' in result.error


def test_an_answer_over_the_bound_is_refused(prometheus: PrometheusProcess, metrics: MetricsServer) -> None:
    metrics.big = True
    try:
        activities = _analysis(prometheus.url)
        _until_value(activities, "count(test_big_gauge)")
        assert _query(activities, "count(test_big_gauge)").value == BIG_SERIES
        result = _query(activities, "test_big_gauge")
    finally:
        metrics.big = False
    assert result == Result(
        kind="error", error=f"Prometheus's answer is larger than {MAX_RESPONSE_BYTES} bytes: refused"
    )


def test_prometheus_stopped_is_metrics_unavailable(tmp_path: Path) -> None:
    stopped = prom.start(tmp_path, free_port(), [], die_with_parent=True)
    assert _query(_analysis(stopped.url), "vector(1)").value == 1.0
    stopped.stop()
    with pytest.raises(ApplicationError) as err:
        _query(_analysis(stopped.url), "vector(1)")
    assert err.value.type == "MetricsUnavailable" and not err.value.non_retryable
    assert stopped.url in err.value.message


@pytest.mark.parametrize("status", [503, 429, 500])
def test_an_overloaded_or_failing_prometheus_is_metrics_unavailable(metrics: MetricsServer, status: int) -> None:
    metrics.post_status = status
    with pytest.raises(ApplicationError) as err:
        instant_query(f"http://{metrics.target}", "vector(1)", 2)
    assert err.value.type == "MetricsUnavailable" and not err.value.non_retryable
    assert f"HTTP {status}" in err.value.message


def test_a_redirect_is_not_followed(metrics: MetricsServer) -> None:
    metrics.post_status, metrics.post_headers = 302, {"Location": "http://elsewhere.example/api/v1/query"}
    try:
        with pytest.raises(ApplicationError) as err:
            instant_query(f"http://{metrics.target}", "vector(1)", 2)
    finally:
        metrics.post_status, metrics.post_headers = 503, {}
    assert err.value.type == "BadInput" and "elsewhere.example" in err.value.message


def test_the_cluster_entry_beats_the_worker_fallback(prometheus: PrometheusProcess) -> None:
    dead = _dead_url()
    activities = AnalysisActivities(
        ClustersFile(clusters={"eu": ClusterEntry(prometheus=prometheus.url), "us": ClusterEntry()}), dead
    )
    assert activities.prometheus_for("eu") == prometheus.url
    assert _query(activities, "vector(2)", cluster="eu").value == 2.0
    with pytest.raises(ApplicationError) as err:  # no `prometheus` in its entry: FERRY_PROMETHEUS_URL's
        _query(activities, "vector(2)", cluster="us")
    assert err.value.type == "MetricsUnavailable" and dead in err.value.message


def test_no_prometheus_configured_is_bad_input() -> None:
    with pytest.raises(ApplicationError) as err:
        _query(_analysis(None), "vector(1)")
    assert err.value.type == "BadInput" and err.value.non_retryable
    assert "FERRY_PROMETHEUS_URL" in err.value.message and "`prometheus`" in err.value.message
