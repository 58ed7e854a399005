"""SIMULATED traffic generator (no pod runs here) — no request is ever sent anywhere.

No container runs on these machines, so nothing would answer the requests an HTTPRoute carries. This process plays
them: every second it lists HTTPRoutes (gateway.networking.k8s.io/v1), Services and Deployments on the real API
server and counts the requests each Deployment would have answered, by the pure rules of ferry/traffic_split.py
(weights, replica ratio, "broken" tags and the ferry.dev/simulated-* annotations). It exports them for Prometheus on
http://127.0.0.1:PORT/metrics:
  ferry_simulated_requests_total{namespace,route,service,deployment,code}            counter
  ferry_simulated_request_duration_seconds{namespace,route,service,deployment}       histogram (5 ms .. 10 s)
  ferry_simulated_traffic_info{simulated="true"} 1
  ferry_simulated_input_warnings_total{reason}   bad input ignored (each object's bad value counted once)
  ferry_simulated_series_refused_total           a second's updates of series beyond MAX_SERIES, refused
  ferry_simulated_api_errors_total               failed lists (the last state is kept, retried next second)

    python -m devstack.simulated_traffic --kubeconfig FILE --port P [--namespace NS ...] [--rps N] [--seed S]
        [--ready-file FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ferry import traffic_split as rules

NAME = "simulated-traffic"
TICK_SECONDS = 1.0  # constant: every series' counts are per second
REQUEST_TIMEOUT = (5, 10)  # connect, read: a list answers well within a tick's budget here
PAGE_LIMIT = 500
MAX_OBJECTS = 5_000  # per kind and tick; beyond, the rest is not listed (logged)
MAX_LIST_BYTES = 64 * 1024 * 1024  # one page's response body, read while streaming
MAX_SERIES = 10_000
MAX_WARNINGS_SEEN = 10_000
MAX_LABEL = 253
KINDS = {
    "routes": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "services": ("/api/v1", "services"),
    "deployments": ("/apis/apps/v1", "deployments"),
}
log = logging.getLogger(NAME)


def _escape(value: str) -> str:
    return value[:MAX_LABEL].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


SERIES = ("namespace", "route", "service", "deployment")
Series = tuple[str, str, str, str]


class Metrics:
    """The counters and histograms, bounded to MAX_SERIES, rendered in Prometheus' text format (0.0.4)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        self.histograms: dict[Series, tuple[list[int], float, int]] = {}
        self.warnings: dict[str, int] = {}
        self.refused = 0
        self.api_errors = 0
        self._refusal_logged = False

    def _admit(self, table: dict[Any, Any], key: Any) -> bool:
        if key in table:
            return True
        if len(self.requests) + len(self.histograms) < MAX_SERIES:
            return True
        self.refused += 1
        if not self._refusal_logged:
            log.warning("simulated traffic: more than %d series; new series are refused", MAX_SERIES)
            self._refusal_logged = True
        return False

    def record(self, flows: list[tuple[rules.Flow, float]]) -> None:
        """One second's flows (each with its latency phase u), under one lock: a scrape sees whole seconds."""
        with self.lock:
            for flow, u in flows:
                self._record(flow, u)

    def _record(self, flow: rules.Flow, u: float) -> None:
        series: Series = (flow.namespace, flow.route, flow.service, flow.deployment)
        for code, n in ((rules.OK_CODE, flow.requests - flow.errors), (flow.error_code, flow.errors)):
            key = (*series, code)
            if n and self._admit(self.requests, key):
                self.requests[key] = self.requests.get(key, 0) + n
        if not flow.deployment or not self._admit(self.histograms, series):
            return  # no Deployment answered: no latency
        counts, total = rules.bucket_counts(flow.requests, flow.latency_ms, u)
        old = self.histograms.get(series, ([0] * len(rules.BUCKETS), 0.0, 0))
        added = [a + b for a, b in zip(old[0], counts, strict=True)]
        self.histograms[series] = (added, old[1] + total, old[2] + flow.requests)

    def warn(self, reason: str) -> None:
        with self.lock:
            self.warnings[reason] = self.warnings.get(reason, 0) + 1

    def render(self) -> bytes:
        with self.lock:
            lines = [
                "# HELP ferry_simulated_traffic_info Simulated traffic: no pod runs, every request is simulated.",
                "# TYPE ferry_simulated_traffic_info gauge",
                'ferry_simulated_traffic_info{simulated="true"} 1',
                "# HELP ferry_simulated_requests_total Simulated requests by the Deployment that would have answered.",
                "# TYPE ferry_simulated_requests_total counter",
            ]
            for key, n in sorted(self.requests.items()):
                lines.append(f"ferry_simulated_requests_total{{{_labels((*SERIES, 'code'), key)}}} {n}")
            lines += [
                "# HELP ferry_simulated_request_duration_seconds Simulated request latency.",
                "# TYPE ferry_simulated_request_duration_seconds histogram",
            ]
            for series, (counts, total, count) in sorted(self.histograms.items()):
                sel = _labels(SERIES, series)
                for le, c in zip(rules.BUCKETS, counts, strict=True):
                    lines.append(f'ferry_simulated_request_duration_seconds_bucket{{{sel},le="{le}"}} {c}')
                lines.append(f'ferry_simulated_request_duration_seconds_bucket{{{sel},le="+Inf"}} {count}')
                lines.append(f"ferry_simulated_request_duration_seconds_sum{{{sel}}} {total:.6f}")
                lines.append(f"ferry_simulated_request_duration_seconds_count{{{sel}}} {count}")
            lines += ["# TYPE ferry_simulated_input_warnings_total counter"]
            lines += [
                f'ferry_simulated_input_warnings_total{{reason="{_escape(r)}"}} {n}'
                for r, n in sorted(self.warnings.items())
            ]
            lines += [
                "# TYPE ferry_simulated_series_refused_total counter",
                f"ferry_simulated_series_refused_total {self.refused}",
                "# TYPE ferry_simulated_api_errors_total counter",
                f"ferry_simulated_api_errors_total {self.api_errors}",
            ]
        return ("\n".join(lines) + "\n").encode()


