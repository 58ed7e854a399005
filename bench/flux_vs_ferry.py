"""Flux and Ferry side by side, in one run on this machine: the same artifact, registry and API server.

For each N (`--sizes`), both systems in turn (the order alternates from one N to the next), each alone on the
cluster while measured (the other's processes are stopped):

- **push -> all applied and Ready** (Flux's MTTP method): the release is pushed, then N deliveries are declared at
  once (Flux: N OCIRepository + N Kustomization objects with `wait: true`, as `kubectl apply` would; Ferry: N
  environments with the real `ferry env apply`), each in its own namespace, all tracking `>=1.0.0`; the clock runs
  from the push until every Kustomization is Ready / every environment Healthy (the simulated workload controller
  rolls each Deployment out);
- **CPU-seconds and peak memory** of the system's own processes over that rollout (Flux: source-controller +
  kustomize-controller; Ferry: the `ferry worker` and the Temporal dev server with its SQLite store), from /proc;
- **API-server requests per idle interval**: the API server's own `apiserver_request_total` over one whole interval
  once everything is Ready;
- **hand-edit -> reverted**: a ConfigMap edited by another field manager in `--drift` namespaces; seconds until the
  system puts it back (both reconcile on their interval, so this is bound by it).

    .venv/bin/python bench/flux_vs_ferry.py --sizes 100,500,1000 --json bench/results/flux-vs-ferry.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kubernetes

from bench.fleet import Worker, apiserver_requests, apply_fleet, rss_mb, topology, tree_cpu, tree_sum
from devstack.flux.controllers import Flux, flux_version
from devstack.flux.objects import is_ready, kustomization, oci_repository
from devstack.kube.session import KubeServer
from devstack.procs import free_port
from devstack.registry import Registry
from tests.kit.environments import app_manifests, publish
from tests.kit.stack import settings_for

ROOT = Path(__file__).resolve().parents[1]
APP = "bench"
FLUX_NS = "flux-system"


def seconds(duration: str) -> float:
    from ferry.durations import parse_duration

    return parse_duration(duration).total_seconds()


class Meter:
    """CPU-seconds and peak RSS (MB, process trees summed) of one system's processes over a phase."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.cpu0, self.peak = pids, tree_cpu(pids), 0.0

    def sample(self) -> None:
        self.peak = max(self.peak, tree_sum(self.pids, rss_mb))

    def result(self) -> dict[str, float]:
        self.sample()
        return {"cpu_seconds": round(tree_cpu(self.pids) - self.cpu0, 1), "peak_rss_mb": round(self.peak, 1)}


def namespaces(core: Any, names: list[str]) -> None:
    for name in names:
        core.create_namespace({"metadata": {"name": name}})


async def idle_requests(admin: Any, interval: str, meter: Meter) -> float:
    before = apiserver_requests(admin)
    deadline = time.monotonic() + seconds(interval)
    while time.monotonic() < deadline:
        meter.sample()
        await asyncio.sleep(1)
    return apiserver_requests(admin) - before


async def reverted_after_edit(core: Any, targets: list[str], within: float) -> list[float | None]:
    """Edit `bench-config`'s data in each namespace as another field manager (a person with kubectl); -> seconds
    until each is back to what the release says (None: not within `within` seconds)."""
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{APP}-config"},
        "data": {"message": "edited by hand"},
    }
    started = time.monotonic()
    for ns in targets:
        core.patch_namespaced_config_map(f"{APP}-config", ns, body, field_manager="kubectl-edit")
    done: dict[str, float] = {}
    while len(done) < len(targets) and time.monotonic() - started < within:
        for ns in targets:
            if ns not in done and core.read_namespaced_config_map(f"{APP}-config", ns).data.get("message") == "hello":
                done[ns] = round(time.monotonic() - started, 1)
        await asyncio.sleep(0.2)
    return [done.get(ns) for ns in targets]


def summary(latencies: list[float | None]) -> dict[str, Any]:
    got = [x for x in latencies if x is not None]
    return {
        "seconds": latencies,
        "median": round(statistics.median(got), 1) if got else None,
        "max": max(got) if got else None,
        "not_reverted": len(latencies) - len(got),
    }


