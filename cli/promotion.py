"""`ferry promote|approve|reject ENV VERSION`, `ferry rollback ENV`: SRE commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import pydantic
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from cli.common import (
    CommandError,
    connect_client,
    emit,
    local_identity,
    root_cause,
    run_connected,
    settings_from,
    where,
)
from cli.environments import environment_status
from cli.keys import expiry, private_key, read_text
from ferry.approvals import (
    APPROVAL_NAMESPACE,
    MAX_STATEMENT,
    SignedDecision,
    Statement,
    sign_statement,
    verify_decision,
)
from ferry.environment import LenientPayload
from ferry.errors import ErrorType
from ferry.names import Update
from ferry.promotion import (
    DecisionResult,
    PromotionInput,
    PromotionResult,
    RollbackInput,
    RollbackResult,
    promotion_workflow_id,
    rollback_workflow_id,
)
from ferry.settings import TemporalSettings
from ferry.sshsig import MAX_SIGNATURE, ApprovalError, ApproverKey, signature_public_key
from workers.client import workflow_url
from workflows.promotion import PromotionWorkflow
from workflows.rollback import RollbackWorkflow


def cmd_promote(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    requester = args.as_ or local_identity()

    async def go(client: Client) -> tuple[str, PromotionResult | str]:
        await environment_status(client, args.env)
        workflow_id = promotion_workflow_id(args.env, args.version)
        handle = await client.start_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment=args.env, version=args.version, requested_by=requester, reason=args.reason),
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Promote {args.version} → {args.env}, requested by {requester}",
            static_details=f"Reason: {args.reason or '-'}. Approve: `ferry approve {args.env} {args.version} --key "
            "KEY` (or the `approve_update` Update with the JSON that `--print` shows).",
        )
        try:
            if not args.wait:
                # a version that is not released, or a failed requires-healthy-in, is refused within
                # seconds; say so now rather than "requested" and exit 0.
                phase = await _first_decision_point(handle)
                if phase is not None:
                    return workflow_id, phase
            return workflow_id, await handle.result()
        except WorkflowFailureError as err:
            raise CommandError(f"promotion {workflow_id} failed: {root_cause(err)}") from None

    workflow_id, outcome = run_connected(settings, go)
    url = workflow_url(settings.temporal, workflow_id)
    if isinstance(outcome, str):
        _requested(args, settings.temporal, workflow_id, outcome, url)
        return 0
    result = outcome
    if result.outcome == "refused" and not args.json:
        raise CommandError(f"promotion of {args.version} to {args.env} refused: {result.reason}  ({url})")
    emit(result.model_dump(), args.json, f"{workflow_id}: {result.outcome} ({result.reason})  {url}")
    return 0 if result.outcome == "succeeded" else 1


def _requested(args: argparse.Namespace, temporal: TemporalSettings, workflow_id: str, outcome: str, url: str) -> None:
    """A promotion not waited for: its phase at the first decision point, and how to approve it when it waits."""
    waiting = outcome == "AwaitingApproval"
    emit(
        {"workflow_id": workflow_id, "phase": outcome, "temporal_ui": url},
        args.json,
        f"promotion requested: {workflow_id} ({outcome})\n"
        + (
            f"  approve with: ferry approve {args.env} {args.version} --key ~/.ssh/id_ed25519\n"
            f"  or: ferry approve {args.env} {args.version} --key ~/.ssh/id_ed25519 --print > approval.json; "
            f"temporal workflow update execute --address {temporal.address} --namespace "
            f"{temporal.namespace} --workflow-id {workflow_id} --name approve_update "
            "--input-file approval.json\n"
            if waiting
            else f"  no approval required; follow with: ferry status {args.env}\n"
        )
        + f"  {url}",
    )


FINAL_PHASES = {"Refused", "Succeeded", "Failed", "Rejected", "Expired", "Superseded", "Cancelled"}


async def _first_decision_point(handle: WorkflowHandle[Any, Any], within: float = 60.0) -> str | None:
    """The phase once the promotion has resolved its version and checked its policy (AwaitingApproval, Pinned, …),
    or None when it has already finished (its result tells how)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return None
        phase: str = (await handle.query(PromotionWorkflow.status)).phase
        if phase in FINAL_PHASES:
            return None  # decided; the run may still be telling the alert router before it completes
        if phase != "Resolving" or loop.time() > deadline:
            return phase
        await asyncio.sleep(0.25)


