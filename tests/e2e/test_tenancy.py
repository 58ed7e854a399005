"""Tenancy refusals through the EnvironmentWorkflow (real Temporal dev server, registry and API server): an unknown
cluster and an out-of-bounds bundle are recorded as ReconcileFailed, once, and never retried."""

from __future__ import annotations

from typing import Any

import kubernetes
from kubernetes.client import CoreV1Api
from temporalio.testing import WorkflowEnvironment

from ferry.settings import Settings
from tests.e2e.test_environment import _names, _spec
from tests.kit.environments import app_manifests, publish, start_environment, wait_status


async def _reconcile_attempts(handle: Any) -> list[int]:
    attempts = []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_started_event_attributes"):
            attempts.append(event.activity_task_started_event_attributes.attempt)
    return attempts


async def test_unknown_cluster_and_out_of_bounds_bundle_are_refused_on_the_record(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    core = CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    queue = dev_worker.temporal.task_queue

    name, ns, repo = _names()
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("api"))
    handle = await start_environment(dev_env.client, queue, _spec(dev_worker, name, ns, repo, cluster="prod-eu"))
    status = await wait_status(
        handle, lambda s: any(e.type == "ReconcileFailed" for e in s.state.events), what="unknown cluster recorded"
    )
    failed = next(e for e in status.state.events if e.type == "ReconcileFailed")
    assert "UnknownCluster" in failed.message and "'prod-eu'" in failed.message
    assert set(await _reconcile_attempts(handle)) == {1}  # non-retryable: one attempt per iteration
    await handle.terminate("test done")

    name, ns, repo = _names()
    other = f"{ns}-prod"
    for namespace in (ns, other):
        core.create_namespace({"metadata": {"name": namespace}})
    intruder = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "api-config", "namespace": other},
        "data": {"message": "written by another environment"},
    }
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", [*app_manifests("api"), intruder])
    handle = await start_environment(dev_env.client, queue, _spec(dev_worker, name, ns, repo))
    status = await wait_status(
        handle, lambda s: any(e.type == "ReconcileFailed" for e in s.state.events), what="out-of-bounds bundle recorded"
    )
    failed = next(e for e in status.state.events if e.type == "ReconcileFailed")
    assert "OutOfBounds" in failed.message and f"ConfigMap/{other}/api-config" in failed.message
    assert status.state.last_applied is None
    for namespace in (ns, other):  # nothing of the bundle, not even its own objects
        assert [
            c.metadata.name
            for c in core.list_namespaced_config_map(namespace).items
            if c.metadata.name != "kube-root-ca.crt"
        ] == []
    assert set(await _reconcile_attempts(handle)) == {1}
    await handle.terminate("test done")


async def test_a_running_environment_from_before_clusters_by_name_keeps_working(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """Its state names a kubeconfig path: used only as a key into the worker's clusters file (here the implicit
    one, `default` = FERRY_KUBECONFIG), never loaded as such; a path no entry lists is UnknownCluster."""
    from ferry.environment import EnvironmentInput, EnvironmentState
    from ferry.spec import EnvironmentSpec
    from workflows.environment import EnvironmentWorkflow

    core = CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    queue = dev_worker.temporal.task_queue
    outcomes = {}
    for path in (str(dev_worker.kubeconfig), "/var/cache/ferry/planted/kubeconfig.yaml"):
        name, ns, repo = _names()
        core.create_namespace({"metadata": {"name": ns}})
        publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("api"))
        legacy = _spec(dev_worker, name, ns, repo).model_dump(mode="json", by_alias=True)
        legacy["cluster"] = {"kubeconfig": path, "context": None}  # as an older build stored it
        state = EnvironmentState.model_validate({"spec": legacy})
        assert isinstance(state.spec, EnvironmentSpec) and state.spec.cluster.kubeconfig == path
        handle = await dev_env.client.start_workflow(
            EnvironmentWorkflow.run, EnvironmentInput(state=state), id=f"env/{name}", task_queue=queue
        )
        outcomes[path] = await wait_status(
            handle, lambda s: s.state.health.status == "Healthy" or bool(s.state.last_error), what="an outcome"
        )
        await handle.terminate("test done")
    assert outcomes[str(dev_worker.kubeconfig)].state.health.status == "Healthy"
    failed = outcomes["/var/cache/ferry/planted/kubeconfig.yaml"].state.last_error
    assert failed.startswith("UnknownCluster") and "/var/cache/ferry/planted/kubeconfig.yaml" in failed


async def test_only_its_own_workflow_acts_for_an_environment_and_raw_updates_follow_the_rules(
    dev_worker: Settings, dev_env: WorkflowEnvironment, kube_server: Any
) -> None:
    """Anyone who may start workflows can start one whose state claims another environment's name (its bounds,
    inventory and lease are keyed by the name): refused before anything is read or written. And an Update sent
    without `ferry env apply` is held to the same rules as a spec people type (no kubeconfig path, namespace
    inside namespaces)."""
    from temporalio.client import WorkflowUpdateFailedError

    from ferry.environment import EnvironmentInput, EnvironmentState, SpecUpdate
    from ferry.spec import EnvironmentSpec
    from tests.kit.stack import STARTED
    from workflows.environment import EnvironmentWorkflow

    core = CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
    queue = dev_worker.temporal.task_queue
    victim, ns, repo = _names()
    core.create_namespace({"metadata": {"name": ns}})
    publish(dev_worker, f"{dev_worker.registry.default}/{repo}", "1.0.0", app_manifests("api"))
    spec = _spec(dev_worker, victim, ns, repo)
    imposter = f"env/imposter-{victim}"
    STARTED.append((queue, imposter))
    handle = await dev_env.client.start_workflow(
        EnvironmentWorkflow.run, EnvironmentInput(state=EnvironmentState(spec=spec)), id=imposter, task_queue=queue
    )
    status = await wait_status(
        handle, lambda s: any(e.type == "ReconcileFailed" for e in s.state.events), what="the imposter refused"
    )
    failed = next(e for e in status.state.events if e.type == "ReconcileFailed")
    assert f"may not act for environment {victim}" in failed.message and "OutOfBounds" in failed.message
    assert [
        c.metadata.name for c in core.list_namespaced_config_map(ns).items if c.metadata.name != "kube-root-ca.crt"
    ] == []  # nothing written in the victim's namespace
    await handle.terminate("test done")

    handle = await start_environment(dev_env.client, queue, spec)
    await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="the real one deployed")
    for sneaky, named in (
        (spec.model_dump(by_alias=True) | {"cluster": {"name": "default", "kubeconfig": "/etc/x"}}, "kubeconfig"),
        (spec.model_dump(by_alias=True) | {"namespaces": ["elsewhere"]}, "namespaces"),
    ):
        raw = SpecUpdate(spec=EnvironmentSpec.model_validate(sneaky), by="mallory")  # decodes: persisted rules
        try:
            await handle.execute_update(EnvironmentWorkflow.update_spec, raw)
        except WorkflowUpdateFailedError as err:
            assert named in str(err.cause), err.cause
        else:
            raise AssertionError(f"a raw update naming {named} was accepted")
    status = await handle.query(EnvironmentWorkflow.status)
    assert status.state.spec.cluster.kubeconfig is None and status.state.spec.namespaces == []
    await handle.terminate("test done")
