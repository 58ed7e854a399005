"""`ferry promote|approve|reject ENV VERSION`, `ferry rollback ENV`: SRE commands."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
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

    async def go() -> tuple[str, PromotionResult | None]:
        client = await connect(settings.temporal, identity=cli_identity())
        await environment_status(client, args.env)
        workflow_id = promotion_workflow_id(args.env, args.version)
        handle = await client.start_workflow(
            PromotionWorkflow.run, PromotionInput(environment=args.env, version=args.version,
                                                  requested_by=requester, reason=args.reason),
            id=workflow_id, task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        if not args.wait:
            return workflow_id, None
        try:
            return workflow_id, await handle.result()
        except WorkflowFailureError as err:
            raise CommandError(f"promotion {workflow_id} failed: {root_cause(err)}") from None

    workflow_id, result = asyncio.run(go())
    url = workflow_url(settings.temporal, workflow_id)
    if result is None:
        emit({"workflow_id": workflow_id, "temporal_ui": url}, args.json,
             f"promotion requested: {workflow_id}\n  approve with: ferry approve {args.env} {args.version}\n"
             f"  or: temporal workflow signal --workflow-id {workflow_id} --name approve "
             f"--input '{{\"approver\": \"<you>\", \"comment\": \"...\"}}'\n  {url}")
        return 0
    emit(result.model_dump(), args.json, f"{workflow_id}: {result.outcome} ({result.reason})  {url}")
    return 0 if result.outcome == "succeeded" else 1


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
    emit(result.model_dump(), args.json, f"{workflow_id}: {result.outcome}: {result.from_version} -> "
         f"{result.to_version} ({result.reason})  {workflow_url(settings.temporal, workflow_id)}")
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
