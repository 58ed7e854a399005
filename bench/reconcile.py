"""Reconcile benchmark: one environment with N objects of mixed kinds, against the real Kubernetes API server
(the local control plane, `make setup`) and the real registry, through the real adapters (activity time).
Prints JSON.

For each N: time and API requests (every HTTP request the adapter's client sends, by verb; dry runs apart)
for the first apply, a no-op reconcile, and a reconcile where one object changed; plus history events per
no-op EnvironmentWorkflow iteration (time-skipping server).

    .venv/bin/python bench/reconcile.py [--sizes 10,100,1000,5000] > bench/results/reconcile.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.bundle import BundleCache
from activities.cluster import ClusterActivities
from activities.registry import Registries, RegistryActivities
from devstack.kube.session import KubeServer
from devstack.procs import free_port
from devstack.registry import Registry
from ferry.reconcile import ReconcileInput
from ferry.settings import RegistrySettings, Settings
from tests.kit.environments import publish

KINDS = 4  # ConfigMap, Secret, Service, Deployment


def objects(n: int, changed: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % KINDS
        name = f"obj-{i:05d}"
        value = "changed" if i == changed else "v1"
        if kind == 0:
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": value}})
        elif kind == 1:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name},
                    "stringData": {"k": value},
                    "type": "Opaque",
                }
            )
        elif kind == 2:
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "labels": {"v": value}},
                    "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
                }
            )
        else:
            out.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {
                        "selector": {"matchLabels": {"app": name}},
                        "template": {
                            "metadata": {"labels": {"app": name, "v": value}},
                            "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]},
                        },
                    },
                }
            )
    return out


class RequestCounter:
    """Counts the HTTP requests the adapter's kubernetes client sends, by verb (dry runs counted apart)."""

    def __init__(self, acts: ClusterActivities, kubeconfig: str) -> None:
        self.by_verb: Counter[str] = Counter()
        rest = acts.cluster("default").api.rest_client  # the implicit clusters file: default = kubeconfig
        original = rest.request

        def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            dry = any(k == "dryRun" for k, _ in kwargs.get("query_params") or []) or "dryRun=" in url
            self.by_verb[f"{method}{' (dry run)' if dry else ''}"] += 1
            return original(method, url, *args, **kwargs)

        rest.request = counted  # type: ignore[method-assign]

    def take(self) -> dict[str, int]:
        counts, self.by_verb = dict(self.by_verb), Counter()
        return counts


def measure(acts: ClusterActivities, counter: RequestCounter, input: ReconcileInput) -> dict[str, Any]:
    counter.take()
    started = time.perf_counter()
    result = acts.reconcile_environment(input)
    elapsed = time.perf_counter() - started
    by_verb = counter.take()
    return {
        "seconds": round(elapsed, 3),
        "requests": sum(by_verb.values()),
        "by_verb": by_verb,
        "writes": sum(n for verb, n in by_verb.items() if verb in ("PATCH", "POST", "PUT", "DELETE")),
        "created": len(result.changes.created),
        "updated": len(result.changes.updated),
        "unchanged": result.changes.unchanged,
    }


def run_size(n: int, registry: Registry, kube: KubeServer, tmp: Path) -> dict[str, Any]:
    kubeconfig = str(kube.kubeconfig)
    settings = Settings(registry=RegistrySettings(insecure_hosts=[registry.host], default=registry.host))
    repo = f"{registry.host}/bench/app-{uuid.uuid4().hex[:6]}"
    d1 = publish(settings, repo, "1.0.0", objects(n))
    d2 = publish(settings, repo, "1.1.0", objects(n, changed=n // 2))
    registry_acts = RegistryActivities(Registries(settings.registry))
    acts = ClusterActivities(BundleCache(tmp / f"cache-{n}", registry_acts.pull_artifact), kubeconfig)
    counter = RequestCounter(acts, kubeconfig)
    # NB: a fresh namespace and environment per size: the first apply meets an empty namespace.
    from kubernetes import client, config

    api = config.new_client_from_config(kubeconfig)
    for ns in (f"warm-{n}", f"bench-{n}"):
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})

    def inp(env: str, digest: str, version: str, baseline: bool) -> ReconcileInput:
        return ReconcileInput(
            environment=env,
            repository=repo,
            digest=digest,
            version=version,
            path=".",
            namespace=env,
            drift_baseline=baseline,
        )

    acts.reconcile_environment(inp(f"warm-{n}", d2, "1.1.0", False))  # warm: discovery, bundle cache of both
    acts.reconcile_environment(inp(f"warm-{n}", d1, "1.0.0", False))
    first = measure(acts, counter, inp(f"bench-{n}", d1, "1.0.0", False))
    noop = measure(acts, counter, inp(f"bench-{n}", d1, "1.0.0", True))
    one = measure(acts, counter, inp(f"bench-{n}", d2, "1.1.0", False))
    for ns in (f"warm-{n}", f"bench-{n}"):
        client.CoreV1Api(api).delete_namespace(ns)
    api.close()
    return {"objects": n, "kinds": KINDS, "first_apply": first, "noop": noop, "one_changed": one}


async def events_per_noop_iteration(registry: Registry, kube: KubeServer, tmp: Path) -> dict[str, Any]:
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from devstack.procs import script_path
    from devstack.temporal import SEARCH_ATTRIBUTES
    from ferry.environment import EnvironmentInput, EnvironmentState
    from ferry.spec import EnvironmentSpec
    from workers.worker import build_worker
    from workflows.environment import EnvironmentWorkflow

    settings = Settings(registry=RegistrySettings(insecure_hosts=[registry.host], default=registry.host))
    settings.kubeconfig = kube.kubeconfig
    settings.worker.cache_dir = tmp / "cache-events"
    repo = f"{registry.host}/bench/events-{uuid.uuid4().hex[:6]}"
    publish(settings, repo, "1.0.0", objects(10))
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    # NB: the SDK core logs warnings to stdout; keep stdout pure JSON.
    quiet = Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
        )
    )
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=script_path("temporal-test-server"),
        data_converter=pydantic_data_converter,
        runtime=quiet,
    )
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES},
        )
    )
    try:
        async with build_worker(env.client, settings, task_queue="bench"):
            spec = EnvironmentSpec(name="events", repository=repo, namespace="default", semver=">=1.0.0", interval="1m")
            handle = await env.client.start_workflow(
                EnvironmentWorkflow.run,
                EnvironmentInput(state=EnvironmentState(spec=spec)),
                id="env/bench",
                task_queue="bench",
            )

            async def at(iterations: int) -> int:
                while (await handle.query(EnvironmentWorkflow.status)).state.iterations < iterations:
                    await env.sleep(30)
                return len((await handle.fetch_history()).events)

            start = await at(3)  # past the first apply and health wait
            end = await at(13)
            await handle.terminate("bench done")
    finally:
        await env.shutdown()
    return {"events_per_noop_iteration": (end - start) / 10, "measured_iterations": 10}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000,5000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        registry = Registry(port=free_port(), root=tmp / "registry")
        registry.start()
        kube = KubeServer(tmp / "kube", rollout_delay=0.05)
        try:
            kube.start()
            results = [run_size(int(n), registry, kube, tmp) for n in args.sizes.split(",")]
            history = asyncio.run(events_per_noop_iteration(registry, kube, tmp))
        finally:
            kube.close()
            registry.stop()
    from devstack.kube.controlplane import kube_version

    print(
        json.dumps(
            {
                "benchmark": "reconcile",
                "python": platform.python_version(),
                "kubernetes": kube_version(),
                "results": results,
                "history": history,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
