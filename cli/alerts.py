"""`ferry alerts apply -f FILE` · `ferry alerts status`: declare alerts (which events go to which provider) and see
what was routed, deduplicated and given up. Providers' URLs and secrets are not here: the worker reads them from
FERRY_ALERT_PROVIDERS."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pydantic
import yaml
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from cli.common import CommandError, cli_identity, emit, local_identity, root_cause, settings_from
from ferry.alert_router import ALERT_ROUTER_ID, AlertRouterInput, AlertRouterState, AlertsUpdate
from ferry.alerts import AlertsFile
from ferry.model import PEOPLE
from workers.client import connect, workflow_url
from workflows.alerts import AlertRouterWorkflow

MAX_FILE = 1024 * 1024


def load_alerts(path: Path) -> AlertsFile:
    """`alerts:` from a file of its own or from environments.yaml (its `environments:` are `ferry env apply`'s)."""
    try:
        if path.stat().st_size > MAX_FILE:
            raise CommandError(f"{path}: larger than {MAX_FILE} bytes")
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise CommandError(f"{path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise CommandError(f"{path}: YAML does not parse: {err}") from None
    if not isinstance(raw, dict) or "alerts" not in raw:
        raise CommandError(f"{path}: no `alerts:` list")
    unknown = sorted(set(raw) - {"alerts", "environments"})
    if unknown:
        raise CommandError(f"{path}: {unknown[0]}: unknown field (a file holds `alerts:` and `environments:`)")
    try:
        return AlertsFile.model_validate({"alerts": raw["alerts"]}, context={PEOPLE: True})
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = list(first["loc"])
        where = ""
        if len(loc) >= 2 and isinstance(loc[1], int):
            items = raw["alerts"] if isinstance(raw["alerts"], list) else []
            item = items[loc[1]] if loc[1] < len(items) else None
            where = f"alert {item.get('name', '#' + str(loc[1])) if isinstance(item, dict) else '#' + str(loc[1])}: "
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        raise CommandError(
            f"{path}: {where}{field + ': ' if field else ''}{first['msg'].removeprefix('Value error, ')}"
        ) from None


def cmd_apply(args: argparse.Namespace) -> int:
    alerts = load_alerts(Path(args.file))
    settings = settings_from(args)

    async def run() -> dict[str, Any]:
        client = await connect(settings.temporal, identity=cli_identity())
        start = WithStartWorkflowOperation(
            AlertRouterWorkflow.run,
            AlertRouterInput(),
            id=ALERT_ROUTER_ID,
            task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary="Alert router: routes Ferry's events to the declared alerts' providers",
        )
        try:
            result = await client.execute_update_with_start_workflow(
                AlertRouterWorkflow.apply_alerts,
                AlertsUpdate(alerts=alerts.alerts, by=local_identity()),
                start_workflow_operation=start,
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            raise CommandError(f"alerts refused: {root_cause(err)}") from None
        return {
            "alerts": result.alerts,
            "changes": result.changes,
            "url": workflow_url(settings.temporal, ALERT_ROUTER_ID),
        }

    out = asyncio.run(run())
    emit(
        out,
        args.json,
        f"alerts: {', '.join(out['alerts']) or 'none'}\n"
        f"{'; '.join(out['changes']) or 'no change'}\nrouter: {out['url']}",
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def run() -> AlertRouterState:
        client = await connect(settings.temporal, identity=cli_identity())
        try:
            return await client.get_workflow_handle(ALERT_ROUTER_ID).query(AlertRouterWorkflow.status)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise CommandError("no alerts declared (ferry alerts apply -f FILE)") from None
            raise

    state = asyncio.run(run())
    lines = [
        f"{a.name:<20} → {a.provider:<16} environments {','.join(a.environments)}  events "
        f"{','.join(a.events)}  severity >= {a.severity}  deadline {a.deadline}"
        f"{'  SUSPENDED' if a.suspend else ''}"
        for a in state.alerts
    ]
    lines.append("counts: " + (", ".join(f"{k} {v}" for k, v in sorted(state.counts.items())) or "none"))
    lines += [
        f"delivering {p.notification.type} {p.notification.environment} → {p.alert} ({p.provider}) until "
        f"{p.deadline_at}"
        for p in state.pending
    ]
    lines += [
        f"UNDELIVERED {u.at} {u.type} {u.environment} → {u.alert} ({u.provider}): {u.reason}" for u in state.undelivered
    ]
    emit(state.model_dump(mode="json"), args.json, "\n".join(lines))
    return 1 if state.undelivered and args.strict else 0
