"""The worker entrypoint: every workflow and activity on task queue ``ferry``, graceful on SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, Worker, WorkerDeploymentConfig, WorkerDeploymentVersion
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workers.decryption import decryption_report
from workers.settings import Settings
from workers.wiring import all_activities

log = logging.getLogger("ferry.worker")

# How long running activities get to finish after SIGTERM; docker-compose.yml's stop_grace_period is longer.
GRACEFUL_SHUTDOWN = timedelta(seconds=20)


def all_workflows() -> list[type]:
    from workflows import ALL_WORKFLOWS

    return list(ALL_WORKFLOWS)


STATELESS_WORKFLOW_HELPERS = (
    "workflows.metrics",
    "workflows.policies",
    "workflows.search_attributes",
    "workflows.outbox",
    "workflows.pin_protocol",
    "workflows.reads",
    "workflows.run_memo",
    "workflows.patches",
    "workflows.activity_stubs",
    "workflows.failures",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox, with `cryptography` passed through: signature checks run in workflow code, and its
    Rust bindings must be imported once per process, never re-imported per workflow (that fails with a
    SystemError). It is deterministic code: verification only, no keys generated, no clock."""
    # the workflows' stateless helpers (constants, functions, the pin-outcome mixin; no module-level state) are
    # passed through too: the sandbox re-imports, and without bytecode caches recompiles, every module it does not
    # pass through, for every workflow it starts or replays (the fleet's `ferry env apply` was mostly that).
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography", *STATELESS_WORKFLOW_HELPERS)
    )


def default_build_id() -> str:
    """ferry's package version, plus the git commit when running from a checkout (`0.1.0+g1a2b3c4d5e6f`), so every
    release, and every commit deployed from source, is its own build. Images set FERRY_BUILD_ID instead."""
    import importlib.metadata
    import subprocess

    version = importlib.metadata.version("ferry")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}" if commit else version


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Worker Versioning when a deployment is named; each workflow type's behaviour is in workers/versioning.py."""
    name = settings.worker.deployment_name
    if not name:
        return None
    version = WorkerDeploymentVersion(deployment_name=name, build_id=settings.worker.build_id or default_build_id())
    return WorkerDeploymentConfig(version=version, use_worker_versioning=True)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    workflows: Sequence[type] | None = None,
    activities: Sequence[Callable[..., Any]] | None = None,
) -> Worker:
    tuning = settings.worker
    # sync activities (local ones included) run in this pool, sized so that none waits for a thread.
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=tuning.max_concurrent_activities + tuning.max_concurrent_local_activities,
        thread_name_prefix="ferry-activity",
    )
    pollers = PollerBehaviorAutoscaling(maximum=tuning.max_task_pollers, initial=min(5, tuning.max_task_pollers))
    versioning = deployment_config(settings)
    classes = list(workflows) if workflows is not None else all_workflows()
    if versioning is not None:
        from workers.versioning import versioned

        classes = versioned(classes)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal.task_queue,
        workflows=classes,
        activities=list(activities) if activities is not None else all_activities(settings, client),
        activity_executor=pool,
        workflow_runner=workflow_runner(),
        max_concurrent_activities=tuning.max_concurrent_activities,
        max_concurrent_local_activities=tuning.max_concurrent_local_activities,
        max_concurrent_workflow_tasks=tuning.max_concurrent_workflow_tasks,
        max_cached_workflows=tuning.max_cached_workflows,
        workflow_task_poller_behavior=pollers,
        activity_task_poller_behavior=pollers,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        deployment_config=versioning,
    )


async def run_worker(settings: Settings, *, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT, then let running activities finish (graceful_shutdown_timeout)."""
    from workers.capacity import watch_cache
    from workers.client import connect
    from workers.telemetry import metrics_runtime, tracer_provider

    provider = tracer_provider(settings.telemetry)
    runtime = metrics_runtime(settings.telemetry)
    client = await connect(settings.temporal, tracer=provider, runtime=runtime)
    worker = build_worker(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for line in decryption_report(settings):
        log.info("%s", line)
    versioning = worker.config().get("deployment_config")
    log.info(
        "worker polling %s on %s%s",
        settings.temporal.task_queue,
        settings.temporal.address,
        f" as {versioning.version.deployment_name}/{versioning.version.build_id}" if versioning else "",
    )
    async with worker:
        if ready_file is not None:
            ready_file.write_text("ready\n")  # noqa: ASYNC240 -- one tiny write at start-up
        watch = asyncio.create_task(
            watch_cache(
                client,
                settings.temporal.task_queue,
                settings.worker.max_cached_workflows,
                runtime.metric_meter if runtime else None,
            )
        )
        await stop.wait()
        watch.cancel()
        log.info("shutting down: waiting for running activities")
    if provider is not None:
        provider.shutdown()


# The CI worker is unversioned and serves one release; an explicit build id spares the SDK's default, which
# hashes the bytecode of every loaded module (~900 in `ferry release`) before the first poll.
CI_BUILD_ID = "ferry-release"


def build_ci_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    pool: concurrent.futures.ThreadPoolExecutor,
    max_concurrent: int,
) -> Worker:
    """The CI host's worker, run by `ferry release` for its own life on the release's own task queue: only the
    activities that touch the host's files and the release's registry (package, resolve, push, sign)."""
    return Worker(
        client,
        task_queue=task_queue,
        activities=list(activities),
        activity_executor=pool,
        max_concurrent_activities=max_concurrent,
        build_id=CI_BUILD_ID,
    )


# The CI worker's activities at once (= its thread pool): one release needs one at a time.
CI_ACTIVITIES = 4


@contextlib.asynccontextmanager
async def ci_worker(client: Client, task_queue: str, activities: Sequence[Callable[..., Any]]) -> AsyncIterator[Worker]:
    """build_ci_worker running for the life of the block, over a thread pool of its own."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=CI_ACTIVITIES) as pool:
        async with build_ci_worker(client, task_queue, activities, pool, CI_ACTIVITIES) as worker:
            yield worker
