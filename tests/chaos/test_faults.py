"""Faults that lose nothing, on the production topology (Temporal on PostgreSQL, two `ferry worker` processes).

While 120 environments roll out a release and a promotion waits for approval: kill -9 one worker, kill -9 and
restart the Temporal server, restart PostgreSQL, stop the registry and the API server for 20 s each. Then every
environment reaches its desired digest, no workflow failed, the promotion completes on one approval recorded once,
nothing was applied that was not desired (read from the histories), and the time to converge after the last fault
is printed with the other figures as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import kubernetes
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from devstack.kube.session import KubeServer
from devstack.registry import Registry
from devstack.temporal_cluster import TemporalCluster
from ferry.environment import LenientPayload
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.spec import EnvironmentSpec
from tests.kit.environments import all_on_digest, config_map, publish, start_environment
from tests.kit.processes import Workers, cpu_seconds, eventually, worker_env
from tests.kit.stack import settings_for
from workflows.promotion import PromotionWorkflow

FLEET = int(os.environ.get("FERRY_CHAOS_ENVIRONMENTS", "120"))
OUTAGE = 20.0  # seconds the registry and the API server are down
# NB: environments notice the new release at their next interval, so with 60 s the rollout is spread over the
# whole fault sequence (~55 s) instead of finishing before the first fault.
INTERVAL = "60s"
SETTLED = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CONTINUED_AS_NEW)


async def _histories(client: Client, workflow_id: str) -> list[Any]:
    """Every run's history of one workflow id (environments continue as new)."""
    runs = [wf async for wf in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    return [await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history() for run in runs]


def _reconciled_digests(history: Any) -> list[tuple[int, str]]:
    """(event id, digest) of every reconcile_environment that was scheduled to apply (not a dry run)."""
    found = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = event.activity_task_scheduled_event_attributes
        if attrs.activity_type.name != "reconcile_environment":
            continue
        payload = json.loads(attrs.input.payloads[0].data)
        if not payload.get("dry_run"):
            found.append((event.event_id, payload["digest"]))
    return found


async def test_faults_lose_nothing(
    cluster: TemporalCluster, cluster_client: Client, own_registry: Registry, own_kube: KubeServer, tmp_path: Path
) -> None:
    client, tq, suffix = cluster_client, f"chaos-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6]
    workers = Workers(tmp_path / "workers", worker_env(cluster.address, own_registry, own_kube, tq, tmp_path))
    workers.root.mkdir()
    figures: dict[str, Any] = {"environments": FLEET, "workers": 2, "temporal": "cluster (PostgreSQL)"}
    try:
        for name in ("worker-1", "worker-2"):
            workers.start(name)
        settings = settings_for(own_registry, tmp_path)
        repository = f"{own_registry.host}/chaos/app-{suffix}"
        digests = {"1.0.0": publish(settings, repository, "1.0.0", config_map("1.0.0"))}
        core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(own_kube.kubeconfig)))
        names = [f"c{suffix}-{i:03d}" for i in range(FLEET)]
        production = f"p{suffix}"
        for ns in [*names, production]:
            core.create_namespace({"metadata": {"name": ns}})

        server_pid = cluster.procs["temporal-server"].pid
        postgres_pid = cluster.postgres.proc.pid  # type: ignore[union-attr]
        cpu_before = cpu_seconds(server_pid), cpu_seconds(postgres_pid)
        started = time.monotonic()
        common = {"repository": repository, "interval": INTERVAL, "health_timeout": "60s"}
        gate = asyncio.Semaphore(20)

        async def start(spec: EnvironmentSpec) -> WorkflowHandle[Any, Any]:
            async with gate:
                return await start_environment(client, tq, spec)

        fleet = list(
            await asyncio.gather(
                *(
                    start(EnvironmentSpec.model_validate({**common, "name": n, "namespace": n, "semver": ">=1.0.0"}))
                    for n in names
                )
            )
        )
        prod = await start_environment(
            client,
            tq,
            EnvironmentSpec.model_validate(
                {
                    **common,
                    "name": production,
                    "namespace": production,
                    "version": "1.0.0",
                    "approval": {"required": True, "approvers": ["alice", "bob"]},
                }
            ),
        )
        await eventually(lambda: all_on_digest([*fleet, prod], digests["1.0.0"]), 600, "every environment on 1.0.0")
        wall = time.monotonic() - started
        figures["fleet_apply_seconds"] = round(wall, 1)
        figures["server_cpu_percent_during_apply"] = round(100 * (cpu_seconds(server_pid) - cpu_before[0]) / wall)
        figures["postgres_cpu_percent_during_apply"] = round(100 * (cpu_seconds(postgres_pid) - cpu_before[1]) / wall)

        digests["1.1.0"] = publish(settings, repository, "1.1.0", config_map("1.1.0"))  # the fleet starts moving
        promotion = await client.start_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment=production, version="1.1.0", requested_by="carol", reason="chaos"),
            id=promotion_workflow_id(production, "1.1.0"),
            task_queue=tq,
        )

        async def awaiting() -> bool:
            return bool((await promotion.query(PromotionWorkflow.status)).phase == "AwaitingApproval")

        await eventually(awaiting, 60, "promotion awaiting approval")

        # ------------------------------------------------------------------ the faults, while the fleet rolls out
        faults: dict[str, float] = {}
        t = time.monotonic()
        workers.kill("worker-1")
        faults["worker_killed"] = 0.0
        await asyncio.sleep(3)
        cluster.procs["temporal-server"].kill()
        cluster.procs["temporal-server"].wait()
        await asyncio.sleep(2)
        begin = time.monotonic()
        await asyncio.to_thread(cluster.start_server, 120)
        faults["server_restart_to_serving_seconds"] = round(time.monotonic() - begin, 1)
        await asyncio.sleep(3)
        begin = time.monotonic()
        await asyncio.to_thread(cluster.postgres.stop)
        await asyncio.to_thread(cluster.postgres.start, 60)
        faults["postgres_restart_seconds"] = round(time.monotonic() - begin, 1)
        await asyncio.sleep(3)
        await asyncio.to_thread(own_registry.stop)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(own_registry.start)
        await asyncio.to_thread(own_kube.cluster.stop_apiserver)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(own_kube.cluster.start_apiserver, 120)
        last_fault = time.monotonic()
        figures["fault_sequence_seconds"] = round(last_fault - t, 1)
        figures["faults"] = faults

        # ------------------------------------------------------------------------------------------ the approval
        accepted = await promotion.execute_update(
            PromotionWorkflow.approve_update, LenientPayload({"approver": "alice", "comment": "after the storm"})
        )
        assert accepted.accepted, accepted
        fleet_on_new = False

        async def converged() -> bool:
            nonlocal fleet_on_new
            fleet_on_new = fleet_on_new or await all_on_digest(fleet, digests["1.1.0"])
            return fleet_on_new and await all_on_digest([prod], digests["1.1.0"])

        await eventually(converged, 600, "every environment on 1.1.0 after the faults")
        figures["converge_after_last_fault_seconds"] = round(time.monotonic() - last_fault, 1)
        result = await promotion.result()
        assert result.outcome == "succeeded" and result.approved_by == ["alice"], result
        assert [(d.by, d.accepted) for d in result.decisions] == [("alice", True)], result.decisions

        # ------------------------------------------------------------------------------- what the cluster holds
        for ns in [*names, production]:
            assert core.read_namespaced_config_map("app-config", ns).data == {"version": "1.1.0"}, ns

        # ------------------------------------------------------------------------- no workflow failed, anywhere
        seen = {wf.id: wf.status async for wf in client.list_workflows(f"TaskQueue = '{tq}'")}
        unsettled = {wid: status for wid, status in seen.items() if status not in SETTLED}
        assert not unsettled, unsettled
        assert len({w for w in seen if w.startswith("env/")}) == FLEET + 1

        # --------------------------------------------- from the histories: applied only what was desired, once
        allowed = set(digests.values())
        task_failures = 0
        runs = 0
        for name in names:
            for history in await _histories(client, f"env/{name}"):
                runs += 1
                undesired = [d for _, d in _reconciled_digests(history) if d not in allowed]
                assert not undesired, (name, undesired)
                task_failures += sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)
        promotion_history = await promotion.fetch_history()
        approvals = [
            e
            for e in promotion_history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
            or (
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
                and e.workflow_execution_signaled_event_attributes.signal_name == "approve"
            )
        ]
        assert len(approvals) == 1, approvals
        approved_at = approvals[0].event_time.ToDatetime()
        for history in await _histories(client, f"env/{production}"):
            runs += 1
            task_failures += sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)
            by_id = {e.event_id: e for e in history.events}
            for event_id, digest in _reconciled_digests(history):
                assert digest in allowed, digest
                if digest == digests["1.1.0"]:  # production moved only after the one approval
                    assert by_id[event_id].event_time.ToDatetime() > approved_at
        assert task_failures == 0, f"{task_failures} workflow task failures in the environments' histories"
        figures["environment_runs_checked"] = runs
        print("\nchaos: " + json.dumps(figures))
    finally:
        workers.stop_all()
