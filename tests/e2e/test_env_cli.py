"""The SRE commands through the console script, against the real dev server, registry and Kubernetes API server."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from temporalio.testing import WorkflowEnvironment

from devstack.registry import Registry
from ferry.promotion import PromotionResult
from ferry.settings import Settings
from tests.kit.environments import app_manifests, ferry, publish, wait_status


async def test_env_apply_list_status_diff_suspend_resume(
    dev_worker: Settings, dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, ns = f"cli-{suffix}", f"cli-{suffix}"
    repository = f"{registry.host}/team/cli-{suffix}"
    api = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    publish(dev_worker, repository, "1.0.0", app_manifests("web"))
    publish(dev_worker, repository, "1.1.0", app_manifests("web", image="nginx:1.26", configmap=False))
    spec = tmp_path / "environments.yaml"
    spec.write_text(
        f"environments:\n  - name: {name}\n    repository: {repository}\n    namespace: {ns}\n"
        f"    version: 1.0.0\n    interval: 2s\n"
    )
    applied = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec))
    assert applied.returncode == 0, applied.stderr
    assert f"{name}: started (env/{name})" in applied.stdout
    again = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec))
    assert f"{name}: unchanged" in again.stdout  # the same spec again: recorded, nothing changed

    for _ in range(100):
        status = await ferry(dev_worker, tmp_path, "status", name, "--json")
        data = json.loads(status.stdout)
        if data["state"]["health"]["status"] == "Healthy":
            break
        await asyncio.sleep(0.3)
    assert data["state"]["last_applied"]["version"] == "1.0.0"
    text = (await ferry(dev_worker, tmp_path, "status", name)).stdout
    assert "tracks        version 1.0.0" in text and "health        Healthy" in text

    listed = await ferry(dev_worker, tmp_path, "env", "list")
    assert any(line.split()[:2] == [name, "version"] for line in listed.stdout.splitlines())

    diff = await ferry(dev_worker, tmp_path, "diff", name, "--version", "1.1.0")
    assert diff.returncode == 0, diff.stderr
    assert f"update  Deployment/{ns}/web  .spec.template.spec.containers[name=app].image" in diff.stdout
    assert f"prune   ConfigMap/{ns}/web-config" in diff.stdout
    noop = await ferry(dev_worker, tmp_path, "diff", name)
    assert "no changes" in noop.stdout

    assert (await ferry(dev_worker, tmp_path, "suspend", name, "--as", "alice", "--reason", "freeze")).returncode == 0
    for _ in range(50):  # the suspend signal is handled asynchronously
        shown = (await ferry(dev_worker, tmp_path, "status", name)).stdout
        if "suspended     yes" in shown:
            break
        await asyncio.sleep(0.3)
    assert "suspended     yes" in shown
    assert (await ferry(dev_worker, tmp_path, "resume", name)).returncode == 0
    assert (await ferry(dev_worker, tmp_path, "reconcile", name)).returncode == 0

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"environments:\n  - name: {name}\n    repository: {repository}\n    semver: '>=banana'\n")
    refused = await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(bad))
    assert refused.returncode == 1 and f"environment {name}: semver:" in refused.stderr
    missing = await ferry(dev_worker, tmp_path, "status", "no-such-env")
    assert missing.returncode == 1 and "environment 'no-such-env'" in missing.stderr
    unknown = await ferry(dev_worker, tmp_path, "approve", name, "9.9.9", "--as", "alice")
    assert unknown.returncode == 1 and "no promotion of 9.9.9" in unknown.stderr
    await dev_env.client.get_workflow_handle(f"env/{name}").terminate("test done")


async def test_promote_approve_rollback_through_the_console_script(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    from tests.kit.promotion import make_world

    world = await make_world(dev_env.client, dev_worker, kube_server, publisher="alice")  # alice: publisher + approver
    env = world.production
    missing = await ferry(dev_worker, tmp_path, "promote", env, "9.9.9", "--as", "carol")
    assert missing.returncode == 1 and "9.9.9 to" in missing.stderr and "not a released version" in missing.stderr
    requested = await ferry(dev_worker, tmp_path, "promote", env, "1.1.0", "--as", "carol", "--reason", "train")
    assert requested.returncode == 0, requested.stderr
    assert f"promotion requested: promote/{env}/1.1.0 (AwaitingApproval)" in requested.stdout
    own = await ferry(dev_worker, tmp_path, "approve", env, "1.1.0", "--as", "alice")
    assert own.returncode == 1 and "alice published this release" in own.stderr and "(recorded)" in own.stderr
    approved = await ferry(dev_worker, tmp_path, "approve", env, "1.1.0", "--as", "bob", "--comment", "ok")
    assert approved.returncode == 0 and "approve by bob accepted" in approved.stdout, approved.stderr
    result = await world.client.get_workflow_handle(f"promote/{env}/1.1.0", result_type=PromotionResult).result()
    assert result.outcome == "succeeded"
    nowhere = await ferry(dev_worker, tmp_path, "rollback", env, "--to", "0.0.8", "--as", "bob")
    assert nowhere.returncode == 1 and "refused (0.0.8 is not a released version" in nowhere.stdout
    forward = await ferry(dev_worker, tmp_path, "rollback", env, "--to", "8.8.8", "--as", "bob")
    assert forward.returncode == 1 and "never goes forward" in forward.stdout
    back = await ferry(dev_worker, tmp_path, "rollback", env, "--as", "bob", "--reason", "latency")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "succeeded 1.1.0 -> 1.0.0" in back.stdout


async def test_env_list_from_visibility_matches_the_workflows_own_status(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    """A small fleet (pinned, tracking a range, suspended, one never applied): `ferry env list` from Visibility
    converges to exactly what each workflow's status query says (`--exact`); Visibility is eventually consistent."""
    suffix = uuid.uuid4().hex[:6]
    repository = f"{dev_worker.registry.default}/team/list-{suffix}"
    publish(dev_worker, repository, "1.0.0", app_manifests("list", configmap=True)[2:])  # one ConfigMap
    publish(dev_worker, repository, "1.1.0", app_manifests("list", configmap=True)[2:])
    names = [f"l{i}-{suffix}" for i in range(4)]
    tracks = ["version: 1.0.0", "semver: '>=1.0.0'", "version: 1.0.0", "version: 9.9.9"]
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    for name in names:  # NB: each its own namespace: an environment never takes over another's objects
        core.create_namespace({"metadata": {"name": name}})
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "environments:\n"
        + "".join(
            f"  - name: {n}\n    repository: {repository}\n    namespace: {n}\n    {t}\n    interval: 1h\n"
            f"    prune: false\n"
            for n, t in zip(names, tracks, strict=True)
        )
    )
    assert (await ferry(dev_worker, tmp_path, "env", "apply", "-f", str(spec))).returncode == 0

    def mine(out: str) -> list[dict[str, Any]]:
        return [row for row in json.loads(out) if row["name"] in names]

    # NB: waits on the four workflows' own status (`env list --exact` asks every environment of the session, some
    # on task queues no worker polls any more: 5 s each)
    handles = {n: dev_env.client.get_workflow_handle(f"env/{n}") for n in names}
    await wait_status(handles[names[2]], lambda s: s.state.last_applied is not None, 45, f"{names[2]} applied")
    assert (await ferry(dev_worker, tmp_path, "suspend", names[2], "--reason", "list test")).returncode == 0
    expected = {
        names[0]: ("version 1.0.0", "1.0.0", "Healthy"),
        names[1]: ("semver >=1.0.0", "1.1.0", "Healthy"),
        names[2]: ("version 1.0.0", "1.0.0", "Suspended"),
        names[3]: ("version 9.9.9", "", "Unknown"),
    }
    for name, (_, version, phase) in expected.items():
        await wait_status(
            handles[name],
            lambda s, v=version, p=phase: (
                s.state.phase == p and (s.state.last_applied.version if s.state.last_applied else "") == v
            ),
            60,
            f"{name} {phase}",
        )
    exact = mine((await ferry(dev_worker, tmp_path, "env", "list", "--exact", "--json")).stdout)
    assert {r["name"]: (r["tracking"], r["version"], r["phase"]) for r in exact} == expected, exact
    visible: list[dict[str, Any]] = []
    for _ in range(100):
        visible = mine((await ferry(dev_worker, tmp_path, "env", "list", "--json")).stdout)
        if visible == exact:
            break
        await asyncio.sleep(0.3)
    assert visible == exact and [r["name"] for r in visible] == sorted(names)
    table = (await ferry(dev_worker, tmp_path, "env", "list")).stdout.splitlines()
    assert table[0].split() == ["NAME", "TRACKS", "APPLIED", "PHASE"]
    assert [line.split() for line in table if line.startswith(names[1])] == [
        [names[1], "semver", ">=1.0.0", "1.1.0", "Healthy"]
    ]
    for name in names:
        await dev_env.client.get_workflow_handle(f"env/{name}").terminate("test done")
