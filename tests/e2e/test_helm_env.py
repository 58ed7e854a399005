"""A chart environment through the console script and the real workers: staging and production deliver the same
in-release chart with their own values files; a values change in production waits for a signed approval, `ferry
diff --pending` shows the rendered change before anyone approves, and the approved change is applied."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import AppsV1Api, CoreV1Api
from temporalio.testing import WorkflowEnvironment

from activities.helm.binary import helm_path
from ferry.settings import Settings
from tests.e2e.test_spec_approval_cli import keypair
from tests.kit.charts import write_chart
from tests.kit.environments import ferry, publish_dir, wait_status


def chart_release(tmp: Path) -> Path:
    root = tmp / "config-repo"
    (root / "charts").mkdir(parents=True)
    write_chart(root / "charts")
    (root / "values").mkdir()
    (root / "values" / "staging.yaml").write_text("greeting: hello-staging\nreplicaCount: 1\n")
    (root / "values" / "production.yaml").write_text("greeting: hello-production\nreplicaCount: 3\n")
    return root


async def test_a_chart_is_promoted_and_a_production_values_change_waits_for_a_signed_approval(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    helm_path()  # fails with the `make helm` hint when the binary is missing
    suffix = uuid.uuid4().hex[:8]
    staging, production = f"st-{suffix}", f"pr-{suffix}"
    repository = f"{dev_worker.registry.default}/team/shop-chart-{suffix}"
    admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    for ns in (staging, production):
        CoreV1Api(admin).create_namespace({"metadata": {"name": ns}})
    publish_dir(dev_worker, repository, "1.0.0", chart_release(tmp_path))
    alice_key, alice = keypair(tmp_path, "alice")

    def spec(replicas: int | None) -> Path:
        inline = f"\n      values: {{replicaCount: {replicas}}}" if replicas is not None else ""
        path = tmp_path / f"envs-{replicas}.yaml"
        path.write_text(f"""environments:
  - name: {staging}
    repository: {repository}
    namespace: {staging}
    semver: ">=1.0.0"
    interval: 2s
    helm:
      chart: charts/shop
      release-name: shop
      values-files: [values/staging.yaml]
  - name: {production}
    repository: {repository}
    namespace: {production}
    version: 1.0.0
    interval: 2s
    approval:
      required: true
      approvers:
        - {{name: alice, key: "{alice}"}}
    helm:
      chart: charts/shop
      release-name: shop
      values-files: [values/production.yaml]{inline}
""")
        return path

    started = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec(None)), "--as", "carol")
    assert started.returncode == 0, started.stderr
    client = dev_env.client
    for name in (staging, production):
        await wait_status(
            client.get_workflow_handle(f"env/{name}"),
            lambda s: s.state.last_applied is not None,
            timeout=60,
            what=f"{name} applied",
        )
    core, apps = CoreV1Api(admin), AppsV1Api(admin)
    assert core.read_namespaced_config_map("shop-config", staging).data["greeting"] == "hello-staging"
    assert core.read_namespaced_config_map("shop-config", production).data["greeting"] == "hello-production"
    assert apps.read_namespaced_deployment("shop", production).spec.replicas == 3

    pending = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec(5)), "--as", "mallory")
    assert pending.returncode == 0, pending.stderr
    assert "pending approval" in pending.stdout and "helm.values.replicaCount: null -> 5" in pending.stdout
    diff = await ferry(dev_worker, tmp_path, "diff", production, "--pending")
    assert diff.returncode == 0, diff.stderr
    assert f"update  Deployment/{production}/shop" in diff.stdout and ".spec.replicas" in diff.stdout, diff.stdout
    assert apps.read_namespaced_deployment("shop", production).spec.replicas == 3  # nothing moved yet

    unsigned = await ferry(dev_worker, tmp_path, "env", "approve", production, "--as", "alice")
    assert unsigned.returncode == 1 and "requires signed approvals" in unsigned.stderr
    approved = await ferry(dev_worker, tmp_path, "env", "approve", production, "--as", "alice", "--key", str(alice_key))
    assert approved.returncode == 0, approved.stderr
    assert "spec change applied: helm.values.replicaCount: null -> 5" in approved.stdout
    await wait_status(
        client.get_workflow_handle(f"env/{production}"),
        lambda s: not s.state.pending_spec and s.state.spec.helm is not None and bool(s.state.spec.helm.values),
        what="production's new spec",
    )
    for _ in range(100):  # the next iteration applies it
        if apps.read_namespaced_deployment("shop", production).spec.replicas == 5:
            break
        await asyncio.sleep(0.2)
    assert apps.read_namespaced_deployment("shop", production).spec.replicas == 5


async def test_a_chart_that_fails_to_render_is_refused_on_the_record_and_the_previous_release_keeps_running(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    helm_path()
    suffix = uuid.uuid4().hex[:8]
    name, repository = f"bad-{suffix}", f"{dev_worker.registry.default}/team/bad-chart-{suffix}"
    admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    CoreV1Api(admin).create_namespace({"metadata": {"name": name}})
    good = chart_release(tmp_path / "good")
    publish_dir(dev_worker, repository, "1.0.0", good)
    path = tmp_path / "envs.yaml"
    path.write_text(f"""environments:
  - name: {name}
    repository: {repository}
    namespace: {name}
    semver: ">=1.0.0"
    interval: 2s
    helm: {{chart: charts/shop, values-files: [values/staging.yaml]}}
""")
    started = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(path), "--as", "carol")
    assert started.returncode == 0, started.stderr
    handle = dev_env.client.get_workflow_handle(f"env/{name}")
    await wait_status(handle, lambda s: s.state.last_applied is not None, timeout=60, what="1.0.0 applied")
    bad = chart_release(tmp_path / "bad")
    (bad / "charts" / "shop" / "templates" / "configmap.yaml").write_text(
        '{{ fail "the database URL is not set for this environment" }}\n'
    )
    publish_dir(dev_worker, repository, "1.1.0", bad)
    status = await wait_status(
        handle,
        lambda s: any(e.type == "ReconcileFailed" for e in s.state.events),
        timeout=60,
        what="the failed render on the record",
    )
    failed = next(e for e in status.state.events if e.type == "ReconcileFailed")
    assert failed.version == "1.1.0" and failed.message.startswith("1.1.0: RenderFailed")
    assert "the database URL is not set for this environment" in failed.message
    assert "shop/templates/configmap.yaml" in failed.message
    assert status.state.last_applied is not None and status.state.last_applied.version == "1.0.0"
    config = CoreV1Api(admin).read_namespaced_config_map(f"{name}-config", name)  # release-name: the env name
    assert config.data["greeting"] == "hello-staging"  # what it ran, it still runs
