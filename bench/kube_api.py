"""Benchmark of the real Kubernetes API server (the local control plane, `make setup`) through the official
client: objects/s for create and for server-side apply, and LIST latency, at 1,000 and 5,000 ConfigMaps in one
namespace — the same measurements the retired emulator's benchmark made, for comparison.

    .venv/bin/python bench/kube_api.py [--sizes 1000,5000] > bench/results/kube_api.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.kube.controlplane import kube_version
from devstack.kube.session import KubeServer


def configmap(i: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{i:05d}", "labels": {"app.kubernetes.io/managed-by": "ferry", "bench": "yes"}},
        "data": {"index": str(i), "payload": "x" * 200},
    }


def run(size: int, kube: KubeServer) -> dict[str, object]:
    api = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    core = kubernetes.client.CoreV1Api(api)
    namespace = f"bench-{size}"
    core.create_namespace({"metadata": {"name": namespace}})
    started = time.perf_counter()
    for i in range(size):
        core.create_namespaced_config_map(namespace, configmap(i))
    create_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(size):
        body = configmap(i)
        body["data"]["payload"] = "y" * 200  # type: ignore[index]
        core.patch_namespaced_config_map(
            body["metadata"]["name"],
            namespace,
            body,  # type: ignore[index]
            field_manager="ferry",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    apply_s = time.perf_counter() - started
    latencies = []
    for _ in range(5):
        t0 = time.perf_counter()
        items = core.list_namespaced_config_map(namespace, label_selector="bench=yes", _preload_content=False).data
        latencies.append(time.perf_counter() - t0)
        assert len(json.loads(items)["items"]) == size
    core.delete_namespace(namespace)
    api.close()
    return {
        "objects": size,
        "create_per_s": round(size / create_s, 1),
        "ssa_per_s": round(size / apply_s, 1),
        "list_ms_median": round(statistics.median(latencies) * 1000, 1),
        "list_ms_max": round(max(latencies) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kube = KubeServer(Path(tmp) / "kube")
        try:
            kube.start()
            results = [run(int(n), kube) for n in args.sizes.split(",")]
        finally:
            kube.close()
    print(
        json.dumps(
            {
                "benchmark": "kube_api",
                "kubernetes": kube_version(),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
