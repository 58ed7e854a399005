"""`ferry env apply` on a fleet: concurrent and idempotent Update-with-Start, each failure named, and an
environment recreated after termination keeps its holds and known-good history (the new run reads the last run's
record itself when the CLI cannot)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from cli.environments import apply_environments
from ferry.environment import EnvironmentInput, EnvironmentState
from ferry.reconcile import VersionRef
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, publish, wait_status
from workflows.environment import EnvironmentWorkflow


async def test_concurrent_apply_is_idempotent_and_names_each_failure(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    client, queue = dev_env.client, dev_worker.temporal.task_queue
    suffix = uuid.uuid4().hex[:6]
    repository = f"{dev_worker.registry.default}/team/fleet-{suffix}"
    publish(dev_worker, repository, "1.0.0", app_manifests("fleet", configmap=True)[2:])  # one ConfigMap
    core = CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    for i in range(2):  # NB: the two environments waited for below apply, each into its own namespace (one
        core.create_namespace({"metadata": {"name": f"f{i}-{suffix}"}})  # environment never takes over another's)
    specs = [
        EnvironmentSpec.model_validate(
            {
                "name": f"f{i}-{suffix}",
                "repository": repository,
                "namespace": f"f{i}-{suffix}",
                "version": "1.0.0",
                "interval": "1h",
                "prune": False,
            }
        )
        for i in range(12)
    ]
    first = await apply_environments(client, specs, queue, by="ci")
    assert [r["action"] for r in first] == ["started"] * 12, first
    again = await apply_environments(client, specs, queue, by="ci")
    assert [r["action"] for r in again] == ["unchanged"] * 12, again
    for spec in specs[:2]:
        await wait_status(
            client.get_workflow_handle(f"env/{spec.name}"),
            lambda s: s.state.last_applied is not None,
            what=f"{spec.name} applied",
        )

    # an environment whose last run ended and whose status nobody can read (no worker on its queue): started all
    # the same (the new run reads the last run's record from its memo itself), beside the others
    lost = EnvironmentSpec.model_validate({"name": f"lost-{suffix}", "repository": repository, "version": "1.0.0"})
    orphan = await client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(state=EnvironmentState(spec=lost)),
        id=f"env/{lost.name}",
        task_queue=f"nobody-{suffix}",
    )
    await orphan.terminate("gone")
    mixed = await apply_environments(client, [*specs[:3], lost], queue, by="ci")
    assert [r["action"] for r in mixed[:3]] == ["unchanged"] * 3
    assert mixed[3]["action"] == (
        "started (the last run's status cannot be read: the new run recovers its record from the last run's memo)"
    ), mixed[3]
    # NB: its only earlier run was on another queue, never Ferry's: it held nothing Ferry applied, so the new run
    # starts as declared
    status = await wait_status(
        client.get_workflow_handle(f"env/{lost.name}"),
        lambda s: s.state.iterations >= 1,
        what="the new run reconciling",
    )
    assert not status.state.suspended and not [e for e in status.state.events if e.type == "RecordRecovered"]
    for spec in [*specs, lost]:
        await client.get_workflow_handle(f"env/{spec.name}").terminate("test done")


async def test_recreated_environment_keeps_holds_and_known_good_history(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    client, queue = dev_env.client, dev_worker.temporal.task_queue
    suffix = uuid.uuid4().hex[:6]
    repository = f"{dev_worker.registry.default}/team/keep-{suffix}"
    good = publish(dev_worker, repository, "1.0.0", app_manifests("keep", configmap=True)[2:])
    spec = EnvironmentSpec.model_validate(
        {
            "name": f"keep-{suffix}",
            "repository": repository,
            "semver": ">=1.0.0",
            "namespace": "default",
            "interval": "1h",
            "prune": False,
        }
    )
    ref = VersionRef(version="1.0.0", digest=good)
    handle = await client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(
            state=EnvironmentState(
                spec=spec,
                holds=["1.1.0"],
                good_history=[ref],
                last_known_good=ref,
                tags={"1.0.0": good},
                consumed_approvals=[f"promote/keep-{suffix}/1.1.0@run-1"],
            )
        ),
        id=f"env/{spec.name}",
        task_queue=queue,
    )
    await wait_status(handle, lambda s: s.state.last_applied is not None, what="applied")
    await handle.terminate("someone tried to shed the holds")
    result = await apply_environments(client, [spec], queue, by="mallory")
    assert result[0]["action"] == "started (from the last run's record: 1 hold(s), 1 known-good version(s))"
    state = (await client.get_workflow_handle(f"env/{spec.name}").query(EnvironmentWorkflow.status)).state
    assert state.holds == ["1.1.0"] and state.good_history == [ref] and state.tags["1.0.0"] == good
    assert state.consumed_approvals == [f"promote/keep-{suffix}/1.1.0@run-1"]
    # recreated on another repository: its 1.1.0 is another artifact, neither held nor bound; the rest is kept
    await client.get_workflow_handle(f"env/{spec.name}").terminate("moved to another repository")
    moved = spec.model_copy(update={"repository": f"{repository}-moved"})
    result = await apply_environments(client, [moved], queue, by="ci")
    assert result[0]["action"] == "started (from the last run's record: 0 hold(s), 1 known-good version(s))"
    state = (await client.get_workflow_handle(f"env/{spec.name}").query(EnvironmentWorkflow.status)).state
    assert state.holds == [] and state.tags == {} and state.good_history == [ref]
    await client.get_workflow_handle(f"env/{spec.name}").terminate("test done")


async def test_apply_with_no_worker_answering_names_each_environment(
    dev_worker: Settings, dev_env: WorkflowEnvironment, monkeypatch: Any
) -> None:
    """A queue no worker polls (or one busy worker behind a fleet): each environment's wait runs out on its own and
    is reported by name, not as a traceback that loses the other rows; the started workflows carry the spec."""
    import cli.environments

    monkeypatch.setattr(cli.environments, "APPLY_WAIT", timedelta(seconds=1))
    monkeypatch.setattr(cli.environments, "APPLY_WAITS", 2)
    client, suffix = dev_env.client, uuid.uuid4().hex[:6]
    repository = f"{dev_worker.registry.default}/team/idle-{suffix}"
    specs = [
        EnvironmentSpec.model_validate({"name": f"idle{i}-{suffix}", "repository": repository, "version": "1.0.0"})
        for i in range(3)
    ]
    rows = await apply_environments(client, specs, f"nobody-{suffix}", by="ci")
    assert [r["action"] for r in rows] == ["failed"] * 3, rows
    for spec, row in zip(specs, rows, strict=True):
        assert row["error"].startswith(f"environment {spec.name}: no worker on task queue 'nobody-{suffix}'"), row
        assert "within 2 x 1s" in row["error"] and "its workflow carries this spec" in row["error"]
        described = await client.get_workflow_handle(f"env/{spec.name}").describe()
        assert described.status == WorkflowExecutionStatus.RUNNING
        await client.get_workflow_handle(f"env/{spec.name}").terminate("test done")


async def test_apply_stops_when_cancelled(dev_worker: Settings, dev_env: WorkflowEnvironment) -> None:
    """Ctrl-C (a cancelled apply) stops every environment in flight, not after their retries run out: the SDK
    reports a cancelled Update-with-Start with the same error as a timed-out one."""
    suffix = uuid.uuid4().hex[:6]
    specs = [
        EnvironmentSpec.model_validate(
            {"name": f"stop{i}-{suffix}", "repository": "r.example/team/app", "version": "1.0.0"}
        )
        for i in range(2)
    ]
    task = asyncio.create_task(apply_environments(dev_env.client, specs, f"nobody-{suffix}", by="ci"))
    await asyncio.sleep(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    for spec in specs:
        with contextlib.suppress(Exception):
            await dev_env.client.get_workflow_handle(f"env/{spec.name}").terminate("test done")