class ListFailed(RuntimeError):
    pass


class Generator:
    """Lists the objects every tick (the last good state kept when the API server fails) and records a second."""

    def __init__(self, api: Any, metrics: Metrics, namespaces: list[str], rps: int | None, seed: int) -> None:
        self.api, self.metrics, self.namespaces, self.seed = api, metrics, namespaces, seed
        self.rps = rps
        self.state: dict[str, list[Any]] = {kind: [] for kind in KINDS}
        self.carry: rules.Carry = {}
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def _warn(self, reason: str, detail: str) -> None:
        if detail in self.seen:
            return
        if len(self.seen) >= MAX_WARNINGS_SEEN:
            self.seen.clear()
        self.seen.add(detail)
        self.metrics.warn(reason)
        log.warning("simulated traffic: ignored %s: %s", reason, detail[:300])

    def refresh(self) -> bool:
        """Every kind listed afresh; on any failure the last state is kept (False)."""
        try:
            fresh = {kind: list(self._list(kind)) for kind in KINDS}
        except Exception as err:  # an API server outage must not stop the generator
            with self.metrics.lock:
                self.metrics.api_errors += 1
            log.warning(
                "simulated traffic: list failed (%s); keeping the last state, retrying next second", str(err)[:300]
            )
            return False
        self.state = fresh
        return True

    def _list(self, kind: str) -> Iterator[Any]:
        prefix, plural = KINDS[kind]
        paths = [f"{prefix}/namespaces/{ns}/{plural}" for ns in self.namespaces] or [f"{prefix}/{plural}"]
        listed = 0
        for path in paths:
            token = ""
            while True:
                page = self._get(path, token)
                items = page.get("items")
                for item in items if isinstance(items, list) else []:
                    if listed >= MAX_OBJECTS:
                        self._warn("bound", f"more than {MAX_OBJECTS} {plural}: the rest not listed")
                        return
                    listed += 1
                    yield item
                token = str((page.get("metadata") or {}).get("continue") or "")
                if not token:
                    break

    def _get(self, path: str, token: str) -> dict[str, Any]:
        query = [("limit", str(PAGE_LIMIT))] + ([("continue", token)] if token else [])
        request = self.api.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT).response
        try:
            if response.status == 404 and "gateway.networking.k8s.io" in path:
                return {"items": []}  # the CRDs not installed (yet): no routes
            if response.status != 200:
                raise ListFailed(f"GET {path}: HTTP {response.status}")
            body = bytearray()
            for chunk in response.stream(64 * 1024):
                body += chunk
                if len(body) > MAX_LIST_BYTES:
                    raise ListFailed(f"GET {path}: response larger than {MAX_LIST_BYTES} bytes")
        finally:
            response.release_conn()
        page = json.loads(body)
        if not isinstance(page, dict):
            raise ListFailed(f"GET {path}: not a list")
        return page

    def tick(self, second: int) -> int:
        """One second of requests recorded: how many."""
        routes = self.state["routes"]
        if self.rps is not None:  # --rps: the default for routes without the annotation
            routes = [_with_default_rps(r, self.rps) for r in routes]
        flows = rules.plan(routes, self.state["services"], self.state["deployments"], self.carry, self._warn)
        self.metrics.record([(f, self._phase(second, f)) for f in flows])
        return sum(f.requests for f in flows)

    def _phase(self, second: int, f: rules.Flow) -> float:
        """The latency spread's phase u for this second and series: fixed by the seed (tests are exact)."""
        return random.Random(f"{self.seed}/{second}/{f.namespace}/{f.route}/{f.service}/{f.deployment}").random()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        self.refresh()
        start, second = time.monotonic(), 0
        if ready:
            ready()
        while not self.stop.is_set():
            self.tick(second)
            second += 1
            self.stop.wait(max(0.0, start + second * TICK_SECONDS - time.monotonic()))
            if not self.stop.is_set():
                self.refresh()


