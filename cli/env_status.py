"""`ferry status|diff ENV`: an environment's state and its pending promotions, and the plan a reconcile would apply,
rendered for a person (or as JSON)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError

from cli.common import CommandError, emit, root_cause, run_connected, settings_from
from cli.environments import environment_status, environment_workflow
from ferry.environment import EnvironmentStatus
from ferry.names import Query
from ferry.reconcile import PlanRequest
from ferry.spec import env_workflow_id
from workers.client import workflow_url


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
    if s.spec.strategy is not None:
        primary = f"{s.primary.version} {s.primary.digest}" if s.primary else "not made yet"
        lines.append(f"primary       {primary}  ({s.spec.strategy.kind_words()})")
    if s.canary is not None:
        lines.append(
            f"rolling out   {s.canary.version} since {s.canary.started_at}  (ferry rollout status {s.spec.name})"
        )
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
            return await handle.execute_update(
                environment_workflow().plan, PlanRequest(version=args.version, pending=args.pending)
            )
        except WorkflowUpdateFailedError as err:
            raise CommandError(f"diff {args.env}: {root_cause(err)}") from None

    plan = run_connected(settings, go)
    with_spec = " with the spec change awaiting approval" if args.pending else ""
    lines = [f"plan for {args.env} at {plan.version} ({plan.digest}){with_spec}"]
    for change in plan.changes:
        fields = f"  {', '.join(change.fields)}" if change.fields else ""
        lines.append(f"  {change.action:<7} {change.object}{fields}")
        lines += [f"          {line}" for line in change.secret]  # a Secret's keys, each value by its keyed hash
    lines += [f"  prune   {obj}" for obj in plan.prune]
    if plan.more:
        lines.append(f"  ... and {plan.more} more changes (the first {len(plan.changes) + len(plan.prune)} are listed)")
    if not plan.changes and not plan.prune:
        lines.append("  no changes")
    emit(plan.model_dump(), args.json, "\n".join(lines))
    return 0
