"""`ferry env apply|approve|reject`, `ferry reconcile|suspend|resume ENV`: declaring and operating environments
(`ferry status|diff` are cli/env_status.py's, `ferry env list` cli/env_list.py's)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from cli.common import CommandError, emit, local_identity, root_cause, run_connected, settings_from, where
from ferry.declared import EnvironmentsFile
from ferry.environment import (
    EnvironmentInput,
    EnvironmentState,
    EnvironmentStatus,
    LenientPayload,
    PendingSpec,
    SpecUpdate,
    SpecUpdateResult,
)
from ferry.model import PEOPLE
from ferry.names import Query, Signal, Update
from ferry.spec import EnvironmentSpec, env_workflow_id

if TYPE_CHECKING:
    from workflows.environment import EnvironmentWorkflow


def environment_workflow() -> type[EnvironmentWorkflow]:
    """EnvironmentWorkflow, imported when a command starts, updates or plans one: `status` and `env list` need only
    the query's name and the models (the workflow module pulls temporalio.workflow and every activity stub)."""
    from workflows.environment import EnvironmentWorkflow

    return EnvironmentWorkflow


def load_environments(path: Path) -> list[EnvironmentSpec]:
    """Parse environments.yaml; the first problem names the environment, the field and the reason."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise CommandError(f"{path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise CommandError(f"{path}: YAML does not parse: {err}") from None
    if isinstance(raw, dict) and "environments" not in raw:
        raw = {"environments": [raw]}
    try:
        return EnvironmentsFile.model_validate(raw, context={PEOPLE: True}).environments
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = list(first["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "environments" and isinstance(loc[1], int):
            items = (raw or {}).get("environments") or []
            name = (
                items[loc[1]].get("name", f"#{loc[1]}")
                if loc[1] < len(items) and isinstance(items[loc[1]], dict)
                else f"#{loc[1]}"
            )
            where, loc = f"environment {name}: ", loc[2:]
        field = "".join(f"{p}: " if i == len(loc) - 1 else f"{p}." for i, p in enumerate(loc))
        reason = first["msg"].removeprefix("Value error, ")
        raise CommandError(
            f"{path}: {where}{field or ('' if ': unknown field' in reason else '(spec): ')}{reason}"
        ) from None


APPLY_ATTEMPTS = 8  # an aborted Update-with-Start (a busy worker, a cache eviction) is retried, with backoff
APPLY_BACKOFF_CAP = 8.0  # seconds: 0.5, 1, 2, 4, 8, 8, 8 (~32 s for a worker to catch up)
APPLY_WAIT = timedelta(seconds=60)  # one attempt's wait for a worker to accept the spec update (a queued fleet)
APPLY_WAITS = 3  # ... at most this many times (3 min): no worker polling at all is reported, not waited out
APPLY_CONCURRENCY = 16  # environments started/updated at once by `ferry env apply`: a fleet in seconds, bounded


async def apply_environments(
    client: Client,
    specs: list[EnvironmentSpec],
    task_queue: str,
    by: str = "",
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Start-or-update each EnvironmentWorkflow atomically (Update-with-Start: the spec update runs on the running
    workflow, or on one started for it), concurrently and bounded. A protected change of an approval-required
    environment comes back pending approval. One environment's failure is reported by name and does not stop the
    others (`error` in its row). `progress` is called with each row as it completes."""
    gate = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def one(spec: EnvironmentSpec) -> dict[str, Any]:
        async with gate:
            try:
                row = await _apply_one(client, spec, task_queue, by, force)
            except CommandError as err:
                row = {
                    "environment": spec.name,
                    "action": "failed",
                    "error": str(err),
                    "workflow_id": env_workflow_id(spec.name),
                }
        if progress is not None:
            progress(row)
        return row

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


async def _apply_one(client: Client, spec: EnvironmentSpec, task_queue: str, by: str, force: bool) -> dict[str, Any]:
    workflow_id = env_workflow_id(spec.name)
    state, started, note = await _starting_state(client, spec, force)

    def start() -> WithStartWorkflowOperation[Any, Any]:  # NB: an operation is used once; a retry needs another
        return WithStartWorkflowOperation(
            environment_workflow().run,
            EnvironmentInput(state=state),
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Environment {spec.name}: {spec.tracking} from {spec.repository}",
        )

    result = await _update_with_start(client, spec, SpecUpdate(spec=spec, by=by), start, task_queue, started)
    if started:
        action = "started" + note
    elif result.applied:
        action = "updated" if result.changes else "unchanged"
    else:
        action = (
            f"pending approval ({result.pending_id}): {'; '.join(result.changes)}\n"
            f"  approve with: ferry env approve {spec.name} --key ~/.ssh/id_ed25519"
        )
    return {
        "environment": spec.name,
        "action": action,
        "workflow_id": workflow_id,
        "changes": result.changes,
        "pending_id": result.pending_id,
    }


