"""`ferry env list`: one row per running environment, from Visibility or (--exact) each one's status query."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from cli.common import emit, run_connected, settings_from
from ferry.environment import EnvironmentStatus
from ferry.names import Query
from ferry.spec import env_workflow_id
from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE, FERRY_REPOSITORY, FERRY_TRACKING, FERRY_VERSION

# Running environments, as Visibility indexes them (the search attributes EnvironmentWorkflow._publish upserts).
LIST_QUERY = "WorkflowType = 'EnvironmentWorkflow' AND ExecutionStatus = 'Running'"
LIST_PAGE = 1000  # the dev server's and a default cluster's largest Visibility page
EXACT_CONCURRENCY = 16  # `env list --exact`: status queries at once


async def list_environments(client: Client) -> list[dict[str, str]]:
    """One row per running environment from Visibility, paged: name, tracking, applied version, phase, repository.
    Eventually consistent: Visibility lags the workflows by up to seconds."""
    from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
    from temporalio.converter import PayloadConverter

    # the raw pages, decoding only the five keywords a row shows: the SDK's list_workflows builds a full
    # WorkflowExecution per row (every search attribute decoded twice, timestamps, memo), ~5x the CPU at 10,000.
    decode = PayloadConverter.default.from_payload
    columns = (
        ("name", FERRY_ENVIRONMENT.name),
        ("tracking", FERRY_TRACKING.name),
        ("version", FERRY_VERSION.name),
        ("phase", FERRY_PHASE.name),
        ("repository", FERRY_REPOSITORY.name),
    )
    request = ListWorkflowExecutionsRequest(namespace=client.namespace, page_size=LIST_PAGE, query=LIST_QUERY)
    rows: list[dict[str, str]] = []
    while True:
        page = await client.workflow_service.list_workflow_executions(request, retry=True)
        for info in page.executions:
            fields = info.search_attributes.indexed_fields
            row = {column: str(decode(fields[key])) if key in fields else "" for column, key in columns}
            workflow_id = info.execution.workflow_id
            row["name"] = row["name"] or workflow_id.removeprefix(env_workflow_id(""))
            row["workflow_id"] = workflow_id
            rows.append(row)
        if not page.next_page_token:
            return sorted(rows, key=lambda row: row["name"])
        request.next_page_token = page.next_page_token


async def list_environments_exact(client: Client) -> list[dict[str, str]]:
    """The same rows from each environment's own status query (bounded concurrency): exact, one query per
    environment. Which environments exist still comes from Visibility."""
    gate = asyncio.Semaphore(EXACT_CONCURRENCY)

    async def one(workflow_id: str) -> dict[str, str]:
        async with gate:
            try:  # one environment whose worker is down must not hide the others
                status = await client.get_workflow_handle(workflow_id).query(
                    Query.STATUS, result_type=EnvironmentStatus, rpc_timeout=timedelta(seconds=5)
                )
            except (RPCError, WorkflowQueryFailedError) as err:
                name = workflow_id.removeprefix(env_workflow_id(""))
                return {
                    "name": name,
                    "tracking": "?",
                    "version": "?",
                    "phase": "Unknown",
                    "repository": "",
                    "workflow_id": workflow_id,
                    "error": f"no answer: {getattr(err, 'message', err)}",
                }
        s = status.state
        return {
            "name": status.name,
            "tracking": status.tracking,
            "version": s.last_applied.version if s.last_applied else "",
            "phase": s.phase,
            "repository": s.spec.repository,
            "workflow_id": workflow_id,
        }

    ids = sorted({wf.id async for wf in client.list_workflows(LIST_QUERY, page_size=LIST_PAGE)})
    return sorted(await asyncio.gather(*(one(i) for i in ids)), key=lambda row: row["name"])


def list_table(rows: list[dict[str, str]]) -> str:
    width = max([16, *(len(r["name"]) for r in rows)])
    lines = [f"{'NAME':<{width}} {'TRACKS':<24} {'APPLIED':<10} {'PHASE':<11}"]
    lines += [
        f"{r['name']:<{width}} {r['tracking'] or '?':<24} {r['version'] or '-':<10} {r['phase'] or '?':<11}"
        + (f" {r['error']}" if r.get("error") else "")
        for r in rows
    ]
    return "\n".join(lines)


def cmd_env_list(args: argparse.Namespace) -> int:
    rows = run_connected(settings_from(args), list_environments_exact if args.exact else list_environments)
    emit(rows, args.json, list_table(rows))
    return 0
