"""An environment tracking a chart in an OCI Helm repository, pushed by the real `helm push`: it follows the semver
range to each new chart version, through the real workers, registry and control plane."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import AppsV1Api, CoreV1Api
from temporalio.testing import WorkflowEnvironment

from ferry.settings import Settings
from tests.kit.charts import helm_push
from tests.kit.environments import ferry, wait_status


async def test_an_oci_chart_pushed_by_helm_is_delivered_and_followed_by_semver(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, base = f"oci-{suffix}", f"{dev_worker.registry.default}/charts-{suffix}"
    admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    helm_push(tmp_path, base, "1.4.0", values={"replicaCount": 1, "greeting": "v1.4.0", "image": "nginx:1.27"})
    helm_push(tmp_path, base, "2.0.0", values={"replicaCount": 1, "greeting": "v2.0.0", "image": "nginx:1.28"})
    spec = tmp_path / "envs.yaml"
    spec.write_text(f"""environments:
  - name: {name}
    namespace: {name}
    interval: 2s
    helm:
      chart: oci://{base}/shop
      semver: ">=1.4.0 <2"
      release-name: shop
      values: {{replicaCount: 2}}
""")
    started = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec), "--as", "carol")
    assert started.returncode == 0, started.stderr
    handle = dev_env.client.get_workflow_handle(f"env/{name}")
    status = await wait_status(handle, lambda s: s.state.last_applied is not None, timeout=60, what="applied")
    assert status.state.last_applied is not None and status.state.last_applied.version == "1.4.0"
    core, apps = CoreV1Api(admin), AppsV1Api(admin)
    assert core.read_namespaced_config_map("shop-config", name).data["greeting"] == "v1.4.0"
    assert apps.read_namespaced_deployment("shop", name).spec.replicas == 2  # the spec's inline values win
    helm_push(tmp_path, base, "1.4.2", values={"replicaCount": 1, "greeting": "v1.4.2", "image": "nginx:1.27"})
    status = await wait_status(
        handle,
        lambda s: s.state.last_applied is not None and s.state.last_applied.version == "1.4.2",
        timeout=60,
        what="1.4.2 applied (2.0.0 is outside the range)",
    )
    assert core.read_namespaced_config_map("shop-config", name).data["greeting"] == "v1.4.2"
