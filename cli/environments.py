"""`ferry env apply|list`, `ferry status|diff|reconcile|suspend|resume ENV`: declaring and operating environments."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import yaml
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

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
from cli.keys import KEY_PASSWORD_VARIABLE, expiry, private_key
from ferry.approvals import ApprovalError, Statement, sign_statement
from ferry.environment import (
    PEOPLE,
    EnvironmentInput,
    EnvironmentsFile,
    EnvironmentSpec,
    EnvironmentState,
    EnvironmentStatus,
    LenientPayload,
    PlanRequest,
    SpecUpdate,
    SpecUpdateResult,
    env_workflow_id,
)
from workers.client import connect, workflow_url
from workflows.environment import EnvironmentWorkflow


def load_environments(path: Path) -> list[EnvironmentSpec]:
    """Parse environments.yaml; the first problem names the environment, the field and the reason."""
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
            name = items[loc[1]].get("name", f"#{loc[1]}") if loc[1] < len(items) and isinstance(
                items[loc[1]], dict) else f"#{loc[1]}"
            where, loc = f"environment {name}: ", loc[2:]
        field = "".join(f"{p}: " if i == len(loc) - 1 else f"{p}." for i, p in enumerate(loc))
        reason = first["msg"].removeprefix("Value error, ")
        raise CommandError(f"{path}: {where}{field or ('' if ': unknown field' in reason else '(spec): ')}{reason}"
                           ) from None


APPLY_ATTEMPTS = 5  # an aborted Update-with-Start (a busy worker, a cache eviction) is retried, with backoff
APPLY_CONCURRENCY = 16  # environments started/updated at once by `ferry env apply`: a fleet in seconds, bounded


async def apply_environments(client: Client, specs: list[EnvironmentSpec], task_queue: str, by: str = "",
                             force: bool = False) -> list[dict[str, Any]]:
    """Start-or-update each EnvironmentWorkflow atomically (Update-with-Start: the spec update runs on the running
    workflow, or on one started for it), concurrently and bounded. A protected change of an approval-required
    environment comes back pending approval. One environment's failure is reported by name and does not stop the
    others (`error` in its row)."""
    gate = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def one(spec: EnvironmentSpec) -> dict[str, Any]:
        async with gate:
            try:
                return await _apply_one(client, spec, task_queue, by, force)
            except CommandError as err:
                return {"environment": spec.name, "action": "failed", "error": str(err),
                        "workflow_id": env_workflow_id(spec.name)}

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


async def _apply_one(client: Client, spec: EnvironmentSpec, task_queue: str, by: str, force: bool) -> dict[str, Any]:
    workflow_id = env_workflow_id(spec.name)
    state, started, note = EnvironmentState(spec=spec), True, ""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
        started = described.status != WorkflowExecutionStatus.RUNNING
        if started:  # an earlier run ended (terminated, failed, ...): start from its record, or refuse
            state, note = await _from_last_run(client, spec, described.status, force)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise CommandError(f"environment {spec.name}: {err.message}") from None
    def start() -> WithStartWorkflowOperation[Any, Any]:  # NB: an operation is used once; a retry needs another
        return WithStartWorkflowOperation(
            EnvironmentWorkflow.run, EnvironmentInput(state=state), id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Environment {spec.name}: {spec.tracking} from {spec.repository}")

    # NB: one update id for every attempt, so the server answers a retry of an update it already took with that
    # update's outcome instead of running it twice
    update_id = f"apply-{uuid.uuid4().hex}"
    for attempt in range(APPLY_ATTEMPTS):
        try:
            result = await client.execute_update_with_start_workflow(
                EnvironmentWorkflow.update_spec, SpecUpdate(spec=spec, by=by), start_workflow_operation=start(),
                id=update_id)
            break
        except RPCError as err:
            # NB: "workflow update was aborted": the server cleared the workflow's update registry (its first
            # workflow task timed out on a busy worker, or the workflow left the server's cache); retryable
            if attempt + 1 < APPLY_ATTEMPTS and _update_aborted(err):
                await asyncio.sleep(0.5 * 2 ** attempt)
                continue
            raise CommandError(f"environment {spec.name}: spec refused: {root_cause(err)}") from None
        except WorkflowUpdateFailedError as err:
            raise CommandError(f"environment {spec.name}: spec refused: {root_cause(err)}") from None
    if started:
        action = "started" + note
    elif result.applied:
        action = "updated" if result.changes else "unchanged"
    else:
        action = (f"pending approval ({result.pending_id}): {'; '.join(result.changes)}\n"
                  f"  approve with: ferry env approve {spec.name} --key ~/.ssh/id_ed25519")
    return {"environment": spec.name, "action": action, "workflow_id": workflow_id, "changes": result.changes,
            "pending_id": result.pending_id}


def _update_aborted(err: RPCError) -> bool:
    return "aborted" in f"{err.message} {err.__cause__ or ''}".lower()


async def _from_last_run(client: Client, spec: EnvironmentSpec, ended: Any, force: bool
                         ) -> tuple[EnvironmentState, str]:
    """An environment recreated after its workflow ended keeps its holds, known-good history, tag bindings and
    used approvals (read from the last run by a query), so termination is no way around them."""
    try:
        last = (await client.get_workflow_handle(env_workflow_id(spec.name)).query(
            EnvironmentWorkflow.status, rpc_timeout=timedelta(seconds=10))).state
    except (RPCError, WorkflowQueryFailedError) as err:
        if not force:
            raise CommandError(f"environment {spec.name}: its last run ended ({getattr(ended, 'name', ended)}) and "
                               f"its record cannot be read ({err}); --force starts it without its holds and "
                               "known-good history") from None
        return EnvironmentState(spec=spec), " (--force: without the last run's record)"
    state = EnvironmentState(spec=spec, holds=last.holds, good_history=last.good_history,
                             last_known_good=last.last_known_good, tags=last.tags,
                             consumed_approvals=last.consumed_approvals)
    return state, (f" (from the last run's record: {len(last.holds)} hold(s), {len(last.good_history)} known-good "
                   "version(s))")


async def environment_status(client: Client, name: str) -> EnvironmentStatus:
    try:
        return await client.get_workflow_handle(env_workflow_id(name)).query(EnvironmentWorkflow.status)
    except RPCError as err:
        raise CommandError(f"environment {name!r}: {err.message} (is it declared? `ferry env apply -f ...`)") from None


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
    cluster = (f"unreachable since {s.cluster_unreachable_since}: {s.cluster_error}"
               if s.cluster_unreachable_since else "ok")
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


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def cmd_env_apply(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    specs = load_environments(Path(args.file))

    async def go() -> list[dict[str, Any]]:
        client = await connect(settings.temporal, identity=cli_identity())
        return await apply_environments(client, specs, settings.temporal.task_queue, by=args.as_ or local_identity(),
                                        force=args.force)

    results = _run(go())
    emit(results, args.json, "\n".join(f"{r['environment']}: {r['action']} ({r['workflow_id']})" +
                                       (f"\n  {r['error']}" if r.get("error") else "") for r in results))
    return 1 if any(r.get("error") for r in results) else 0


def cmd_env_list(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def go() -> list[tuple[str, EnvironmentStatus | None, str]]:
        client = await connect(settings.temporal, identity=cli_identity())
        names = [wf.id.removeprefix("env/") async for wf in client.list_workflows(
            "WorkflowType = 'EnvironmentWorkflow' AND ExecutionStatus = 'Running'")]
        out: list[tuple[str, EnvironmentStatus | None, str]] = []
        for name in sorted(set(names)):
            try:  # NB: one environment whose worker is down must not hide the others
                handle = client.get_workflow_handle(env_workflow_id(name))
                status = await handle.query(EnvironmentWorkflow.status, rpc_timeout=timedelta(seconds=5))
                out.append((name, status, ""))
            except RPCError as err:
                out.append((name, None, f"no answer: {err.message}"))
        return out

    statuses = _run(go())
    rows = [f"{name:<16} {s.tracking:<24} {(s.state.last_applied.version if s.state.last_applied else '-'):<10} "
            f"{s.state.health.status:<11} {'suspended' if s.state.suspended else ''}" if s else
            f"{name:<16} {'?':<24} {'?':<10} {'Unknown':<11} {error}" for name, s, error in statuses]
    emit([s.model_dump() if s else {"name": n, "error": e} for n, s, e in statuses], args.json,
         "\n".join([f"{'NAME':<16} {'TRACKS':<24} {'APPLIED':<10} {'HEALTH':<11}", *rows]))
    return 0


async def pending_promotions(client: Client, environment: str) -> list[Any]:
    """Running promotions of this environment, with every decision recorded so far (refusals included)."""
    from ferry.promotion import PromotionStatus

    out = []
    query = (f"WorkflowType = 'PromotionWorkflow' AND ExecutionStatus = 'Running' AND "
             f"FerryEnvironment = '{environment}'")
    async for wf in client.list_workflows(query):
        out.append(await client.get_workflow_handle(wf.id).query("status", result_type=PromotionStatus))
    return out


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def go() -> tuple[EnvironmentStatus, list[Any]]:
        client = await connect(settings.temporal, identity=cli_identity())
        return await environment_status(client, args.env), await pending_promotions(client, args.env)

    status, promotions = _run(go())
    text = describe(status, workflow_url(settings.temporal, env_workflow_id(args.env)))
    for p in promotions:
        text += f"\npromotion     {p.version} {p.digest}  {p.phase} (requested by {p.requested_by}, " \
                f"published by {p.publisher or '?'}, deadline {p.deadline or '-'})"
        text += f"\n  may approve: {', '.join(p.approvers) or '-'} ({'signed' if p.signed else 'claimed names'}; " \
                f"not the publisher)"
        for d in p.decisions:
            verdict = "accepted" if d.accepted else f"REFUSED: {d.reason}"
            proof = f"verified {d.fingerprint}" if d.verified else "claimed"
            text += f"\n  {d.at} {d.action} by {d.by} ({proof}) via {d.via}: {verdict}"
    emit({**status.model_dump(), "promotions": [p.model_dump() for p in promotions]}, args.json, text)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def go() -> Any:
        client = await connect(settings.temporal, identity=cli_identity())
        await environment_status(client, args.env)
        handle = client.get_workflow_handle(env_workflow_id(args.env))
        try:
            return await handle.execute_update(EnvironmentWorkflow.plan, PlanRequest(version=args.version))
        except WorkflowUpdateFailedError as err:
            raise CommandError(f"diff {args.env}: {root_cause(err)}") from None

    plan = _run(go())
    lines = [f"plan for {args.env} at {plan.version} ({plan.digest})"]
    for change in plan.changes:
        fields = f"  {', '.join(change['fields'])}" if change["fields"] else ""
        lines.append(f"  {change['action']:<7} {change['object']}{fields}")
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

        async def go() -> None:
            client = await connect(settings.temporal, identity=cli_identity())
            await environment_status(client, args.env)
            await client.get_workflow_handle(env_workflow_id(args.env)).signal(
                name, LenientPayload({"by": args.as_ or local_identity(), "reason": args.reason or ""}))

        _run(go())
        print(f"{args.env}: {name.replace('_', ' ')} requested")
        return 0

    return cmd


def _spec_decide(update: str) -> Any:
    """`ferry env approve|reject ENV`: decide the pending protected spec change, signed with --key when the
    environment requires signed approvals (the statement names version "spec", the pending spec's digest,
    promotion env/<name> and run = the pending change id)."""
    verb = update.split("_")[0]

    def cmd(args: argparse.Namespace) -> int:
        settings = settings_from(args)

        async def go() -> SpecUpdateResult | dict[str, str]:
            client = await connect(settings.temporal, identity=cli_identity())
            pending = (await environment_status(client, args.env)).state.pending_spec
            if pending is None:
                raise CommandError(f"{args.env} has no spec change pending approval")
            who = args.as_ or local_identity()
            payload = {"approver": who, "comment": args.comment or ""}
            if args.key:
                data, password, _ = private_key(args.key)
                try:
                    statement = Statement(environment=args.env, version="spec", digest=pending.digest,
                                          promotion=env_workflow_id(args.env), run=pending.id, decision=verb,  # type: ignore[arg-type]
                                          approver=who, comment=args.comment or "", expires=expiry(args.expires))
                    proof = sign_statement(statement, data, password)
                except (ApprovalError, pydantic.ValidationError) as err:
                    raise CommandError(f"cannot sign the {verb}: {err}") from None
                payload |= {"statement": proof.statement, "signature": proof.signature}
            if args.print:
                return payload
            try:
                result: SpecUpdateResult = await client.get_workflow_handle(env_workflow_id(args.env)).execute_update(
                    update, LenientPayload(payload), result_type=SpecUpdateResult)
            except WorkflowUpdateFailedError as err:
                raise CommandError(f"{verb} of {pending.id} by {who} refused: {root_cause(err)} (recorded)") from None
            return result

        result = _run(go())
        if isinstance(result, dict):
            print(json.dumps(result))
            return 0
        done = "applied" if result.applied else "rejected"
        print(f"{args.env}: spec change {done}: {'; '.join(result.changes) or 'no field changed'}")
        return 0

    return cmd


def register(sub: Any) -> None:
    env = sub.add_parser("env", help="declare environments (environments.yaml) and list them")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    apply = env_sub.add_parser("apply", help="start or update one EnvironmentWorkflow per environment")
    apply.add_argument("-f", "--file", required=True)
    apply.add_argument("--as", dest="as_", default=None, help="who (default: the local user or CI actor)")
    apply.add_argument("--force", action="store_true", help="recreate an environment whose last run ended even if "
                       "its record (holds, known-good history) cannot be read")
    apply.set_defaults(func=cmd_env_apply)
    for verb in ("approve", "reject"):
        decide = env_sub.add_parser(verb, help=f"{verb} the spec change pending approval (protected fields of an "
                                    "approval-required environment)")
        decide.add_argument("env")
        decide.add_argument("--as", dest="as_", default=None, help="who (default: the local user)")
        decide.add_argument("--comment", default=None)
        decide.add_argument("--key", default=None, help=f"OpenSSH private key to sign with (password from "
                            f"{KEY_PASSWORD_VARIABLE})")
        decide.add_argument("--expires", default="1h", help="how long the signed decision is valid (default 1h)")
        decide.add_argument("--print", action="store_true", help="print the JSON to send instead of sending it")
        global_options(decide)
        decide.set_defaults(func=_spec_decide(f"{verb}_spec"))
    listing = env_sub.add_parser("list", help="every running environment with its version and health")
    listing.set_defaults(func=cmd_env_list)
    for p in (apply, listing):
        p.add_argument("--json", action="store_true")
        global_options(p)
    status = sub.add_parser("status", help="an environment's version, pin, health, drift, holds, outages")
    status.add_argument("env")
    status.set_defaults(func=cmd_status)
    diff = sub.add_parser("diff", help="what a reconcile would change, without applying")
    diff.add_argument("env")
    diff.add_argument("--version", default=None, help="plan another released version instead")
    diff.set_defaults(func=cmd_diff)
    for p in (status, diff):
        p.add_argument("--json", action="store_true")
        global_options(p)
    for name, help_ in (("reconcile", "reconcile now"), ("suspend", "stop applying (new versions and drift)"),
                        ("resume", "start applying again")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("env")
        p.add_argument("--reason", default="")
        p.add_argument("--as", dest="as_", default=None, help="who (default: the local user)")
        global_options(p)
        p.set_defaults(func=_signal({"reconcile": "reconcile_now"}.get(name, name)))


COMMANDS.append(register)
