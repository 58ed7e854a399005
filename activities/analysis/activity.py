"""The `query_analysis` activity: an interval's check queries against the Prometheus the worker's operator named for
the environment's cluster (the clusters file's `prometheus`, else FERRY_PROMETHEUS_URL). The URL is never in the
input: a spec cannot point the worker at a host of its choosing."""

from __future__ import annotations

from temporalio import activity

from activities.analysis.prometheus import instant_query
from activities.errors import classified
from ferry.analysis import AnalysisQueryInput, AnalysisQueryResult
from ferry.clusters import ClustersFile
from ferry.errors import ErrorType

QUERY_TIMEOUT_S = 10.0  # each query's `timeout` at Prometheus
MAX_QUERIES = 16  # per interval


class AnalysisActivities:
    def __init__(self, clusters: ClustersFile, fallback_url: str | None, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self._clusters, self._fallback, self._timeout_s = clusters, fallback_url, timeout_s

    def prometheus_for(self, cluster: str) -> str:
        """The cluster's `prometheus` from the clusters file, else the worker's FERRY_PROMETHEUS_URL."""
        entry = self._clusters.clusters.get(cluster)
        url = (entry.prometheus if entry is not None else None) or self._fallback
        if url is None:
            raise classified(
                ErrorType.BAD_INPUT,
                f"no Prometheus is configured for cluster {cluster[:63]!r}: set `prometheus` in its entry of the "
                "worker's clusters file (FERRY_CLUSTERS) or FERRY_PROMETHEUS_URL on the worker",
            )
        return url

    @activity.defn(name="query_analysis")
    def query_analysis(self, input: AnalysisQueryInput) -> AnalysisQueryResult:
        """Every query of the interval, in order; BAD_QUERY or METRICS_UNAVAILABLE from the first that raises."""
        if len(input.queries) > MAX_QUERIES:
            raise classified(ErrorType.BAD_INPUT, f"{len(input.queries)} queries: at most {MAX_QUERIES} per interval")
        url = self.prometheus_for(input.cluster)
        results = [instant_query(url, q.promql, self._timeout_s) for q in input.queries]
        return AnalysisQueryResult(results=results, url=url)
