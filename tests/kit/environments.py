"""Publish bundles with the real adapters, drive EnvironmentWorkflows and promotions, run the `ferry` CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from activities.bundle import scan, write_tarball
from activities.registry import Registries, RegistryActivities
from ferry.artifacts import PushArtifactInput
from ferry.environment import EnvironmentInput, EnvironmentState, EnvironmentStatus, LenientPayload
from ferry.oci import ANNOTATION_PUBLISHED_BY, ANNOTATION_REVISION, FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.stack import STARTED
from workflows.environment import EnvironmentWorkflow


def app_manifests(
    name: str, image: str = "nginx:1.25", *, configmap: bool = True, replicas: int | None = None, message: str = "hello"
) -> list[dict[str, Any]]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    docs: list[dict[str, Any]] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    ]
    if configmap:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-config"},
                "data": {"message": message},
            }
        )
    return docs


def hanging_manifests(name: str, image: str) -> list[dict[str, Any]]:
    """app_manifests whose Deployment's rollout never finishes (the simulated controller keeps it Progressing):
    a rollout that waits for its health until something pre-empts it, however slow the machine."""
    docs = app_manifests(name, image=image)
    docs[0]["spec"]["template"]["metadata"]["annotations"] = {"emulator.ferry.dev/rollout": "hang"}
    return docs


def publish(
    settings: Settings, repository: str, version: str, docs: list[dict[str, Any]], publisher: str = "ci-bot"
) -> str:
    """Package and push with the real adapters (the release workflow is covered by its own tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bundle"
        root.mkdir()
        (root / "app.yaml").write_text(yaml.safe_dump_all(docs))
        return publish_dir(settings, repository, version, root, publisher)


def publish_dir(settings: Settings, repository: str, version: str, root: Path, publisher: str = "ci-bot") -> str:
    """Package and push a release directory (a chart and values files inside it) with the real adapters."""
    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(tmp) / "bundle.tar.gz"
        write_tarball(root, scan(root), tarball)
        pushed = RegistryActivities(Registries(settings.registry)).push_artifact(
            PushArtifactInput(
                repository=repository,
                tag=version,
                file_path=str(tarball),
                layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
                config_media_type=FLUX_CONFIG_MEDIA_TYPE,
                annotations={ANNOTATION_REVISION: f"main@sha1:{uuid.uuid4().hex}", ANNOTATION_PUBLISHED_BY: publisher},
            )
        )
        return pushed.digest


async def start_environment(
    client: Client, task_queue: str, spec: EnvironmentSpec
) -> WorkflowHandle[EnvironmentWorkflow, None]:
    STARTED.append((task_queue, f"env/{spec.name}"))
    return await client.start_workflow(
        EnvironmentWorkflow.run,
        EnvironmentInput(state=EnvironmentState(spec=spec)),
        id=f"env/{spec.name}",
        task_queue=task_queue,
    )


async def wait_status(
    handle: WorkflowHandle[Any, Any],
    predicate: Callable[[EnvironmentStatus], bool],
    timeout: float = 30,
    what: str = "condition",
) -> EnvironmentStatus:
    deadline = time.monotonic() + timeout
    status: EnvironmentStatus | None = None
    while time.monotonic() < deadline:
        status = await handle.query(EnvironmentWorkflow.status)
        if predicate(status):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"{what} not reached in {timeout}s; last status: {status.model_dump_json(indent=1) if status else None}"
    )


async def reconcile_now(handle: WorkflowHandle[Any, Any]) -> None:
    await handle.signal(EnvironmentWorkflow.reconcile_now, LenientPayload({}))


async def next_iteration(handle: WorkflowHandle[Any, Any], timeout: float = 30) -> EnvironmentStatus:
    before = (await handle.query(EnvironmentWorkflow.status)).state.iterations
    await reconcile_now(handle)
    return await wait_status(handle, lambda s: s.state.iterations > before, timeout, "next iteration")


async def wait_phase(handle: WorkflowHandle[Any, Any], phase: str, timeout: float = 30) -> Any:
    """Wait until a promotion reaches `phase`; -> its status."""
    from workflows.promotion import PromotionWorkflow

    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = await handle.query(PromotionWorkflow.status)
        if status.phase == phase:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"promotion never reached {phase} in {timeout}s; last: {status}")


async def ferry(settings: Settings, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `ferry` console script (python -m cli) against this test's Temporal server and task queue."""
    env = {
        **os.environ,
        "FERRY_TEMPORAL_ADDRESS": settings.temporal.address,
        "FERRY_TASK_QUEUE": settings.temporal.task_queue,
        "FERRY_STATE_DIR": str(tmp / "no-stack"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories"


async def record_histories(generation: str, handles: dict[str, WorkflowHandle[Any, Any]]) -> None:
    """With FERRY_RECORD_HISTORIES=1, keep these histories (name: environment, promotion, rollback, release) in
    tests/replay/histories/<generation>/ for the replay tests (under FERRY_RECORD_PREFIX/ when set: a new code
    generation's histories beside the old ones)."""
    if not os.environ.get("FERRY_RECORD_HISTORIES"):
        return
    folder = HISTORIES / os.environ.get("FERRY_RECORD_PREFIX", "") / generation
    folder.mkdir(parents=True, exist_ok=True)
    for name, handle in handles.items():
        (folder / f"{name}.json").write_text((await handle.fetch_history()).to_json())


def config_map(version: str) -> list[dict[str, Any]]:
    """A one-ConfigMap bundle that names its version (the smallest release an environment can apply)."""
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"}, "data": {"version": version}}]


async def statuses(handles: list[WorkflowHandle[Any, Any]]) -> list[EnvironmentStatus | None]:
    """Many environments' statuses at once (16 queries in flight); None for one whose query failed."""
    gate = asyncio.Semaphore(16)

    async def one(handle: WorkflowHandle[Any, Any]) -> EnvironmentStatus | None:
        async with gate:
            try:
                status: EnvironmentStatus = await handle.query(EnvironmentWorkflow.status)
                return status
            except Exception:  # a query during a fault fails; the next poll asks again
                return None

    return list(await asyncio.gather(*(one(h) for h in handles)))


def on_digest(status: EnvironmentStatus | None, digest: str) -> bool:
    """Applied and healthy on this digest."""
    return (
        status is not None
        and status.state.last_applied is not None
        and status.state.last_applied.digest == digest
        and status.state.health.status == "Healthy"
        and status.state.health.digest == digest
    )


async def all_on_digest(handles: list[WorkflowHandle[Any, Any]], digest: str) -> bool:
    return all(on_digest(s, digest) for s in await statuses(handles))
