"""`ferry upgrade drain --to BUILD` and `ferry upgrade status [--build OLD] [--wait 30m]`: move Ferry's workflows
from one worker build to the next under Worker Versioning (workers/versioning.py, docs/upgrades.md).

- Environments and the alert router run forever, each run PINNED to its build: they move to the deployment's current
  build at a continue-as-new, which they make as soon as a workflow task tells them the current build changed. An idle
  one (waiting for its interval) gets no task by itself, so `drain` makes the build current and then wakes every one
  still on an older build (an environment with `reconcile_now {}`, the router with a `WorkerBuildChanged`
  notification), again every REWAKE_EVERY seconds until none is left there.
- Promotions, rollbacks and releases are PINNED and finish on the build they started on: the old build's workers
  stay until `status --build OLD` counts nothing running on it (Visibility's `TemporalWorkerDeploymentVersion`).

Imported to build the parser (`ferry --help`): only the standard library and cli.* at the top.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cli.commands import Lazy, command
from cli.common import CommandError, emit, run_connected, settings_from
from ferry.names import Signal

if TYPE_CHECKING:
    from temporalio.client import Client

# Long-running: they move at continue-as-new and must be woken to make one.
ENTITY_TYPES = ("EnvironmentWorkflow", "AlertRouterWorkflow")
# Short: pinned to their build until they end; the old build's workers must outlive them.
SHORT_TYPES = ("PromotionWorkflow", "RollbackWorkflow", "ReleaseWorkflow")
FERRY_TYPES = (*ENTITY_TYPES, *SHORT_TYPES)
DEFAULT_DEPLOYMENT = "ferry"
WAKE_CONCURRENCY = 50  # signals in flight at once: a fleet of 10,000 is woken in seconds, the frontend unhurried
# a wake can land before the new routing reaches the task queue's partitions, or while an environment is
# mid-reconcile (it moves after the iteration); those still on the old build are woken again this often.
REWAKE_EVERY = 15.0
POLL_EVERY = 5.0  # seconds between Visibility counts while waiting for a build to empty
DRAIN_POLL_EVERY = 1.0  # seconds between looks at what is left behind while draining (one list request)
SET_CURRENT_RETRY = 2.0  # seconds between tries while the build's workers have not polled yet


def register(sub: Any) -> None:
    upgrade = sub.add_parser(
        "upgrade", help="Worker Versioning: move workflows to a new worker build, see what still runs on the old one"
    )
    upgrade_sub = upgrade.add_subparsers(dest="upgrade_command", required=True)
    p = command(
        upgrade_sub,
        "drain",
        Lazy("cli.upgrade", "cmd_drain"),
        "make BUILD the deployment's current "
        "version (once its workers poll) and wake every environment and the alert router still on an "
        "older build, until none is left there",
    )
    p.add_argument(
        "--to", required=True, metavar="BUILD", help="the build id to make current (FERRY_BUILD_ID of the new workers)"
    )
    _deployment(p)
    p.add_argument(
        "--timeout",
        default="10m",
        help="how long to wait for the build's workers and for the move "
        "(default 10m); exit 1 when something is still on an older build then",
    )
    p = command(
        upgrade_sub,
        "status",
        Lazy("cli.upgrade", "cmd_status"),
        "the deployment's builds (current, "
        "ramping, draining) and the workflows running on each, by type (from Visibility)",
    )
    _deployment(p)
    p.add_argument(
        "--build",
        default=None,
        metavar="OLD",
        help="only this build: exit 0 when nothing runs on it any more (its workers may stop), else 1",
    )
    p.add_argument(
        "--wait", default=None, metavar="DURATION", help="with --build: wait up to DURATION for it to empty (e.g. 30m)"
    )


def _deployment(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deployment",
        default=None,
        help=f"worker deployment name (default FERRY_DEPLOYMENT_NAME, else {DEFAULT_DEPLOYMENT})",
    )


# ------------------------------------------------------------------------------------------ library ---


def version_value(deployment: str, build: str) -> str:
    """How Visibility's TemporalWorkerDeploymentVersion spells a version: `deployment:build`."""
    return f"{deployment}:{build}"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class Version:
    build: str
    status: str  # CURRENT, RAMPING, DRAINING, DRAINED, INACTIVE (the server's WorkerDeploymentVersionStatus)
    drainage: str = ""  # DRAINING / DRAINED, refreshed by the server periodically
    drainage_checked: str = ""


@dataclass
class Deployment:
    name: str
    current: str | None
    ramping: str | None
    ramping_percent: float
    routing_settled: bool
    versions: list[Version] = field(default_factory=list)


def _name(enum_value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(enum_value)).removeprefix(prefix)


