"""`ferry audit [ENV] [--since DURATION] [--json] [--verify]`: the timeline, from Temporal's workflow histories alone.

The rules (whose runs count, which approvers were in force, the window) are `ferry/audit.py`'s; this module reads
Visibility and histories, and cli/audit_entries.py turns each history's events into entries. Every payload in a
history is hostile input: each is decoded on its own, and one that does not decode is shown as such, never fatal to
the timeline."""

from __future__ import annotations

import argparse
import datetime as dt

from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecution

from cli.audit_entries import AuditEntry, client_words, entries_from_history, event_sender
from cli.common import emit, run_connected, settings_from
from cli.environments import environment_status
from cli.history_payloads import as_dict, decode, event_stamp, event_time, memo_of
from ferry.audit import (
    FERRY_WORKFLOW_TYPES,
    SignedRecord,
    SpecTracker,
    exclusion,
    in_force_at,
    in_window,
    parse_time,
    verify_against,
    verify_record,
    visibility_time,
    window_query,
)
from ferry.durations import parse_duration
from ferry.names import ENV_PREFIX, ENVIRONMENT_WORKFLOW, RELEASE_WORKFLOW, Memo, SearchAttribute
from ferry.settings import TemporalSettings
from workers.client import workflow_url

__all__ = ["AuditEntry", "SignedRecord", "build_timeline", "cmd_audit", "entries_from_history", "verify_record"]

TYPES = FERRY_WORKFLOW_TYPES
EXCLUDED = "excluded run"


async def _earlier_run(client: Client, workflow_id: str, started: dt.datetime) -> bool:
    query = f"WorkflowId = '{_quoted(workflow_id)}' AND StartTime < '{visibility_time(started)}'"
    async for _ in client.list_workflows(query, limit=1):
        return True
    return False


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def _specs_in_force(
    client: Client, temporal: TemporalSettings, environment: str, earliest: dt.datetime, latest: dt.datetime
) -> SpecTracker:
    """The environment's approval policy through the runs of env/<name> that were open between the decisions'
    times, read from their own histories (only runs Ferry's workers served)."""
    tracker = SpecTracker()
    query = (
        f"WorkflowId = '{_quoted(ENV_PREFIX + environment)}' AND StartTime <= '{visibility_time(latest)}' "
        f"AND (CloseTime >= '{visibility_time(earliest)}' OR ExecutionStatus = 'Running')"
    )
    runs = [wf async for wf in client.list_workflows(query)]
    for wf in sorted(runs, key=lambda w: w.start_time):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        events = list(history.events)
        started = events[0].workflow_execution_started_event_attributes if events else None
        if started is None or exclusion(wf.workflow_type, started.task_queue.name, temporal.task_queue):
            continue
        for event in events:
            _feed(tracker, wf.run_id, event)
    return tracker


def _feed(tracker: SpecTracker, run_id: str, event: HistoryEvent) -> None:
    et = event.event_type
    if et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        tracker.started(
            event_time(event),
            run_id,
            as_dict(decode(event.workflow_execution_started_event_attributes.input)).get("state"),
        )
    elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
        request = event.workflow_execution_update_accepted_event_attributes.accepted_request
        tracker.update_accepted(request.meta.update_id, request.input.name, decode(request.input.args))
    elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
        record = memo_of(event, Memo.EVENT)
        if isinstance(record, dict):
            tracker.recorded(event_time(event), record)


async def verify_signed(
    client: Client, temporal: TemporalSettings, signed: list[SignedRecord]
) -> list[tuple[SignedRecord, str]]:
    """Each signed decision against its environment's approvers in force when it was recorded -> the failures."""
    failures: list[tuple[SignedRecord, str]] = []
    by_environment: dict[str, list[SignedRecord]] = {}
    for record in signed:
        by_environment.setdefault(str(record.started.get("environment") or ""), []).append(record)
    for environment, records in by_environment.items():
        times = [parse_time(r.at) for r in records]
        tracker = (
            await _specs_in_force(client, temporal, environment, min(times), max(times))
            if environment
            else SpecTracker()
        )
        for record, at in zip(records, times, strict=True):
            if problem := verify_against(record, in_force_at(tracker.steps, at)):
                failures.append((record, problem))
    return failures