async def measure(
    args: argparse.Namespace,
    n: int,
    started: float,
    meter: Meter,
    ready: Any,
    core: Any,
    admin: Any,
    targets: list[str],
) -> dict[str, Any]:
    """Until all n deliveries are applied and Ready: the rollout's time, CPU and memory; then one idle interval
    and the hand edits. The same for both systems.

    `ready()` (sync or async) answers a count of those Ready now, or the set of their names. With names, the
    rollout ends when each has been Ready once (Flux's MTTP rule): at N = 1,000 and interval 1m Flux's 16 workers
    are always re-reconciling a few, and a Kustomization reads Ready=Unknown while it is, so "all Ready at the same
    moment" may never come. The first moment all were Ready at once is kept beside it when it comes."""
    count, at, at_once, seen = 0, None, None, set[str]()
    while time.monotonic() - started < args.timeout:
        meter.sample()
        now = ready()
        if asyncio.iscoroutine(now):
            now = await now
        if isinstance(now, set):
            seen |= now
            count = len(seen)
            if at_once is None and len(now) >= n:
                at_once = time.monotonic() - started
        else:
            count = now
        if count >= n:
            at = time.monotonic() - started
            break
        await asyncio.sleep(1)
    rollout = meter.result()
    idle_meter = Meter(meter.pids)
    idle = await idle_requests(admin, args.interval, idle_meter)
    drift = await reverted_after_edit(core, targets[: args.drift], seconds(args.interval) * 2 + 30)
    ready_rule = "each Ready once (names)" if seen else "all Ready at once (count)"
    return {
        "n": n,
        "push_to_all_ready_seconds": round(at, 1) if at else None,
        "ready_rule": ready_rule,
        **({"all_ready_at_once_seconds": round(at_once, 1) if at_once else None} if seen else {}),
        "ready": count,
        "rollout": rollout,
        "idle": {**idle_meter.result(), "apiserver_requests": idle},
        "hand_edit_reverted": summary(drift),
    }


async def run_flux(
    args: argparse.Namespace, n: int, registry: Registry, kube: KubeServer, root: Path, admin: Any
) -> dict[str, Any]:
    tag = f"x{n}-{uuid.uuid4().hex[:4]}"
    core, dyn = kubernetes.client.CoreV1Api(admin), kubernetes.dynamic.DynamicClient(admin)
    targets = [f"{tag}-{i:05d}" for i in range(n)]
    namespaces(core, targets)
    flux = Flux(root=root / tag, kubeconfig=kube.kubeconfig, concurrent=args.flux_concurrent).start()
    try:
        meter = Meter(list(flux.pids().values()))
        repository = f"{registry.host}/bench/flux-{tag}"
        started = time.monotonic()
        publish(settings_for(registry, root / tag), repository, "1.0.0", app_manifests(APP))
        sources = dyn.resources.get(api_version="source.toolkit.fluxcd.io/v1", kind="OCIRepository")
        kss = dyn.resources.get(api_version="kustomize.toolkit.fluxcd.io/v1", kind="Kustomization")
        for name in targets:  # one source and one Kustomization per delivery, as Flux's own benchmark
            sources.create(
                body=oci_repository(name, FLUX_NS, f"oci://{repository}", {"semver": ">=1.0.0"}, interval=args.interval)
            )
            kss.create(body=kustomization(name, FLUX_NS, name, name, interval=args.interval, timeout="5m"))

        def ready() -> set[str]:
            items = kss.get(namespace=FLUX_NS).to_dict()["items"]
            return {k["metadata"]["name"] for k in items if k["metadata"]["name"].startswith(tag) and is_ready(k)}

        measured = await measure(args, n, started, meter, ready, core, admin, targets)
        return {
            "system": f"flux {flux_version()} (source-controller + kustomize-controller, --concurrent "
            f"{args.flux_concurrent})",
            **measured,
        }
    finally:
        flux.stop()