def _with_default_rps(route: Any, rps: int) -> Any:
    if not isinstance(route, dict) or not isinstance(route.get("metadata"), dict):
        return route
    annotations = route["metadata"].get("annotations")
    if isinstance(annotations, dict) and rules.RPS_ANNOTATION in annotations:
        return route
    merged = {**(annotations if isinstance(annotations, dict) else {}), rules.RPS_ANNOTATION: str(rps)}
    return {**route, "metadata": {**route["metadata"], "annotations": merged}}


def serve(metrics: Metrics, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a client may take to send its request line: a stuck scraper holds no thread forever

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind = metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
            elif path == "/":
                body, kind = b"ferry simulated traffic generator (no pod runs here): /metrics\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _set_process_name() -> None:
    try:
        ctypes.CDLL(None).prctl(15, NAME.encode()[:15])  # 15: PR_SET_NAME ("simulated-traf" in ps -o comm)
    except (OSError, AttributeError):
        pass


def start(
    state_dir: Path, kubeconfig: Path, port: int, timeout: float, started: list[tuple[str, int]]
) -> dict[str, Any]:
    """`ferry dev up`: the Gateway API CRDs installed (each Established), then this generator on 127.0.0.1:`port`
    watching every namespace, healthy once it has listed and serves /metrics; devstack.json's `simulated_traffic`
    entry. Its (name, pid) is appended to `started` before the wait, so a failed start is stopped by the caller."""
    import sys

    from devstack.gateway_api import install
    from devstack.procs import spawn, wait_healthy

    crds = install(kubeconfig)
    ready, log_file = state_dir / "simulated-traffic.ready", state_dir / "logs" / "simulated-traffic.log"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "devstack.simulated_traffic", "--kubeconfig", str(kubeconfig), "--port", str(port)]
    proc = spawn([*argv, "--ready-file", str(ready)], log_file)
    started.append(("simulated_traffic", proc.pid))
    wait_healthy(NAME, proc, ready.is_file, timeout, log_file)
    url = f"http://127.0.0.1:{port}/metrics"
    return {"url": url, "pid": proc.pid, "port": port, "log": str(log_file), "gateway_api_crds": len(crds)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.simulated_traffic", description="SIMULATED traffic")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--namespace", action="append", default=[], help="watched namespace (repeat; default: all)")
    parser.add_argument(
        "--rps", type=int, default=None, help=f"a route's requests per second (default {rules.DEFAULT_RPS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="the latency spread's phase (deterministic per second)")
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args()
    if args.rps is not None and not 0 <= args.rps <= rules.MAX_RPS:
        parser.error(f"--rps must be 0..{rules.MAX_RPS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _set_process_name()
    import kubernetes  # here: `ferry dev` imports this module for start()

    api = kubernetes.config.new_client_from_config(args.kubeconfig)  # type: ignore[no-untyped-call]
    metrics = Metrics()
    server = serve(metrics, args.port)
    generator = Generator(api, metrics, args.namespace, args.rps, args.seed)
    signal.signal(signal.SIGTERM, lambda *_: generator.stop.set())
    signal.signal(signal.SIGINT, lambda *_: generator.stop.set())

    def ready() -> None:
        watched = ", ".join(args.namespace) or "all namespaces"
        log.info(
            "simulated traffic generator (no pod runs here): %s on http://127.0.0.1:%d/metrics", watched, args.port
        )
        if args.ready_file:
            args.ready_file.write_text("ready\n")

    generator.run(ready)
    server.shutdown()
    log.info("simulated traffic generator stopped")


if __name__ == "__main__":
    main()
