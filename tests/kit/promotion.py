"""A promotion's world: a repository with 1.0.0 and 1.1.0, staging on >=1.0.0 and production pinned to 1.0.0 with SRE
approval, both healthy (on the real registry and cluster, or on stand-in activities); and the moves the promotion
tests make in it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import kubernetes
from temporalio.client import Client, WorkflowHandle

from ferry.environment import LenientPayload
from ferry.promotion import PromotionInput, RollbackInput, promotion_workflow_id
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, publish, start_environment, wait_phase, wait_status
from tests.kit.stand_ins import World as StandInWorld
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.rollback import RollbackWorkflow


@dataclass
class World:
    client: Client
    settings: Settings
    repository: str
    staging: str
    production: str
    digests: dict[str, str]
    apps: kubernetes.client.AppsV1Api | None  # None in a stand-in world (tests/kit/stand_ins.py)
    production_ns: str


async def make_world(
    client: Client,
    settings: Settings,
    kube_server: Any,
    publisher: str = "ci-bot",
    requires_staging: bool = True,
    timeout: str = "24h",
    interval: str = "2s",
) -> World:
    suffix = uuid.uuid4().hex[:8]
    repository = f"{settings.registry.default}/team/shop-{suffix}"
    api = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    core = kubernetes.client.CoreV1Api(api)
    for ns in (f"stg-{suffix}", f"prd-{suffix}"):
        core.create_namespace({"metadata": {"name": ns}})
    digests = {
        "1.0.0": publish(settings, repository, "1.0.0", app_manifests("shop"), publisher),
        "1.1.0": publish(settings, repository, "1.1.0", app_manifests("shop", image="nginx:1.26"), publisher),
    }
    return await _start_world(
        client,
        settings,
        repository,
        suffix,
        digests,
        kubernetes.client.AppsV1Api(api),
        requires_staging,
        timeout,
        interval,
    )


async def make_stand_in_world(
    client: Client,
    settings: Settings,
    stand_ins: StandInWorld,
    requires_staging: bool = True,
    timeout: str = "24h",
    interval: str = "2s",
) -> World:
    """The same world over stand-in activities (released in `stand_ins`, whose publisher it keeps): `settings`
    names the task queue of the worker that serves them."""
    suffix = uuid.uuid4().hex[:8]
    digests = {version: stand_ins.release(version) for version in ("1.0.0", "1.1.0")}
    return await _start_world(
        client,
        settings,
        f"{settings.registry.default}/team/shop-{suffix}",
        suffix,
        digests,
        None,
        requires_staging,
        timeout,
        interval,
    )


async def _start_world(
    client: Client,
    settings: Settings,
    repository: str,
    suffix: str,
    digests: dict[str, str],
    apps: kubernetes.client.AppsV1Api | None,
    requires_staging: bool,
    timeout: str,
    interval: str,
) -> World:
    common = {"repository": repository, "interval": interval, "health_timeout": "20s"}
    staging = EnvironmentSpec.model_validate(
        {**common, "name": f"stg-{suffix}", "namespace": f"stg-{suffix}", "semver": ">=1.0.0"}
    )
    production = EnvironmentSpec.model_validate(
        {
            **common,
            "name": f"prd-{suffix}",
            "namespace": f"prd-{suffix}",
            "version": "1.0.0",
            "approval": {
                "required": True,
                "approvers": ["alice", "bob"],
                "timeout": timeout,
                "requires-healthy-in": [f"stg-{suffix}"] if requires_staging else [],
            },
        }
    )
    tq = settings.temporal.task_queue
    stg = await start_environment(client, tq, staging)
    prd = await start_environment(client, tq, production)
    await wait_status(
        stg,
        lambda s: s.state.last_known_good is not None and s.state.last_known_good.digest == digests["1.1.0"],
        what="staging healthy on 1.1.0",
    )
    await wait_status(prd, lambda s: s.state.health.status == "Healthy", what="production healthy on 1.0.0")
    return World(client, settings, repository, staging.name, production.name, digests, apps, f"prd-{suffix}")


async def promote(world: World, version: str = "1.1.0", by: str = "carol") -> WorkflowHandle[Any, Any]:
    return await world.client.start_workflow(
        PromotionWorkflow.run,
        PromotionInput(environment=world.production, version=version, requested_by=by, reason="release train"),
        id=promotion_workflow_id(world.production, version),
        task_queue=world.settings.temporal.task_queue,
    )


async def promote_approved(world: World, approver: str = "alice") -> None:
    handle = await promote(world)
    await wait_phase(handle, "AwaitingApproval")
    await handle.signal(PromotionWorkflow.approve, LenientPayload({"approver": approver}))
    assert (await handle.result()).outcome == "succeeded"


async def rollback(world: World, key: str, by: str, to_version: str | None = None, reason: str = "") -> Any:
    return await world.client.execute_workflow(
        RollbackWorkflow.run,
        RollbackInput(environment=world.production, to_version=to_version, requested_by=by, reason=reason),
        id=f"rollback/{world.production}/{key}",
        task_queue=world.settings.temporal.task_queue,
    )


async def holds(world: World) -> list[str]:
    status = await world.client.get_workflow_handle(f"env/{world.production}").query(EnvironmentWorkflow.status)
    return list(status.state.holds)


def deployed_image(world: World) -> str:
    assert world.apps is not None, "a stand-in world has no cluster: read its stand-ins' running digests"
    deployment = world.apps.read_namespaced_deployment("shop", world.production_ns)
    return str(deployment.spec.template.spec.containers[0].image)