async def _promotion_run(args: argparse.Namespace) -> tuple[str, str]:
    """(run id, digest) of the running promotion, from --run/--digest when both are given (no Temporal access
    needed: an approver may sign offline), else from the workflow's description and status query."""
    if args.run and args.digest:
        return args.run, args.digest
    workflow_id = promotion_workflow_id(args.env, args.version)
    client = await connect_client(settings_from(args))
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe()
        if described.status != WorkflowExecutionStatus.RUNNING:
            state = described.status.name if described.status else "unknown"
            raise CommandError(f"promotion {workflow_id} is not running ({state}): nothing to decide")
        status = await handle.query(PromotionWorkflow.status)
    except RPCError as err:
        raise CommandError(f"no promotion of {args.version} to {args.env}: {err.message} ({where(client)})") from None
    if not status.digest:
        raise CommandError(
            f"promotion {workflow_id} has not resolved {args.version} to a digest yet ({status.phase});"
            " try again in a moment"
        )
    if args.digest and args.digest != status.digest:
        raise CommandError(f"--digest {args.digest} is not the promotion's digest {status.digest}")
    if args.run and args.run != described.run_id:
        raise CommandError(f"--run {args.run} is not the promotion's current run {described.run_id}")
    return described.run_id, status.digest


def _statement(args: argparse.Namespace, decision: str, run: str, digest: str) -> Statement:
    fields = {
        "environment": args.env,
        "version": args.version,
        "digest": digest,
        "promotion": promotion_workflow_id(args.env, args.version),
        "run": run,
        "decision": decision,
        "approver": args.as_ or local_identity(),
        "comment": args.comment or "",
        "expires": expiry(args.expires),
    }
    try:
        return Statement.model_validate(fields)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        raise CommandError(f"cannot build the statement: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _signed_elsewhere(args: argparse.Namespace, decision: str) -> tuple[dict[str, str], str]:
    """The decision payload from --statement/--signature files (signed with `ssh-keygen -Y sign`), checked here
    first: canonical, for this command, and a valid signature in Ferry's namespace by the key it embeds."""
    text = read_text(args.statement, MAX_STATEMENT, "--statement")
    signature = read_text(args.signature, MAX_SIGNATURE, "--signature")
    try:
        statement = Statement.parse(text)
        signed = SignedDecision(statement=text, signature=signature)
        key = signature_public_key(signature)
        verified = verify_decision(signed, [ApproverKey(name=statement.approver, key=key)])
    except ApprovalError as err:
        raise CommandError(f"--statement/--signature refused: {err.reason}") from None
    wrong = [
        f"{field} {got!r} (this command: {want!r})"
        for field, got, want in (
            ("environment", statement.environment, args.env),
            ("version", statement.version, args.version),
            ("decision", statement.decision, decision),
            ("approver", statement.approver, args.as_ or statement.approver),
            ("comment", statement.comment, statement.comment if args.comment is None else args.comment),
        )
        if got != want
    ]
    if wrong:
        raise CommandError("the signed statement is for " + ", ".join(wrong))
    return {
        "approver": statement.approver,
        "comment": statement.comment,
        "statement": text,
        "signature": signature,
    }, verified.fingerprint


def _hint(args: argparse.Namespace, update: str, signal: str) -> str:
    temporal = settings_from(args).temporal
    target = (
        f"--address {temporal.address} --namespace {temporal.namespace} --workflow-id "
        f"{promotion_workflow_id(args.env, args.version)}"
    )
    return (
        f"save the JSON as approval.json, then: temporal workflow update execute {target} --name {update} "
        f"--input-file approval.json  (or: temporal workflow signal {target} --name {signal} --input-file "
        "approval.json; or paste it in the Temporal UI: Send a Signal)"
    )


def _decide(update: str) -> Any:
    verb = update.split("_")[0]

    def cmd(args: argparse.Namespace) -> int:
        if bool(args.statement) != bool(args.signature):
            raise CommandError("--statement and --signature go together (ssh-keygen -Y sign writes FILE.sig)")
        if args.statement and (args.key or args.print_statement):
            raise CommandError(
                "--statement/--signature send a decision signed elsewhere: no --key or --print-statement with them"
            )
        if args.print_statement and args.key:
            raise CommandError("--print-statement prints what to sign with ssh-keygen: no --key with it")
        fingerprint = ""
        if args.statement:
            payload, fingerprint = _signed_elsewhere(args, verb)
        elif args.key or args.print_statement:
            key = private_key(args.key) if args.key else None
            run, digest = asyncio.run(_promotion_run(args))
            statement = _statement(args, verb, run, digest)
            if key is None:
                sys.stdout.write(statement.canonical())  # NB: exactly the bytes to sign, no trailing newline
                sys.stdout.flush()
                print(
                    f"\nsign with: ssh-keygen -Y sign -n {APPROVAL_NAMESPACE} -f ~/.ssh/id_ed25519 FILE, then: "
                    f"ferry {verb} {args.env} {args.version} --statement FILE --signature FILE.sig "
                    f"(expires {statement.expires})",
                    file=sys.stderr,
                )
                return 0
            data, password, fingerprint = key
            try:
                signed = sign_statement(statement, data, password)
            except ApprovalError as err:
                raise CommandError(f"--key {args.key}: {err.reason}") from None
            payload = {
                "approver": statement.approver,
                "comment": statement.comment,
                "statement": signed.statement,
                "signature": signed.signature,
            }
        else:
            payload = {"approver": args.as_ or local_identity(), "comment": args.comment or ""}
        if args.print:
            print(json.dumps(payload))
            print(_hint(args, update, verb), file=sys.stderr)
            return 0
        return _send(args, update, payload, fingerprint)

    return cmd


def _send(args: argparse.Namespace, update: str, payload: dict[str, str], fingerprint: str) -> int:
    settings = settings_from(args)
    verb, who = update.split("_")[0], payload["approver"]

    async def go(client: Client) -> DecisionResult:
        # a signed decision goes to the run it names; a newer run would refuse it anyway, this says why sooner
        run = Statement.parse(payload["statement"]).run if "statement" in payload else None
        handle = client.get_workflow_handle(promotion_workflow_id(args.env, args.version), run_id=run)
        try:
            result: DecisionResult = await handle.execute_update(
                update, LenientPayload(payload), result_type=DecisionResult
            )
            return result
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.DECISION_REFUSED:
                # the workflow records a refused decision before failing the update with it
                reason = cause.message.removeprefix(f"{verb} refused: ")
                raise CommandError(f"{verb} by {who} refused: {reason} (recorded)") from None
            raise CommandError(f"{verb} refused: {root_cause(err)}") from None
        except RPCError as err:
            raise CommandError(
                f"no promotion of {args.version} to {args.env}: {err.message} ({where(client)})"
            ) from None

    result = run_connected(settings, go)
    if not result.accepted:
        raise CommandError(f"{verb} by {who} refused: {result.reason} (recorded)")
    signed = f", signed by {fingerprint}" if fingerprint else ""
    print(
        f"{verb} by {who} accepted for {args.env} {args.version}{signed}"
        + (f" ({result.reason})" if result.reason else "")
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    requester = args.as_ or local_identity()

    async def go(client: Client) -> tuple[str, RollbackResult]:
        status = await environment_status(client, args.env)
        current = status.state.last_applied
        # the id is the business key, so a double click attaches to the running rollback; a later
        # rollback to the same target (after a completed one) starts a new run.
        target = args.to or f"last-known-good-before-{current.version if current else 'none'}"
        workflow_id = rollback_workflow_id(args.env, target)
        handle = await client.start_workflow(
            RollbackWorkflow.run,
            RollbackInput(environment=args.env, to_version=args.to, requested_by=requester, reason=args.reason),
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Roll {args.env} back to {args.to or 'its last known-good version'}, requested by "
            f"{requester}",
            static_details=f"Reason: {args.reason or '-'}",
        )
        return workflow_id, await handle.result()

    workflow_id, result = run_connected(settings, go)
    moved = "" if result.outcome == "refused" else f" {result.from_version} -> {result.to_version}"
    emit(
        result.model_dump(),
        args.json,
        f"{workflow_id}: {result.outcome}{moved} ({result.reason})  {workflow_url(settings.temporal, workflow_id)}",
    )
    return 0 if result.outcome == "succeeded" else 1


cmd_approve = _decide(Update.APPROVE)
cmd_reject = _decide(Update.REJECT)
