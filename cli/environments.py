"""`ferry env apply|list`, `ferry status|diff|reconcile|suspend|resume ENV`: declaring and operating environments."""

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
from ferry.reconcile import PlanRequest
from ferry.spec import EnvironmentSpec, env_workflow_id
from workers.client import workflow_url

if TYPE_CHECKING:
    from workflows.environment import EnvironmentWorkflow


def _workflow() -> type[EnvironmentWorkflow]:
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
            _workflow().run,
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
                _workflow().update_spec,
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


def describe(status: EnvironmentStatus, ui: str) -> str:
    s = status.state
    lines = [f"environment   {status.name}  ({ui})", f"tracks        {status.tracking}"]
    if s.pin:
        lines.append(f"pinned        {s.pin.version} {s.pin.digest}  ({s.pin.kind} by {s.pin.by}: {s.pin.reason})")
    if s.last_applied:
        a = s.last_applied
        lines.append(f"applied       {a.version} {a.digest}  revision {a.revision or '-'}  at {a.at}  ({a.changes})")
    lines.append(f"health        {s.health.status}: {s.health.reason}")
    if s.last_known_good:
        lines.append(f"known-good    {s.last_known_good.version} {s.last_known_good.digest}")
    if s.holds:
        lines.append(f"holds         {', '.join(s.holds)}")
    source = f"unavailable since {s.source_unavailable_since}: {s.source_error}" if s.source_unavailable_since else "ok"
    cluster = (
        f"unreachable since {s.cluster_unreachable_since}: {s.cluster_error}" if s.cluster_unreachable_since else "ok"
    )
    lines += [f"source        {source}", f"cluster       {cluster}"]
    if s.blocked:
        lines.append(f"blocked       {s.blocked}")
    if s.pending_spec:
        p = s.pending_spec
        lines.append(f"spec pending  {p.id} by {p.by} at {p.at}: {'; '.join(p.changes)}")
        lines.append(f"              approve with: ferry env approve {status.name} --key ~/.ssh/id_ed25519")
    if s.last_error:
        lines.append(f"last error    {s.last_error}")
    if s.last_drift:
        objs = "; ".join(f"{o} {', '.join(f)}" for o, f in s.last_drift.objects.items())
        lines.append(f"last drift    {s.last_drift.at}: {objs}")
    lines.append(f"suspended     {'yes' if s.suspended else 'no'}")
    lines.append(f"next          {s.next_reconcile_at or '-'}  (iteration {s.iterations})")
    refused = [e for e in s.events if e.type.endswith("Refused")]
    for e in refused[-5:]:
        lines.append(f"refused       {e.at} {e.message}")
    return "\n".join(lines)


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


async def pending_promotions(client: Client, environment: str) -> list[Any]:
    """Running promotions of this environment, with every decision recorded so far (refusals included)."""
    out = []
    query = f"WorkflowType = 'PromotionWorkflow' AND ExecutionStatus = 'Running' AND FerryEnvironment = '{environment}'"
    async for wf in client.list_workflows(query):
        from ferry.promotion import PromotionStatus  # loaded only when there is one to read

        out.append(await client.get_workflow_handle(wf.id).query(Query.STATUS, result_type=PromotionStatus))
    return out


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def go(client: Client) -> tuple[EnvironmentStatus, list[Any]]:
        status, promotions = await asyncio.gather(
            environment_status(client, args.env), pending_promotions(client, args.env)
        )
        return status, promotions

    status, promotions = run_connected(settings, go)
    text = describe(status, workflow_url(settings.temporal, env_workflow_id(args.env)))
    for p in promotions:
        text += (
            f"\npromotion     {p.version} {p.digest}  {p.phase} (requested by {p.requested_by}, "
            f"published by {p.publisher or '?'}, deadline {p.deadline or '-'})"
        )
        text += (
            f"\n  may approve: {', '.join(p.approvers) or '-'} ({'signed' if p.signed else 'claimed names'}; "
            f"not the publisher)"
        )
        for d in p.decisions:
            verdict = "accepted" if d.accepted else f"REFUSED: {d.reason}"
            proof = f"verified {d.fingerprint}" if d.verified else "claimed"
            text += f"\n  {d.at} {d.action} by {d.by} ({proof}) via {d.via}: {verdict}"
    emit({**status.model_dump(), "promotions": [p.model_dump() for p in promotions]}, args.json, text)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def go(client: Client) -> Any:
        await environment_status(client, args.env)
        handle = client.get_workflow_handle(env_workflow_id(args.env))
        try:
            return await handle.execute_update(_workflow().plan, PlanRequest(version=args.version))
        except WorkflowUpdateFailedError as err:
            raise CommandError(f"diff {args.env}: {root_cause(err)}") from None

    plan = run_connected(settings, go)
    lines = [f"plan for {args.env} at {plan.version} ({plan.digest})"]
    for change in plan.changes:
        fields = f"  {', '.join(change.fields)}" if change.fields else ""
        lines.append(f"  {change.action:<7} {change.object}{fields}")
    lines += [f"  prune   {obj}" for obj in plan.prune]
    if plan.more:
        lines.append(f"  ... and {plan.more} more changes (the first {len(plan.changes) + len(plan.prune)} are listed)")
    if not plan.changes and not plan.prune:
        lines.append("  no changes")
    emit(plan.model_dump(), args.json, "\n".join(lines))
    return 0


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
