"""The SIMULATED traffic generator (devstack/simulated_traffic.py) as a process on the real control plane, with the
Gateway API CRDs: its /metrics after real HTTPRoutes, Services and Deployments (the simulated workload controller sets
their readyReplicas). The counts are exact (the rules carry remainders), so the assertions are equalities."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import requests

from devstack.procs import free_port, spawn, stop_pid, wait_healthy
from ferry import traffic_split as ts

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
LINE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


class Traffic:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.url, self.log = proc, f"http://127.0.0.1:{port}/metrics", log

    def scrape(self) -> list[tuple[str, dict[str, str], float]]:
        text = requests.get(self.url, timeout=5).text
        out = []
        for line in text.splitlines():
            m = LINE.match(line)
            if m:
                out.append((m[1], dict(LABEL.findall(m[2] or "")), float(m[3])))
        return out

    def requests_by(self, **match: str) -> dict[tuple[str, str], float]:
        """ferry_simulated_requests_total by (deployment, code), over the series matching `match`."""
        totals: dict[tuple[str, str], float] = {}
        for name, labels, value in self.scrape():
            if name == "ferry_simulated_requests_total" and all(labels.get(k) == v for k, v in match.items()):
                key = (labels["deployment"], labels["code"])
                totals[key] = totals.get(key, 0) + value
        return totals

    def value(self, metric: str, **match: str) -> float:
        return sum(
            v for n, labels, v in self.scrape() if n == metric and all(labels.get(k) == x for k, x in match.items())
        )


def start_traffic(kubeconfig: Path, root: Path, *namespaces: str) -> Traffic:
    port, ready, log = free_port(), root / "traffic.ready", root / "simulated-traffic.log"
    argv = [sys.executable, "-m", "devstack.simulated_traffic", "--kubeconfig", str(kubeconfig), "--port", str(port)]
    argv += [a for ns in namespaces for a in ("--namespace", ns)] + ["--seed", "7", "--ready-file", str(ready)]
    proc = spawn(argv, log, die_with_parent=True)
    wait_healthy("simulated-traffic", proc, ready.is_file, 30, log)
    return Traffic(proc, port, log)


@pytest.fixture
def traffic(gateway_api: list[str], kube_server: Any, namespace: str, tmp_path: Path) -> Iterator[Traffic]:
    t = start_traffic(kube_server.kubeconfig, tmp_path, namespace)
    yield t
    stop_pid(t.proc.pid)


def deploy(api: Any, ns: str, name: str, labels: dict[str, str], image: str = "app:1.0", **ann: str) -> None:
    body = {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": ann},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }
    kubernetes.client.AppsV1Api(api).create_namespaced_deployment(ns, body)


def svc(api: Any, ns: str, name: str, selector: dict[str, str], **ann: str) -> None:
    body = {
        "metadata": {"name": name, "annotations": ann},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubernetes.client.CoreV1Api(api).create_namespaced_service(ns, body)


def route(api: Any, ns: str, name: str, weights: dict[str, int], **ann: str) -> None:
    refs = [{"name": s, "port": 80, "weight": w} for s, w in weights.items()]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "annotations": ann},
        "spec": {"rules": [{"backendRefs": refs}]},
    }
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def canary_pair(api: Any, ns: str, canary_image: str = "app:1.1", **canary_ann: str) -> None:
    for role, name, image, ann in (
        ("primary", "web-primary", "app:1.0", {}),
        ("canary", "web", canary_image, canary_ann),
    ):
        deploy(api, ns, name, {"app": "web", "ferry.dev/role": role}, image, **ann)
        svc(api, ns, f"web-{role}", {"app": "web", "ferry.dev/role": role})


def until(check: Callable[[], Any], timeout: float = 15.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(every)


def steady(traffic: Traffic, keys: list[tuple[str, str]], seconds: float = 3.0, **match: str) -> dict[Any, float]:
    """The counters' increase over `seconds`, once every key in `keys` has started counting."""
    until(lambda: all(k in traffic.requests_by(**match) for k in keys))
    time.sleep(1.1)  # every backend ready for a whole second
    before = traffic.requests_by(**match)
    time.sleep(seconds)
    after = traffic.requests_by(**match)
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def test_a_90_10_route_splits_exactly_and_answers_200(traffic: Traffic, kube_api: Any, namespace: str) -> None:
    canary_pair(kube_api, namespace)
    route(kube_api, namespace, "web", {"web-primary": 90, "web-canary": 10})
    delta = steady(traffic, [("web-primary", "200"), ("web", "200")], route="web")
    seconds = delta[("web-primary", "200")] / 18
    assert seconds >= 2 and seconds == int(seconds)
    assert delta == {("web-primary", "200"): 18 * seconds, ("web", "200"): 2 * seconds}
    assert traffic.value("ferry_simulated_traffic_info", simulated="true") == 1


