"""`ferry promote|approve|reject ENV VERSION`, `ferry rollback ENV`: SRE commands."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from cli.common import (
    COMMANDS,
    CommandError,
    cli_identity,
    emit,
    global_options,
    local_identity,
    root_cause,
    settings_from,
)
from cli.environments import environment_status
from ferry.environment import LenientPayload
from ferry.promotion import (
    DecisionResult,
    PromotionInput,
    PromotionResult,
    RollbackInput,
    RollbackResult,
    promotion_workflow_id,
    rollback_workflow_id,
)
from workers.client import connect, workflow_url
from workflows.promotion import PromotionWorkflow
from workflows.rollback import RollbackWorkflow


def cmd_promote(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    requester = args.as_ or local_identity()

    async def go() -> tuple[str, PromotionResult | str]:
        client = await connect(settings.temporal, identity=cli_identity())
        await environment_status(client, args.env)
        workflow_id = promotion_workflow_id(args.env, args.version)
        handle = await client.start_workflow(
            PromotionWorkflow.run, PromotionInput(environment=args.env, version=args.version,
                                                  requested_by=requester, reason=args.reason),
            id=workflow_id, task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        try:
            if not args.wait:
                # NB: a version that is not released, or a failed requires-healthy-in, is refused within
                # seconds; say so now rather than "requested" and exit 0.
                phase = await _first_decision_point(handle)
                if phase is not None:
                    return workflow_id, phase
            return workflow_id, await handle.result()
        except WorkflowFailureError as err:
            raise CommandError(f"promotion {workflow_id} failed: {root_cause(err)}") from None

    workflow_id, outcome = asyncio.run(go())
    url = workflow_url(settings.temporal, workflow_id)
    if isinstance(outcome, str):
        waiting = outcome == "AwaitingApproval"
        emit({"workflow_id": workflow_id, "phase": outcome, "temporal_ui": url}, args.json,
             f"promotion requested: {workflow_id} ({outcome})\n" + (
                 f"  approve with: ferry approve {args.env} {args.version}\n"
                 f"  or: temporal workflow signal --workflow-id {workflow_id} --name approve "
                 f"--input '{{\"approver\": \"<you>\", \"comment\": \"...\"}}'\n" if waiting else
                 f"  no approval required; follow with: ferry status {args.env}\n") + f"  {url}")
        return 0
    result = outcome
    if result.outcome == "refused" and not args.json:
        raise CommandError(f"promotion of {args.version} to {args.env} refused: {result.reason}  ({url})")
    emit(result.model_dump(), args.json, f"{workflow_id}: {result.outcome} ({result.reason})  {url}")
    return 0 if result.outcome == "succeeded" else 1


async def _first_decision_point(handle: WorkflowHandle[Any, Any], within: float = 60.0) -> str | None:
    """The phase once the promotion has resolved its version and checked its policy (AwaitingApproval, Pinned, …),
    or None when it has already finished (its result tells how)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return None
        phase: str = (await handle.query(PromotionWorkflow.status)).phase
        if phase != "Resolving" or loop.time() > deadline:
            return phase
        await asyncio.sleep(0.25)


def _decide(update: str) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        settings = settings_from(args)
        who = args.as_ or local_identity()

        async def go() -> DecisionResult:
            client: Client = await connect(settings.temporal, identity=cli_identity())
            handle = client.get_workflow_handle(promotion_workflow_id(args.env, args.version))
            try:
                result: DecisionResult = await handle.execute_update(
                    update, LenientPayload({"approver": who, "comment": args.comment or ""}),
                    result_type=DecisionResult)
                return result
            except WorkflowUpdateFailedError as err:
                raise CommandError(f"{update.split('_')[0]} refused: {root_cause(err)}") from None
            except RPCError as err:
                raise CommandError(f"no promotion of {args.version} to {args.env}: {err.message}") from None

        result = asyncio.run(go())
        verb = update.split("_")[0]
        if not result.accepted:
            raise CommandError(f"{verb} by {who} refused: {result.reason} (recorded)")
        print(f"{verb} by {who} accepted for {args.env} {args.version}" + (f" ({result.reason})" if result.reason
                                                                            else ""))
        return 0

    return cmd


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    requester = args.as_ or local_identity()

    async def go() -> tuple[str, RollbackResult]:
        client = await connect(settings.temporal, identity=cli_identity())
        status = await environment_status(client, args.env)
        current = status.state.last_applied
        # NB: the id is the business key, so a double click attaches to the running rollback; a later
        # rollback to the same target (after a completed one) starts a new run.
        target = args.to or f"last-known-good-before-{current.version if current else 'none'}"
        workflow_id = rollback_workflow_id(args.env, target)
        handle = await client.start_workflow(
            RollbackWorkflow.run, RollbackInput(environment=args.env, to_version=args.to, requested_by=requester,
                                                reason=args.reason),
            id=workflow_id, task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        return workflow_id, await handle.result()

    workflow_id, result = asyncio.run(go())
    moved = "" if result.outcome == "refused" else f" {result.from_version} -> {result.to_version}"
    emit(result.model_dump(), args.json, f"{workflow_id}: {result.outcome}{moved} ({result.reason})  "
         f"{workflow_url(settings.temporal, workflow_id)}")
    return 0 if result.outcome == "succeeded" else 1


def register(sub: Any) -> None:
    promote = sub.add_parser("promote", help="request promotion of a released VERSION to ENV (approval-gated)")
    promote.add_argument("env")
    promote.add_argument("version")
    promote.add_argument("--reason", default="")
    promote.add_argument("--wait", action="store_true", help="wait for the outcome (exit 1 unless succeeded)")
    promote.set_defaults(func=cmd_promote)
    for name, update in (("approve", "approve_update"), ("reject", "reject_update")):
        p = sub.add_parser(name, help=f"{name} a waiting promotion (a synchronous Update: refused is exit 1)")
        p.add_argument("env")
        p.add_argument("version")
        p.add_argument("--comment", default="")
        p.set_defaults(func=_decide(update))
        global_options(p)
        p.add_argument("--as", dest="as_", default=None, help="who (default: the local user)")
    rollback = sub.add_parser("rollback", help="pin ENV to an earlier version (default: last known-good)")
    rollback.add_argument("env")
    rollback.add_argument("--to", default=None, help="a released version")
    rollback.add_argument("--reason", default="")
    rollback.set_defaults(func=cmd_rollback)
    for p in (promote, rollback):
        p.add_argument("--as", dest="as_", default=None, help="who (default: the local user)")
        p.add_argument("--json", action="store_true")
        global_options(p)


COMMANDS.append(register)
