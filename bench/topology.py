"""Fleet apply on both Temporal topologies, side by side: the dev server (SQLite, one process) and the cluster
(`go.temporal.io/server` on PostgreSQL, `make temporal-server`), each with 1 and 2 `ferry worker` processes.

For each (topology, workers): E environments (one ConfigMap each, own namespace, one shared artifact) are started
at once; the figure is the time until every one reports the artifact applied and Healthy, with the CPU the
Temporal server (PostgreSQL included, on the cluster) and the workers used meanwhile. Prints JSON.

    .venv/bin/python bench/topology.py [--environments 100] [--workers 1,2] [--temporal dev,cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kubernetes
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devstack.kube.session import KubeServer
from devstack.procs import free_port
from devstack.registry import Registry
from devstack.temporal import TemporalDevServer
from devstack.temporal_cluster import throwaway_cluster
from ferry.environment import EnvironmentSpec
from tests.kit.environments import all_on_digest, config_map, publish, start_environment
from tests.kit.processes import Workers, cpu_seconds, eventually, worker_env
from tests.kit.stack import settings_for


@contextlib.contextmanager
def temporal(kind: str, root: Path) -> Iterator[tuple[str, list[int]]]:
    """-> (frontend address, pids whose CPU is the server's)."""
    if kind == "cluster":
        with throwaway_cluster(root / "cluster") as cluster:
            assert cluster.postgres.proc is not None
            yield cluster.address, [cluster.procs["temporal-server"].pid, cluster.postgres.proc.pid]
        return
    dev = TemporalDevServer(port=free_port(), ui_port=None, db_file=root / "dev" / "temporal.db",
                            log_file=root / "dev" / "temporal.log")
    dev.start(60)
    assert dev.proc is not None
    try:
        yield dev.address, [dev.proc.pid]
    finally:
        dev.proc.terminate()
        try:
            dev.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.proc.kill()


async def fleet_apply(address: str, server_pids: list[int], registry: Registry, kube: KubeServer, root: Path,
                      environments: int, workers: int) -> dict[str, Any]:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    tq, suffix = f"bench-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6]
    settings = settings_for(registry, root)
    repository = f"{registry.host}/bench/app-{suffix}"
    digest = publish(settings, repository, "1.0.0", config_map("1.0.0"))
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube.kubeconfig)))
    names = [f"b{suffix}-{i:04d}" for i in range(environments)]
    for ns in names:
        core.create_namespace({"metadata": {"name": ns}})
    pool = Workers(root / f"workers-{suffix}", worker_env(address, registry, kube, tq, root))
    pool.root.mkdir(parents=True)
    try:
        for i in range(workers):
            pool.start(f"worker-{i + 1}")
        worker_pids = [p.pid for p in pool.procs.values()]
        cpu = sum(cpu_seconds(p) for p in server_pids), sum(cpu_seconds(p) for p in worker_pids)
        started = time.monotonic()
        gate = asyncio.Semaphore(20)

        async def start(name: str) -> Any:
            async with gate:
                return await start_environment(client, tq, EnvironmentSpec.model_validate(
                    {"repository": repository, "interval": "10m", "name": name, "namespace": name,
                     "semver": ">=1.0.0"}))
        handles = list(await asyncio.gather(*(start(n) for n in names)))
        await eventually(lambda: all_on_digest(handles, digest), 1800, "every environment applied", every=0.5)
        wall = time.monotonic() - started
        return {"environments": environments, "workers": workers, "apply_seconds": round(wall, 1),
                "server_cpu_percent": round(100 * (sum(cpu_seconds(p) for p in server_pids) - cpu[0]) / wall),
                "workers_cpu_percent": round(100 * (sum(cpu_seconds(p) for p in worker_pids) - cpu[1]) / wall)}
    finally:
        pool.stop_all()
        for name in names:
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(f"env/{name}").terminate("bench finished")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--environments", type=int, default=100)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--temporal", default="dev,cluster")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ferry-bench-topology-") as tmp:
        root = Path(tmp)
        registry = Registry(port=free_port(), root=root / "registry")
        registry.start()
        kube = KubeServer(root / "kube", rollout_delay=0.3).start()
        try:
            for kind in args.temporal.split(","):
                with temporal(kind, root / kind) as (address, pids):
                    for count in (int(n) for n in args.workers.split(",")):
                        figures = await fleet_apply(address, pids, registry, kube, root / kind, args.environments,
                                                    count)
                        results.append({"temporal": kind, **figures})
                        print(json.dumps(results[-1]), file=sys.stderr)
        finally:
            kube.close()
            registry.stop()
    machine = {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
