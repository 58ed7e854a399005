"""Through the console script: a protected spec change of an approval-required environment waits, is approved
with `ferry env approve --key`, and `ferry audit --verify` re-verifies the signed decisions in the histories."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from temporalio.testing import WorkflowEnvironment

from ferry.settings import Settings
from tests.kit.environments import app_manifests, ferry, publish


def keypair(tmp: Path, name: str) -> tuple[Path, str]:
    path = tmp / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path, path.with_suffix(".pub").read_text().strip()


async def test_protected_spec_change_approved_with_a_key_and_audit_verifies(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, repository = f"gate-{suffix}", f"{dev_worker.registry.default}/team/gate-{suffix}"
    kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))).create_namespace(
        {"metadata": {"name": name}}
    )
    publish(dev_worker, repository, "1.0.0", app_manifests("gate"))
    alice_key, alice = keypair(tmp_path, "alice")
    bob_key, bob = keypair(tmp_path, "bob")

    def spec(required: bool) -> Path:
        path = tmp_path / f"env-{required}.yaml"
        path.write_text(f"""environments:
  - name: {name}
    repository: {repository}
    namespace: {name}
    version: 1.0.0
    interval: 2s
    approval:
      required: {str(required).lower()}
      approvers:
        - {{name: alice, key: "{alice}"}}
        - {{name: bob, key: "{bob}"}}
""")
        return path

    started = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec(True)), "--as", "carol")
    assert started.returncode == 0 and f"{name}: started" in started.stdout, started.stderr
    pending = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec(False)), "--as", "mallory")
    assert pending.returncode == 0, pending.stderr
    assert "pending approval" in pending.stdout and "approval.required: true -> false" in pending.stdout
    assert f"ferry env approve {name} --key" in pending.stdout
    status = await ferry(dev_worker, tmp_path, "status", name)
    assert "spec pending" in status.stdout and "by mallory" in status.stdout

    unsigned = await ferry(dev_worker, tmp_path, "env", "approve", name, "--as", "bob")
    assert (
        unsigned.returncode == 1 and "requires signed approvals" in unsigned.stderr and "(recorded)" in unsigned.stderr
    )
    wrong_key = await ferry(dev_worker, tmp_path, "env", "approve", name, "--as", "bob", "--key", str(alice_key))
    assert wrong_key.returncode == 1 and "is listed for alice, but the statement names bob" in wrong_key.stderr
    approved = await ferry(
        dev_worker,
        tmp_path,
        "env",
        "approve",
        name,
        "--as",
        "bob",
        "--key",
        str(bob_key),
        "--comment",
        "approval moves to the change board",
    )
    assert approved.returncode == 0, approved.stderr
    assert "spec change applied: approval.required: true -> false" in approved.stdout
    none_left = await ferry(dev_worker, tmp_path, "env", "approve", name, "--as", "bob", "--key", str(bob_key))
    assert none_left.returncode == 1 and "no spec change pending" in none_left.stderr

    audit = await ferry(dev_worker, tmp_path, "audit", name, "--since", "1h")
    assert audit.returncode == 0, audit.stderr
    assert "spec change pending" in audit.stdout and "spec updated" in audit.stdout
    assert "approved by bob (SHA256:" in audit.stdout and "by mallory" in audit.stdout