def test_a_broken_tag_answers_half_500s(traffic: Traffic, kube_api: Any, namespace: str) -> None:
    canary_pair(kube_api, namespace, canary_image="ghcr.io/acme/app:1.1-broken")
    mark_ready_after_failing(kube_api, namespace, "web")
    route(kube_api, namespace, "web", {"web-primary": 50, "web-canary": 50})
    delta = steady(traffic, [("web", "500")], route="web")
    assert delta[("web", "500")] == delta[("web", "200")] == delta[("web-primary", "200")] / 2
    assert ("web-primary", "500") not in delta


def mark_ready_after_failing(api: Any, ns: str, name: str) -> None:
    """NB: the simulated workload controller fails a "broken" tag's rollout (never ready, so the generator's
    requests to it would be 503s): once it has written that final status, say one replica is ready anyway, as a
    version that starts but answers badly would be."""
    apps = kubernetes.client.AppsV1Api(api)

    def failed() -> bool:
        conditions = apps.read_namespaced_deployment_status(name, ns).status.conditions or []
        return any(c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in conditions)

    until(failed)
    apps.patch_namespaced_deployment_status(name, ns, {"status": {"readyReplicas": 1, "replicas": 1}})


def test_annotations_set_the_error_rate_and_the_latency(traffic: Traffic, kube_api: Any, namespace: str) -> None:
    ann = {ts.ERROR_RATE_ANNOTATION: "5", ts.LATENCY_ANNOTATION: "400"}
    canary_pair(kube_api, namespace, canary_image="app:1.1-broken", **ann)  # the annotation overrides "broken"
    mark_ready_after_failing(kube_api, namespace, "web")
    route(kube_api, namespace, "web", {"web-primary": 0, "web-canary": 1})
    delta = steady(traffic, [("web", "500")], route="web")
    assert delta[("web", "500")] * 19 == delta[("web", "200")]  # 1 of 20 each second
    assert not any(d == "web-primary" for d, _ in delta)  # weight 0 gets nothing
    buckets = sorted(
        (float(labels["le"]), v)
        for n, labels, v in traffic.scrape()
        if n == "ferry_simulated_request_duration_seconds_bucket" and labels["deployment"] == "web"
    )
    assert 0.4 <= histogram_quantile(0.99, buckets) <= 0.5  # the median 400 ms, spread +/-20 %, bucket 0.25..0.5


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs, +Inf last: linear within the bucket."""
    total = buckets[-1][1]
    rank, low, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            return low + (le - low) * (rank - below) / (count - below)
        low, below = le, count
    return low


def test_changing_the_weights_changes_the_split_within_2s(traffic: Traffic, kube_api: Any, namespace: str) -> None:
    canary_pair(kube_api, namespace)
    route(kube_api, namespace, "web", {"web-primary": 90, "web-canary": 10})
    steady(traffic, [("web-primary", "200"), ("web", "200")], seconds=1.0, route="web")
    patch = {
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"name": "web-primary", "port": 80, "weight": 50},
                        {"name": "web-canary", "port": 80, "weight": 50},
                    ]
                }
            ]
        }
    }
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    last = traffic.requests_by(route="web")
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "web", patch)
    changed = time.monotonic()

    def even() -> bool:
        nonlocal last
        now = traffic.requests_by(route="web")
        inc = {k: now[k] - last.get(k, 0) for k in now}
        last = now
        return inc.get(("web", "200"), 0) > 0 and inc.get(("web", "200")) == inc.get(("web-primary", "200"))

    until(even, timeout=5, every=0.1)
    elapsed = time.monotonic() - changed
    print(f"simulated traffic re-weighted {elapsed:.2f} s after the patch")
    assert elapsed < 2.0


def test_a_service_with_no_ready_deployment_answers_503(traffic: Traffic, kube_api: Any, namespace: str) -> None:
    svc(kube_api, namespace, "nobody", {"app": "nobody"})
    route(kube_api, namespace, "lonely", {"nobody": 1}, **{ts.RPS_ANNOTATION: "7"})
    delta = steady(traffic, [("", "503")], route="lonely")
    assert set(delta) == {("", "503")} and delta[("", "503")] % 7 == 0


def test_replica_ratio_mode_for_an_annotated_service(traffic: Traffic, kube_api: Any, namespace: str) -> None:
    deploy(kube_api, namespace, "web-primary", {"app": "web", "ferry.dev/role": "primary"})
    deploy(kube_api, namespace, "web", {"app": "web", "ferry.dev/role": "canary"})
    svc(kube_api, namespace, "web", {"app": "web"}, **{ts.RPS_ANNOTATION: "10"})
    delta = steady(traffic, [("web-primary", "200"), ("web", "200")], route="", service="web")
    assert delta[("web", "200")] == delta[("web-primary", "200")] and delta[("web", "200")] % 5 == 0


def test_bad_annotations_do_not_crash_and_are_counted(traffic: Traffic, kube_api: Any, namespace: str) -> None:
    canary_pair(kube_api, namespace, **{ts.ERROR_RATE_ANNOTATION: "lots", ts.LATENCY_ANNOTATION: "-1"})
    route(kube_api, namespace, "web", {"web-primary": 1, "web-canary": 1}, **{ts.RPS_ANNOTATION: "100000"})
    delta = steady(traffic, [("web", "200")], route="web")
    assert delta[("web", "200")] == delta[("web-primary", "200")]  # the default 20 rps, no errors
    assert traffic.value("ferry_simulated_input_warnings_total", reason="annotation") == 3  # each counted once
    assert traffic.proc.poll() is None
    text = traffic.log.read_text()
    assert "simulated" in text and "ignored annotation" in text and "Traceback" not in text


def test_an_unreachable_api_server_keeps_the_metrics_endpoint_serving(tmp_path: Path, kube_server: Any) -> None:
    kubeconfig = tmp_path / "nowhere.kubeconfig"
    text = kube_server.kubeconfig.read_text()
    kubeconfig.write_text(re.sub(r"server: https://127\.0\.0\.1:\d+", f"server: https://127.0.0.1:{free_port()}", text))
    t = start_traffic(kubeconfig, tmp_path)
    try:
        until(lambda: t.value("ferry_simulated_api_errors_total") >= 2, timeout=10)
        assert t.proc.poll() is None and t.value("ferry_simulated_traffic_info", simulated="true") == 1
        assert "keeping the last state" in t.log.read_text()
    finally:
        stop_pid(t.proc.pid)


def test_series_are_bounded_and_label_values_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    from devstack import simulated_traffic

    monkeypatch.setattr(simulated_traffic, "MAX_SERIES", 3)
    metrics = simulated_traffic.Metrics()
    flows = [ts.Flow("ns", "r", f's"{i}\n', f"d{i}", 10, 1, ts.ERROR_CODE, 50.0) for i in range(3)]
    metrics.record([(f, 0.5) for f in flows])
    text = metrics.render().decode()
    assert (
        'service="s\\"0\\n"' in text and "ferry_simulated_series_refused_total 6" in text
    )  # 3 series x 2 flows refused
    counters = [line for line in text.splitlines() if line.startswith("ferry_simulated_requests_total{")]
    assert len(counters) == 2 and all("d0" in line for line in counters)  # 200 and 500 of the first; then the bound
    assert 'ferry_simulated_request_duration_seconds_count{namespace="ns"' in text  # the first's histogram