async def build_timeline(
    client: Client,
    temporal: TemporalSettings,
    environment: str | None,
    since: dt.timedelta,
    signed: list[SignedRecord] | None = None,
    now: dt.datetime | None = None,
) -> list[AuditEntry]:
    """Entries of Ferry's runs (Ferry's workflow types on Ferry's task queue) whose events fall at or after
    now - since; a run of Ferry's types elsewhere is one `excluded run` entry naming its task queue."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - since
    query = window_query(cutoff)
    if environment:
        query += await _environment_scope(client, environment)
    entries: list[AuditEntry] = []
    async for wf in client.list_workflows(query):
        entries += await _run_entries(client, temporal, wf, cutoff, signed)
    return sorted(entries, key=lambda e: e.at)


async def _environment_scope(client: Client, environment: str) -> str:
    """The query clause for one environment: its own workflows, and the releases of the repository it deploys."""
    repository = (await environment_status(client, environment)).state.spec.repository
    return (
        f" AND ({SearchAttribute.ENVIRONMENT} = '{_quoted(environment)}' OR "
        f"(WorkflowType = '{RELEASE_WORKFLOW}' AND {SearchAttribute.REPOSITORY} = '{_quoted(repository)}'))"
    )


async def _run_entries(
    client: Client,
    temporal: TemporalSettings,
    wf: WorkflowExecution,
    cutoff: dt.datetime,
    signed: list[SignedRecord] | None,
) -> list[AuditEntry]:
    """One run's entries in the window (its signed decisions in the window go into `signed`), or its one
    `excluded run` entry when Ferry's task queue did not serve it."""
    url = workflow_url(temporal, wf.id, wf.run_id)
    history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
    events = list(history.events)
    first = events[0] if events else None
    started = first.workflow_execution_started_event_attributes if first is not None else None
    # the history's own start event says which queue served the run (Visibility's copy is the fallback)
    queue = started.task_queue.name if started is not None else wf.task_queue
    if reason := exclusion(wf.workflow_type, queue, temporal.task_queue):
        starter = client_words(event_sender(first, started.identity)) if first and started else "unknown"
        return [
            AuditEntry(
                at=event_stamp(first) if first else visibility_time(wf.start_time),
                kind=EXCLUDED,
                subject=wf.id,
                who="",
                details=f"run {wf.run_id} started by {starter}: {reason}",
                workflow_id=wf.id,
                url=url,
            )
        ]
    earlier = bool(
        wf.workflow_type == ENVIRONMENT_WORKFLOW
        and started is not None
        and not started.continued_execution_run_id
        and await _earlier_run(client, wf.id, event_time(first))  # type: ignore[arg-type]
    )
    run_signed: list[SignedRecord] = []
    entries = [
        entry
        for entry in entries_from_history(wf.workflow_type, wf.id, events, url, run_signed, wf.run_id, earlier)
        if in_window(parse_time(entry.at), cutoff)
    ]
    if signed is not None:
        signed += [s for s in run_signed if in_window(parse_time(s.at), cutoff)]
    return entries


def cmd_audit(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    signed: list[SignedRecord] = []

    async def go(client: Client) -> tuple[list[AuditEntry], list[tuple[SignedRecord, str]]]:
        entries = await build_timeline(client, settings.temporal, args.env, parse_duration(args.since), signed)
        return entries, (await verify_signed(client, settings.temporal, signed) if args.verify else [])

    entries, failures = run_connected(settings, go)
    text = (
        "\n".join(
            f"{e.at}  {e.kind:<22} {e.subject:<28} {e.who or '-':<16} {e.details}\n{'':22}{e.url}" for e in entries
        )
        or "no events in that window"
    )
    if not args.verify:
        emit([e.model_dump() for e in entries], args.json, text)
        return 0
    lines = [
        f"FAILED {s.workflow_id} {s.record.get('action')} by {s.record.get('by')} at "
        f"{s.at or s.record.get('at')}: {problem}"
        for s, problem in failures
    ]
    excluded = [e for e in entries if e.kind == EXCLUDED]
    summary = (
        f"verified {len(signed) - len(failures)} of {len(signed)} signed decision(s); "
        f"{len(excluded)} run(s) excluded (not served on Ferry's task queue)"
    )
    emit(
        {
            "entries": [e.model_dump() for e in entries],
            "signed": len(signed),
            "failures": [{"workflow_id": s.workflow_id, "record": s.record, "problem": p} for s, p in failures],
            "excluded": [e.model_dump() for e in excluded],
        },
        args.json,
        "\n".join([text, *lines, summary]),
    )
    return 1 if failures else 0