async def _starting_state(client: Client, spec: EnvironmentSpec, force: bool) -> tuple[EnvironmentState, bool, str]:
    """(the state a new run would start from, whether a run starts, a note): a running environment is updated; one
    whose earlier run ended (terminated, failed, ...) starts from that run's record, or is refused."""
    try:
        described = await client.get_workflow_handle(env_workflow_id(spec.name)).describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise CommandError(f"environment {spec.name}: {err.message}") from None
        return EnvironmentState(spec=spec), True, ""
    if described.status == WorkflowExecutionStatus.RUNNING:
        return EnvironmentState(spec=spec), False, ""
    state, note = await _from_last_run(client, spec, described.status, force)
    return state, True, note


async def _update_with_start(
    client: Client,
    spec: EnvironmentSpec,
    update: SpecUpdate,
    start: Callable[[], WithStartWorkflowOperation[Any, Any]],
    task_queue: str,
    started: bool,
) -> Any:
    """The spec update, starting the workflow if needed. NB: one update id for every attempt, so the server answers
    a retry of an update it already took with that update's outcome instead of running it twice."""
    update_id, waits = f"apply-{uuid.uuid4().hex}", 0
    for attempt in range(APPLY_ATTEMPTS):
        operation = start()
        try:
            return await client.execute_update_with_start_workflow(
                environment_workflow().update_spec,
                update,
                start_workflow_operation=operation,
                id=update_id,
                rpc_timeout=APPLY_WAIT,
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError as err:
            _consume(operation)
            if not isinstance(err.__cause__, RPCError):  # NB: the SDK's name for a cancelled call too (Ctrl-C)
                raise asyncio.CancelledError from err
            # no worker took the update within APPLY_WAIT (a fleet queued behind one busy worker, or none
            # polling): the same update id again waits for the same update
            waits += 1
            if waits == APPLY_WAITS or attempt + 1 == APPLY_ATTEMPTS:
                raise CommandError(_unanswered(spec, task_queue, started, waits)) from None
        except RPCError as err:
            _consume(operation)
            # "workflow update was aborted": the server cleared the workflow's update registry (its first
            # workflow task timed out on a busy worker, or the workflow left the server's cache); "Workflow Task in
            # failed state": its workflow task is being retried (timed out on a busy worker). Both pass.
            if attempt + 1 == APPLY_ATTEMPTS or not _update_retryable(err):
                raise CommandError(f"environment {spec.name}: spec refused: {root_cause(err)}") from None
            await asyncio.sleep(min(APPLY_BACKOFF_CAP, 0.5 * 2**attempt))
        except WorkflowUpdateFailedError as err:
            raise CommandError(f"environment {spec.name}: spec refused: {root_cause(err)}") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def _unanswered(spec: EnvironmentSpec, task_queue: str, started: bool, waits: int) -> str:
    return (
        f"environment {spec.name}: no worker on task queue {task_queue!r} accepted the spec within "
        f"{waits} x {APPLY_WAIT.total_seconds():.0f}s; "
        + (
            "if its start went through, its workflow carries this spec and applies it once a worker polls; "
            "apply again to confirm"
            if started
            else "the change is not confirmed: apply again once a worker polls"
        )
    )


def _consume(operation: WithStartWorkflowOperation[Any, Any]) -> None:
    """A failed attempt's start operation holds the failure for whoever asks for its handle; nobody will (the next
    attempt has its own), so mark it retrieved instead of asyncio logging 'exception was never retrieved'."""
    future = getattr(operation, "_workflow_handle", None)  # NB: the SDK's; workflow_handle() must be awaited
    with contextlib.suppress(Exception):
        if future is not None and future.done() and not future.cancelled():
            future.exception()


def _update_retryable(err: RPCError) -> bool:
    text = f"{err.message} {err.__cause__ or ''}".lower()
    return "aborted" in text or "workflow task in failed state" in text


async def _from_last_run(
    client: Client, spec: EnvironmentSpec, ended: Any, force: bool
) -> tuple[EnvironmentState, str]:
    """An environment recreated after its workflow ended keeps its holds, known-good history, tag bindings and
    used approvals (read from the last run by a query), so termination is no way around them."""
    try:
        last = (
            await client.get_workflow_handle(env_workflow_id(spec.name)).query(
                Query.STATUS, result_type=EnvironmentStatus, rpc_timeout=timedelta(seconds=10)
            )
        ).state
    except (RPCError, WorkflowQueryFailedError):
        # the new run reads the last run's record itself (its memo, ferry/recovery.py): holds, used approvals
        # and tag bindings come back without --force, and --force cannot drop them
        return EnvironmentState(spec=spec), (
            " (the last run's status cannot be read: the new run recovers its record from the last run's memo)"
        )
    # tag bindings and holds name versions of the last run's repository: another repository's 1.2.0 is another
    # artifact, so it starts unbound and unheld (a `make demo` on a kept stack re-releases 1.2.0 in a new one)
    same = last.spec.repository == spec.repository
    state = EnvironmentState(
        spec=spec,
        holds=last.holds if same else [],
        good_history=last.good_history,
        last_known_good=last.last_known_good,
        tags=last.tags if same else {},
        consumed_approvals=last.consumed_approvals,
    )
    return state, (
        f" (from the last run's record: {len(state.holds)} hold(s), {len(state.good_history)} known-good version(s))"
    )


async def environment_status(client: Client, name: str) -> EnvironmentStatus:
    try:
        status: EnvironmentStatus = await client.get_workflow_handle(env_workflow_id(name)).query(
            Query.STATUS, result_type=EnvironmentStatus
        )
        return status
    except RPCError as err:
        raise CommandError(
            f"environment {name!r}: {err.message} (is it declared on {where(client)}? `ferry env apply -f ...`)"
        ) from None


class ProgressLine:
    """One line redrawn in place on a terminal while environments are applied: a bar, done/total, failures."""

    WIDTH = 30

    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.draw()

    def advance(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.failed += bool(row.get("error"))
        self.draw(row["environment"])

    def draw(self, last: str = "") -> None:
        filled = self.WIDTH * self.done // max(self.total, 1)
        failed = f", {self.failed} failed" if self.failed else ""
        sys.stdout.write(
            f"\r\033[K[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
            f"environments{failed}  {last}"[:200]
        )
        sys.stdout.flush()

    def clear(self) -> None:
        sys.stdout.write("\r\033[K")
        sys.stdout.flush()


def cmd_env_apply(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    specs = load_environments(Path(args.file))

    bar = ProgressLine(len(specs)) if sys.stdout.isatty() and not args.json else None
    try:
        results = run_connected(
            settings,
            lambda client: apply_environments(
                client,
                specs,
                settings.temporal.task_queue,
                by=args.as_ or local_identity(),
                force=args.force,
                progress=bar.advance if bar else None,
            ),
        )
    finally:
        if bar:
            bar.clear()
    emit(
        results,
        args.json,
        "\n".join(
            f"{r['environment']}: {r['action']} ({r['workflow_id']})" + (f"\n  {r['error']}" if r.get("error") else "")
            for r in results
        ),
    )
    return 1 if any(r.get("error") for r in results) else 0


def _signal(name: str) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        settings = settings_from(args)

        async def go(client: Client) -> None:
            await environment_status(client, args.env)
            await client.get_workflow_handle(env_workflow_id(args.env)).signal(
                name, LenientPayload({"by": args.as_ or local_identity(), "reason": args.reason or ""})
            )

        run_connected(settings, go)
        print(f"{args.env}: {name.replace('_', ' ')} requested")
        return 0

    return cmd


def _spec_decision(args: argparse.Namespace, verb: str, who: str, pending: PendingSpec) -> dict[str, str]:
    """The approve/reject payload for a pending spec change; signed with --key (the statement names version "spec",
    the pending spec's digest, promotion env/<name> and run = the pending change id)."""
    payload = {"approver": who, "comment": args.comment or ""}
    if not args.key:
        return payload
    from cli.keys import expiry, private_key
    from ferry.approvals import Statement, sign_statement
    from ferry.sshsig import ApprovalError

    data, password, _ = private_key(args.key)
    try:
        statement = Statement(
            environment=args.env,
            version="spec",
            digest=pending.digest,
            promotion=env_workflow_id(args.env),
            run=pending.id,
            decision=verb,  # type: ignore[arg-type]
            approver=who,
            comment=args.comment or "",
            expires=expiry(args.expires),
        )
        proof = sign_statement(statement, data, password)
    except (ApprovalError, pydantic.ValidationError) as err:
        raise CommandError(f"cannot sign the {verb}: {err}") from None
    return payload | {"statement": proof.statement, "signature": proof.signature}


def _spec_decide(update: str) -> Any:
    """`ferry env approve|reject ENV`: decide the pending protected spec change, signed with --key when the
    environment requires signed approvals."""
    verb = update.split("_")[0]

    def cmd(args: argparse.Namespace) -> int:
        settings = settings_from(args)

        async def go(client: Client) -> SpecUpdateResult | dict[str, str]:
            pending = (await environment_status(client, args.env)).state.pending_spec
            if pending is None:
                raise CommandError(f"{args.env} has no spec change pending approval")
            who = args.as_ or local_identity()
            payload = _spec_decision(args, verb, who, pending)
            if args.print:
                return payload
            try:
                result: SpecUpdateResult = await client.get_workflow_handle(env_workflow_id(args.env)).execute_update(
                    update, LenientPayload(payload), result_type=SpecUpdateResult
                )
            except WorkflowUpdateFailedError as err:
                raise CommandError(f"{verb} of {pending.id} by {who} refused: {root_cause(err)} (recorded)") from None
            return result

        result = run_connected(settings, go)
        if isinstance(result, dict):
            print(json.dumps(result))
            return 0
        done = "applied" if result.applied else "rejected"
        print(f"{args.env}: spec change {done}: {'; '.join(result.changes) or 'no field changed'}")
        return 0

    return cmd


cmd_reconcile = _signal(Signal.RECONCILE_NOW)
cmd_suspend = _signal(Signal.SUSPEND)
cmd_resume = _signal(Signal.RESUME)
cmd_env_approve = _spec_decide(Update.APPROVE_SPEC)
cmd_env_reject = _spec_decide(Update.REJECT_SPEC)