async def describe_deployment(client: Client, deployment: str) -> Deployment:
    from temporalio.api.enums.v1 import RoutingConfigUpdateState, VersionDrainageStatus, WorkerDeploymentVersionStatus
    from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest

    info = (
        await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
        )
    ).worker_deployment_info
    routing = info.routing_config
    versions = []
    for summary in info.version_summaries:
        drained = summary.drainage_info
        versions.append(
            Version(
                build=summary.deployment_version.build_id,
                status=_name(summary.status, WorkerDeploymentVersionStatus, "WORKER_DEPLOYMENT_VERSION_STATUS_"),
                drainage=(
                    _name(summary.drainage_status, VersionDrainageStatus, "VERSION_DRAINAGE_STATUS_")
                    if summary.drainage_status
                    else ""
                ),
                drainage_checked=(
                    drained.last_checked_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
                    if summary.drainage_status and drained.HasField("last_checked_time")
                    else ""
                ),
            )
        )
    return Deployment(
        name=deployment,
        current=routing.current_deployment_version.build_id or None,
        ramping=routing.ramping_deployment_version.build_id or None,
        ramping_percent=routing.ramping_version_percentage,
        routing_settled=info.routing_config_update_state
        != RoutingConfigUpdateState.ROUTING_CONFIG_UPDATE_STATE_IN_PROGRESS,
        versions=sorted(versions, key=lambda v: v.build),
    )


async def set_current(client: Client, deployment: str, build: str, within: float) -> None:
    """`temporal worker deployment set-current-version`, retried until the build's workers have polled (the server
    knows a version only then), then until the new routing has reached the task queues."""
    from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
    from temporalio.service import RPCError

    from cli.common import cli_identity

    deadline = time.monotonic() + within
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace, deployment_name=deployment, build_id=build, identity=cli_identity()
                )
            )
            break
        except RPCError as err:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"build {build} of deployment {deployment} could not be made current in "
                    f"{within:.0f}s (do its workers poll, with FERRY_DEPLOYMENT_NAME={deployment} "
                    f"and FERRY_BUILD_ID={build}?): {err.message}"
                ) from err
            await asyncio.sleep(SET_CURRENT_RETRY)
    while not (await describe_deployment(client, deployment)).routing_settled:
        if time.monotonic() > deadline:
            raise CommandError(
                f"the routing of deployment {deployment} to {build} is still propagating after {within:.0f}s"
            )
        await asyncio.sleep(0.5)


def _on_build(deployment: str, build: str) -> str:
    version = _quote(version_value(deployment, build))
    return f"ExecutionStatus = 'Running' AND TemporalWorkerDeploymentVersion = {version}"


def _not_on_build(deployment: str, build: str) -> str:
    types = ", ".join(_quote(t) for t in ENTITY_TYPES)
    return (
        f"ExecutionStatus = 'Running' AND WorkflowType IN ({types}) AND TemporalWorkerDeployment = "
        f"{_quote(deployment)} AND TemporalWorkerDeploymentVersion != {_quote(version_value(deployment, build))}"
    )


async def census(client: Client, deployment: str, build: str) -> dict[str, int]:
    """Running workflows pinned to one build, by Ferry workflow type (`other`: anything else; `total`). From
    Visibility: a move shows within seconds."""
    base = _on_build(deployment, build)
    counts = await asyncio.gather(
        client.count_workflows(base),
        *(client.count_workflows(f"{base} AND WorkflowType = {_quote(t)}") for t in FERRY_TYPES),
    )
    total = counts[0].count
    by_type = {t: c.count for t, c in zip(FERRY_TYPES, counts[1:], strict=True)}
    return {**by_type, "other": max(0, total - sum(by_type.values())), "total": total}


async def left_behind(client: Client, deployment: str, current: str) -> list[tuple[str, str]]:
    """(workflow id, type) of every running environment and alert router on a build other than `current`."""
    return [(wf.id, wf.workflow_type) async for wf in client.list_workflows(_not_on_build(deployment, current))]


def _router_wake(deployment: str, build: str, run: str) -> dict[str, Any]:
    from ferry.alert_router import WAKE_SOURCE, WORKER_BUILD_CHANGED
    from ferry.alerts import Notification

    digest = hashlib.sha256(f"{deployment}:{build}:{run}".encode()).hexdigest()[:32]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return Notification(
        key=f"upgrade-{digest}",
        type=WORKER_BUILD_CHANGED,
        at=now,
        source=WAKE_SOURCE,
        message=f"worker deployment {deployment}: build {build} is current"[:200],
        details={"deployment": deployment[:200], "build": build[:200]},
    ).model_dump(mode="json")


async def wake(client: Client, deployment: str, current: str, found: list[tuple[str, str]], run: str) -> int:
    """Give each workflow found a workflow task, where it sees the new current build and continues as new onto it:
    an environment `reconcile_now {}`, the router a WorkerBuildChanged notification. -> how many were reached."""
    from temporalio.service import RPCError, RPCStatusCode

    gate = asyncio.Semaphore(WAKE_CONCURRENCY)

    async def one(workflow_id: str, workflow_type: str) -> int:
        handle = client.get_workflow_handle(workflow_id)
        async with gate:
            try:
                if workflow_type == "AlertRouterWorkflow":
                    await handle.signal(Signal.NOTIFY, _router_wake(deployment, current, run))
                else:
                    await handle.signal(Signal.RECONCILE_NOW, {})
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # ended meanwhile: nothing to move
                    return 0
                raise
        return 1

    return sum(await asyncio.gather(*(one(wid, wtype) for wid, wtype in found)))


