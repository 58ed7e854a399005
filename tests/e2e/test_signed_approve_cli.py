"""`ferry approve|reject --key` against a running promotion whose environment lists approvers' SSH keys: the
command reads the run and digest from the promotion, signs, and sends through the update; `--print` output is sent
with the real `temporal` CLI command the hint names. Real dev server, registry, Kubernetes API and ssh-keygen."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from temporalio.testing import WorkflowEnvironment

from devstack.procs import script_path
from ferry.promotion import PromotionResult, promotion_workflow_id
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.e2e.test_env_cli import ferry
from tests.kit.environments import app_manifests, publish, start_environment, wait_status


def keygen(tmp: Path, name: str) -> Path:
    path = tmp / f"id_{name}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@laptop", "-f", str(path)], check=True)
    return path


async def test_signed_reject_and_approve_through_the_console_script(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name = f"prd-{suffix}"
    repository = f"{dev_worker.registry.default}/team/signed-{suffix}"
    api = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    for version, image in (("1.0.0", "nginx:1.25"), ("1.1.0", "nginx:1.26")):
        publish(dev_worker, repository, version, app_manifests("shop", image=image), "ci-bot")
    keys = {who: keygen(tmp_path, who) for who in ("alice", "bob")}
    approvers = [{"name": who, "key": key.with_name(key.name + ".pub").read_text()} for who, key in keys.items()]
    spec = EnvironmentSpec.model_validate(
        {
            "name": name,
            "namespace": name,
            "repository": repository,
            "version": "1.0.0",
            "interval": "2s",
            "health-timeout": "20s",
            "approval": {"required": True, "approvers": approvers},
        }
    )
    env = await start_environment(dev_env.client, dev_worker.temporal.task_queue, spec)
    await wait_status(env, lambda s: s.state.health.status == "Healthy", what="production healthy on 1.0.0")
    workflow_id = promotion_workflow_id(name, "1.1.0")

    # a rejection signed by bob, printed, and sent with the temporal CLI command the hint names
    requested = await ferry(dev_worker, tmp_path, "promote", name, "1.1.0", "--as", "carol")
    assert requested.returncode == 0 and "(AwaitingApproval)" in requested.stdout, requested.stderr
    unsigned = await ferry(dev_worker, tmp_path, "approve", name, "1.1.0", "--as", "alice")
    assert unsigned.returncode == 1 and "requires signed approvals" in unsigned.stderr, unsigned.stderr
    misbound = await ferry(dev_worker, tmp_path, "approve", name, "1.1.0", "--as", "bob", "--key", str(keys["alice"]))
    assert misbound.returncode == 1 and "listed for alice, but the statement names bob" in misbound.stderr
    printed = await ferry(
        dev_worker,
        tmp_path,
        "reject",
        name,
        "1.1.0",
        "--as",
        "bob",
        "--comment",
        "not today",
        "--key",
        str(keys["bob"]),
        "--print",
    )
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "approval.json").write_text(printed.stdout)
    hinted = re.search(r"then: (temporal workflow update execute .*?--input-file approval\.json)", printed.stderr)
    assert hinted, printed.stderr
    temporal = script_path("temporal")
    assert temporal
    # NB: not subprocess.run: the update waits for the worker, which runs on this test's event loop
    sent = await asyncio.create_subprocess_exec(
        temporal,
        *shlex.split(hinted.group(1))[1:],
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(sent.communicate(), timeout=60)
    assert sent.returncode == 0, out.decode() + err.decode()
    first = await dev_env.client.get_workflow_handle(workflow_id, result_type=PromotionResult).result()
    assert first.outcome == "rejected" and first.reason == "not today"

    # a new promotion run: its run id and digest come from the promotion itself, alice signs and sends
    again = await ferry(dev_worker, tmp_path, "promote", name, "1.1.0", "--as", "carol")
    assert again.returncode == 0, again.stderr
    # `ferry status` lists the running promotion (found through Visibility, eventually consistent) and who may
    # approve it
    for _ in range(40):
        shown = await ferry(dev_worker, tmp_path, "status", name)
        assert shown.returncode == 0, shown.stderr
        if "promotion     1.1.0" in shown.stdout:
            break
        await asyncio.sleep(0.5)
    lines = shown.stdout.splitlines()
    promotion = next((line for line in lines if line.startswith("promotion     1.1.0 sha256:")), None)
    assert promotion and "AwaitingApproval (requested by carol, published by ci-bot" in promotion, shown.stdout
    assert "  may approve: alice, bob (signed; not the publisher)" in lines, shown.stdout
    approved = await ferry(
        dev_worker,
        tmp_path,
        "approve",
        name,
        "1.1.0",
        "--as",
        "alice",
        "--comment",
        "ship it",
        "--key",
        str(keys["alice"]),
    )
    assert approved.returncode == 0, approved.stderr
    assert f"approve by alice accepted for {name} 1.1.0, signed by SHA256:" in approved.stdout
    result = await dev_env.client.get_workflow_handle(workflow_id, result_type=PromotionResult).result()
    assert result.outcome == "succeeded" and result.approved_by == ["alice"]
    await env.terminate("test done")
