"""A worker upgrade under load, on the production topology (Temporal on PostgreSQL), as docs/upgrades.md runs it.

120 environments (idle: a 1-hour interval) and a production environment whose promotion waits for approval run on
build A (two `ferry worker` processes). A release is published; build B (two more processes) starts beside A and
`ferry upgrade drain --to B` makes it current and wakes the fleet, which moves to B and applies the release there
while the promotion still waits on A. The promotion is approved and finishes on A; once `ferry upgrade status --build
A` counts nothing on A, A's workers stop. Then every environment is on the release, each on B, the promotion
succeeded, and no workflow task failed. The figures print as one JSON line.
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
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client

from devstack.kube.session import KubeServer
from devstack.registry import Registry
from devstack.temporal_cluster import TemporalCluster
from ferry.environment import LenientPayload
from ferry.promotion import PromotionInput, promotion_workflow_id
from ferry.spec import EnvironmentSpec
from tests.kit.environments import all_on_digest, config_map, ferry, publish, start_environment
from tests.kit.processes import Workers, build_env, eventually, rss_mib, start_fleet, worker_env
from tests.kit.stack import settings_for
from workflows.promotion import PromotionWorkflow

FLEET = int(os.environ.get("FERRY_CHAOS_ENVIRONMENTS", "120"))
IDLE = "1h"  # only the drain's wake moves an environment within the test
WORKERS_PER_BUILD = 2  # as docker-compose.yml's replicas


async def _build(client: Client, workflow_id: str) -> str:
    described = await client.get_workflow_handle(workflow_id).describe()
    return str(described.raw_description.workflow_execution_info.versioning_info.deployment_version.build_id)


async def _task_failures(client: Client, workflow_id: str) -> list[Any]:
    """Failed workflow tasks of every run, but a signal landing on a continue-as-new task (retried with it)."""
    failures = []
    async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
        history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
        failures += [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            and e.workflow_task_failed_event_attributes.cause
            != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
        ]
    return failures


async def test_an_upgrade_under_load_moves_the_fleet_and_finishes_the_promotion(
    cluster: TemporalCluster, cluster_client: Client, own_registry: Registry, own_kube: KubeServer, tmp_path: Path
) -> None:
    client, tq, suffix = cluster_client, f"upgrade-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6]
    deployment = f"ferry-{suffix}"
    settings = settings_for(own_registry, tmp_path)
    settings.temporal.address, settings.temporal.task_queue = cluster.address, tq
    workers = Workers(tmp_path / "workers", worker_env(cluster.address, own_registry, own_kube, tq, tmp_path))
    workers.root.mkdir()
    figures: dict[str, Any] = {
        "environments": FLEET,
        "workers_per_build": WORKERS_PER_BUILD,
        "temporal": "cluster (PostgreSQL)",
    }

    async def start_build(build: str) -> None:
        await asyncio.gather(
            *(
                asyncio.to_thread(workers.start, f"worker-{build}{n}", 60, build_env(deployment, build))
                for n in range(WORKERS_PER_BUILD)
            )
        )

    async def upgrade(*args: str) -> Any:
        done = await ferry(settings, tmp_path, "upgrade", *args, "--deployment", deployment)
        assert done.returncode == 0, f"ferry upgrade {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    try:
        await start_build("A")
        await upgrade("drain", "--to", "A", "--timeout", "2m")
        repository = f"{own_registry.host}/upgrade/app-{suffix}"
        digests = {"1.0.0": publish(settings, repository, "1.0.0", config_map("1.0.0"))}
        core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(own_kube.kubeconfig)))
        names = [f"u{suffix}-{i:03d}" for i in range(FLEET)]
        production = f"p{suffix}"
        for ns in [*names, production]:
            core.create_namespace({"metadata": {"name": ns}})
        common = {"repository": repository, "interval": IDLE, "health_timeout": "60s"}
        fleet = await start_fleet(
            client,
            tq,
            [EnvironmentSpec.model_validate({**common, "name": n, "namespace": n, "semver": ">=1.0.0"}) for n in names],
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
                    "approval": {"required": True, "approvers": ["alice"]},
                }
            ),
        )
        everything = [*fleet, prod]
        await eventually(lambda: all_on_digest(everything, digests["1.0.0"]), 600, "every environment on 1.0.0")

        digests["1.1.0"] = publish(settings, repository, "1.1.0", config_map("1.1.0"))  # nobody looks for an hour
        promotion = await client.start_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment=production, version="1.1.0", requested_by="carol", reason="upgrade under load"),
            id=promotion_workflow_id(production, "1.1.0"),
            task_queue=tq,
        )

        async def awaiting() -> bool:
            return bool((await promotion.query(PromotionWorkflow.status)).phase == "AwaitingApproval")

        await eventually(awaiting, 60, "promotion awaiting approval")
        assert await _build(client, promotion.id) == "A"

        # ------------------------------------------------------------- B beside A, made current, the fleet woken
        started = time.monotonic()
        await start_build("B")
        drained = json.loads((await upgrade("drain", "--to", "B", "--timeout", "5m", "--json")).stdout)
        figures["drain_seconds"] = drained["seconds"]
        figures["woken"], figures["wake_rounds"] = drained["woken"], drained["rounds"]
        assert drained["older_builds"]["A"]["PromotionWorkflow"] == 1, drained  # the one thing A still runs
        assert drained["older_builds"]["A"]["EnvironmentWorkflow"] == 0, drained

        # ------------------------------------------- the promotion finishes on A; A's workers stop once it is empty
        accepted = await promotion.execute_update(
            PromotionWorkflow.approve_update, LenientPayload({"approver": "alice", "comment": "mid-upgrade"})
        )
        assert accepted.accepted, accepted
        result = await asyncio.wait_for(promotion.result(), timeout=300)
        assert result.outcome == "succeeded" and result.approved_by == ["alice"], result
        await upgrade("status", "--build", "A", "--wait", "2m")
        for n in range(WORKERS_PER_BUILD):
            workers.stop(f"worker-A{n}")
        figures["a_stopped_after_seconds"] = round(time.monotonic() - started, 1)

        # -------------------------------------------------------------- B alone: everything on the release, on B
        await eventually(lambda: all_on_digest(everything, digests["1.1.0"]), 600, "every environment on 1.1.0")
        figures["converged_after_seconds"] = round(time.monotonic() - started, 1)
        figures["rss_mib"] = {
            "temporal_server": rss_mib(cluster.procs["temporal-server"].pid),
            **{name: rss_mib(proc.pid) for name, proc in workers.procs.items() if proc.poll() is None},
        }
        for ns in [*names, production]:
            assert core.read_namespaced_config_map("app-config", ns).data == {"version": "1.1.0"}, ns
        builds = await asyncio.gather(*(_build(client, env.id) for env in everything))
        assert set(builds) == {"B"}, {env.id: b for env, b in zip(everything, builds, strict=True) if b != "B"}
        promotion_history = await promotion.fetch_history()
        assert {
            e.workflow_task_completed_event_attributes.deployment_version.build_id
            for e in promotion_history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        } == {"A"}
        gate = asyncio.Semaphore(16)

        async def failures(workflow_id: str) -> int:
            async with gate:
                return len(await _task_failures(client, workflow_id))

        failed = sum(await asyncio.gather(*(failures(env.id) for env in everything)))
        assert failed == 0, f"{failed} workflow task failures in the environments' histories"
        print("\nupgrade: " + json.dumps(figures))
    finally:
        workers.stop_all()