@dataclass
class Drained:
    deployment: str
    current: str
    woken: int = 0
    rounds: int = 0
    left_behind: list[str] = field(default_factory=list)
    older_builds: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


async def drain(client: Client, deployment: str, build: str, within: float) -> Drained:
    """Make `build` current, then wake what is left on older builds until nothing is, or `within` seconds pass."""
    started = time.monotonic()
    deadline = started + within
    await set_current(client, deployment, build, within)
    report = Drained(deployment=deployment, current=build)
    run, woken_at = f"{time.time_ns()}", float("-inf")
    while True:
        found = await left_behind(client, deployment, build)
        if not found:
            break
        if time.monotonic() > deadline:
            report.left_behind = sorted(wid for wid, _ in found)
            break
        # Visibility shows a move within seconds; a wake repeated too soon only brings a reconcile forward
        if time.monotonic() - woken_at >= REWAKE_EVERY:
            report.woken += await wake(client, deployment, build, found, run)
            report.rounds += 1
            woken_at = time.monotonic()
        await asyncio.sleep(min(DRAIN_POLL_EVERY, max(0.0, deadline - time.monotonic())))
    described = await describe_deployment(client, deployment)
    for version in described.versions:
        if version.build != build:
            counts = await census(client, deployment, version.build)
            if counts["total"]:
                report.older_builds[version.build] = counts
    report.seconds = round(time.monotonic() - started, 1)
    return report


# ----------------------------------------------------------------------------------------- commands ---


def _deployment_of(args: argparse.Namespace) -> str:
    settings = settings_from(args)
    return str(args.deployment or settings.worker.deployment_name or DEFAULT_DEPLOYMENT)


def _seconds(text: str) -> float:
    from ferry.durations import parse_duration

    return parse_duration(text).total_seconds()


def _counts_line(counts: dict[str, int]) -> str:
    shown = [f"{name.removesuffix('Workflow')} {n}" for name, n in counts.items() if n and name != "total"]
    return f"{counts['total']} running" + (f" ({', '.join(shown)})" if shown else "")


def cmd_drain(args: argparse.Namespace) -> int:
    deployment = _deployment_of(args)

    async def work(client: Client) -> Drained:
        return await drain(client, deployment, args.to, _seconds(args.timeout))

    report = run_connected(settings_from(args), work)
    lines = [
        f"deployment {deployment}: build {report.current} is current; woke {report.woken} workflow(s) in "
        f"{report.rounds} round(s), {report.seconds}s"
    ]
    if report.left_behind:
        lines.append(
            f"still on an older build after {args.timeout}: {len(report.left_behind)} "
            f"({', '.join(report.left_behind[:10])}{' ...' if len(report.left_behind) > 10 else ''})"
        )
    for build, counts in report.older_builds.items():
        lines.append(
            f"build {build}: {_counts_line(counts)}: keep its workers until `ferry upgrade status "
            f"--build {build}` says it is empty"
        )
    if not report.older_builds:
        lines.append("no workflow runs on an older build: their workers may stop")
    emit(asdict(report), args.json, "\n".join(lines))
    return 1 if report.left_behind else 0


def cmd_status(args: argparse.Namespace) -> int:
    deployment = _deployment_of(args)
    if args.wait and not args.build:
        raise CommandError("--wait needs --build OLD (the build whose workflows to wait for)")
    wait = _seconds(args.wait) if args.wait else 0.0

    async def work(client: Client) -> dict[str, Any]:
        from temporalio.service import RPCError, RPCStatusCode

        try:
            described = await describe_deployment(client, deployment)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            raise CommandError(
                f"no worker deployment {deployment!r}: no worker has polled with FERRY_DEPLOYMENT_NAME={deployment}"
            ) from err
        builds = [args.build] if args.build else [v.build for v in described.versions]
        deadline = time.monotonic() + wait
        while True:
            counts = {build: await census(client, deployment, build) for build in builds}
            if not args.build or not counts[args.build]["total"] or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_EVERY)
        return {"deployment": asdict(described), "running": counts}

    data = run_connected(settings_from(args), work)
    described, running = data["deployment"], data["running"]
    ramping = f", ramping {described['ramping']} at {described['ramping_percent']:g} %" if described["ramping"] else ""
    lines = [
        f"deployment {deployment}: current {described['current'] or '(none)'}{ramping}"
        + ("" if described["routing_settled"] else " (routing still propagating)")
    ]
    statuses = {v["build"]: v for v in described["versions"]}
    for build, counts in running.items():
        version = statuses.get(build, {})
        drainage = f" (drainage checked {version['drainage_checked']})" if version.get("drainage_checked") else ""
        lines.append(f"  build {build}  {version.get('status', 'UNKNOWN')}{drainage}: {_counts_line(counts)}")
    if args.build:
        empty = not running[args.build]["total"]
        lines.append(
            f"build {args.build}: "
            + ("nothing runs on it: its workers may stop" if empty else "still in use: keep its workers")
        )
    emit(data, args.json, "\n".join(lines))
    return 0 if not args.build or not running[args.build]["total"] else 1
