"""`ferry replay-check [--since 7d] [--limit 200] [--json]`: before a new worker build takes over, replay the open and
recently closed histories of Ferry's workflows in a namespace against the workflow code installed here, with the
worker's own sandbox and data converter. Prints OK/FAILED per run; exit 1 on any non-determinism (or any other
replay failure), so a deploy pipeline can stop before a build strands a running environment."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from cli.commands import REPLAY_MAX_LIMIT as MAX_LIMIT
from cli.common import CommandError, emit, run_connected, settings_from
from ferry.durations import parse_duration

# bounded: a namespace can hold millions of closed runs; a check that never ends checks nothing.
FAILURE_TEXT = 500  # characters of a replay failure kept in the report


@dataclass
class Checked:
    workflow_id: str
    run_id: str
    workflow_type: str
    status: str
    events: int
    ok: bool
    failure: str = ""
    nondeterminism: bool = False

    def line(self) -> str:
        head = (
            f"{'OK' if self.ok else 'FAILED':<6} {self.workflow_type:<20} {self.workflow_id}  run {self.run_id}  "
            f"({self.status.lower()}, {self.events} events)"
        )
        return head if self.ok else f"{head}\n       {self.failure}"


def workflow_names(workflows: Sequence[type]) -> list[str]:
    names = []
    for cls in workflows:
        defn = workflow._Definition.from_class(cls)
        if defn is None or defn.name is None:
            raise CommandError(f"{cls.__name__} is not a named workflow definition")
        names.append(defn.name)
    return names


def visibility_query(names: Sequence[str], since: dt.datetime) -> str:
    types = ", ".join(f"'{name}'" for name in names)
    cutoff = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"WorkflowType IN ({types}) AND (ExecutionStatus = 'Running' OR CloseTime >= '{cutoff}')"


async def replay_check(
    client: Client, *, since: dt.timedelta, limit: int, workflows: Sequence[type] | None = None
) -> list[Checked]:
    """Replay every matching run (newest first, at most `limit`) with the worker's sandbox; -> one entry per run.
    `workflows` defaults to the worker's own list; a test passes a changed class under the same name."""
    from workers.worker import all_workflows, workflow_runner

    classes = list(workflows) if workflows is not None else all_workflows()
    query = visibility_query(workflow_names(classes), dt.datetime.now(dt.UTC) - since)
    runs = [wf async for wf in client.list_workflows(query, limit=limit)]
    checked: dict[str, Checked] = {}

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for wf in runs:
            history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
            checked[wf.run_id] = Checked(
                workflow_id=wf.id,
                run_id=wf.run_id,
                workflow_type=wf.workflow_type,
                status=wf.status.name if wf.status else "UNKNOWN",
                events=len(history.events),
                ok=True,
            )
            yield history

    replayer = Replayer(workflows=classes, workflow_runner=workflow_runner(), data_converter=pydantic_data_converter)
    results = await replayer.replay_workflows(histories(), raise_on_replay_failure=False)
    for run_id, failure in results.replay_failures.items():
        entry = checked[run_id]
        entry.ok = False
        entry.nondeterminism = type(failure).__name__ == "NondeterminismError"
        entry.failure = f"{type(failure).__name__}: {failure}"[:FAILURE_TEXT]
    return [checked[wf.run_id] for wf in runs]


def cmd_replay_check(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        since = parse_duration(args.since)
    except ValueError as err:
        raise CommandError(f"--since {args.since!r}: {err}") from None
    if not 1 <= args.limit <= MAX_LIMIT:
        raise CommandError(f"--limit must be between 1 and {MAX_LIMIT}")

    checked = run_connected(settings, lambda client: replay_check(client, since=since, limit=args.limit))
    failed = [c for c in checked if not c.ok]
    summary = (
        f"{len(checked)} runs replayed against the installed workflow code (namespace "
        f"{settings.temporal.namespace} at {settings.temporal.address}, open or closed in the last {args.since}"
        f"{f', newest {args.limit}' if len(checked) == args.limit else ''}): "
        f"{len(checked) - len(failed)} OK, {len(failed)} FAILED"
    )
    report: dict[str, Any] = {
        "namespace": settings.temporal.namespace,
        "since": args.since,
        "limit": args.limit,
        "ok": not failed,
        "runs": [c.__dict__ for c in checked],
    }
    emit(report, args.json, "\n".join([*(c.line() for c in checked), summary]))
    return 1 if failed else 0