async def run_ferry(
    args: argparse.Namespace, n: int, registry: Registry, kube: KubeServer, root: Path, admin: Any
) -> dict[str, Any]:
    import yaml
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    tag = f"f{n}-{uuid.uuid4().hex[:4]}"
    tmp = root / tag
    tmp.mkdir(parents=True)
    core = kubernetes.client.CoreV1Api(admin)
    targets = [f"{tag}-{i:05d}" for i in range(n)]
    namespaces(core, targets)
    repository = f"{registry.host}/bench/ferry-{tag}"
    spec_file = tmp / "environments.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "environments": [
                    {
                        "name": name,
                        "repository": repository,
                        "namespace": name,
                        "semver": ">=1.0.0",
                        "interval": args.interval,
                        "health-timeout": "5m",
                    }
                    for name in targets
                ]
            }
        )
    )
    with topology("dev", tmp / "temporal") as temporal:
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        queue = f"bench-{tag}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FERRY_TEMPORAL_ADDRESS": temporal.address,
            "FERRY_TASK_QUEUE": queue,
            "FERRY_REGISTRY": registry.host,
            "FERRY_REGISTRY_INSECURE": registry.host,
            "FERRY_KUBECONFIG": str(kube.worker_kubeconfig),
            "FERRY_CACHE_DIR": str(tmp / "cache"),
            "FERRY_STATE_DIR": str(tmp / "state"),
            "FERRY_OTEL_EXPORTER": "none",
        }
        worker = Worker(env, tmp / "worker.log")
        try:
            meter = Meter([*temporal.pids, worker.proc.pid])
            started = time.monotonic()
            publish(settings_for(registry, tmp), repository, "1.0.0", app_manifests(APP))
            await asyncio.to_thread(apply_fleet, spec_file, env)
            query = (
                f'WorkflowType="EnvironmentWorkflow" AND TaskQueue="{queue}" AND ExecutionStatus="Running" '
                'AND FerryPhase="Healthy"'
            )

            async def healthy() -> int:  # a count: all Healthy at once, the stricter rule (Healthy holds while
                return (await client.count_workflows(query)).count  # an environment re-reconciles)

            measured = await measure(args, n, started, meter, healthy, core, admin, targets)
            return {"system": "ferry (ferry worker + Temporal dev server on SQLite)", **measured}
        finally:
            worker.stop()


def ratios(flux: dict[str, Any], ferry: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    return {
        "push_to_all_ready_ferry_over_flux": ratio(
            ferry["push_to_all_ready_seconds"], flux["push_to_all_ready_seconds"]
        ),
        "rollout_cpu_ferry_over_flux": ratio(ferry["rollout"]["cpu_seconds"], flux["rollout"]["cpu_seconds"]),
        "peak_rss_ferry_over_flux": ratio(ferry["rollout"]["peak_rss_mb"], flux["rollout"]["peak_rss_mb"]),
        "idle_apiserver_requests_ferry_over_flux": ratio(
            ferry["idle"]["apiserver_requests"], flux["idle"]["apiserver_requests"]
        ),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="ferry-flux-bench-") as d:
        tmp = Path(d)
        registry = Registry(port=free_port(), root=tmp / "registry")
        kube = KubeServer(tmp / "kube")
        try:
            registry.start()
            kube.start()
            admin = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
            for i, n in enumerate(args.sizes):
                order = (run_flux, run_ferry) if i % 2 == 0 else (run_ferry, run_flux)
                results = {}
                for system in order:
                    result = await system(args, n, registry, kube, tmp, admin)
                    print(json.dumps(result), file=sys.stderr, flush=True)
                    results[result["system"].split(" ")[0]] = result
                runs.append(
                    {
                        "n": n,
                        "order": [s.__name__.removeprefix("run_") for s in order],
                        **results,
                        "ratios": ratios(results["flux"], results["ferry"]),
                    }
                )
        finally:
            kube.close()
            registry.stop()
    return {
        "benchmark": "flux_vs_ferry",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "load_average_at_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
        "argv": sys.argv[1:],
        "interval": args.interval,
        "published_flux_figure": "1,000 Kustomizations in 4m13s on a 16-core "
        "runner, Flux 2.9 (Flux's own MTTP benchmark, another machine and workload)",
        "runs": runs,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 500, 1000])
    parser.add_argument("--interval", default="1m", help="both systems' reconcile interval")
    parser.add_argument("--drift", type=int, default=5, help="namespaces edited by hand per run")
    parser.add_argument("--flux-concurrent", type=int, default=4, help="controllers' --concurrent (default 4)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for all Ready")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    cli()
