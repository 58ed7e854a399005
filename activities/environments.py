"""Reading environments from other workflows: a query through the worker's Temporal client.

``environment_status`` is read-only and idempotent; an environment that does not exist is NotFound
(non-retryable); a Temporal hiccup is retried by the caller's policy.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import classified
from ferry.environment import EnvironmentStatus
from ferry.errors import ErrorType
from ferry.names import ENVIRONMENT_WORKFLOW, PROMOTION_WORKFLOW, Memo
from ferry.promotion import (
    ConfirmPinInput,
    ConfirmPinResult,
    EnvironmentStatusInput,
    PromotionStatus,
    healthy_in_refusal,
    promotion_refusal,
)
from ferry.recovery import RECORD_MARKERS, EnvironmentRecord, LastRecordInput, LastRecordResult
from ferry.spec import env_workflow_id

MAX_RUNS_SCANNED = 200  # runs of one environment id looked through for the last one Ferry ran (decoys are passed over)
MAX_HISTORY_PAGES = 50  # pages of a run's history read backwards for its last record (a record is upserted often)
HISTORY_PAGE = 200
PATCH_DATA = "patch-data"  # the SDK's key of a patch marker's details (its payload: {"id": ..., "deprecated": ...})


class EnvironmentActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="environment_status")
    async def environment_status(self, input: EnvironmentStatusInput) -> EnvironmentStatus:
        handle = self._client.get_workflow_handle(env_workflow_id(input.environment))
        try:
            status: EnvironmentStatus = await handle.query("status", result_type=EnvironmentStatus)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise classified(ErrorType.NOT_FOUND, f"environment {input.environment!r} is not declared") from err
            raise
        return status

    @activity.defn(name="confirm_pin")
    async def confirm_pin(self, input: ConfirmPinInput) -> ConfirmPinResult:
        """An approval-required environment's own check of a promotion's pin, before it applies it: the pin names a
        PromotionWorkflow run of Ferry's task queue that is still pinning with an accepted approval, of this
        digest to this environment, and the release is healthy where the policy requires (read now, not when the
        approval was signed). A name in a payload is a claim; the run's own history is the proof."""
        workflow_id, _, run_id = input.request_id.partition("@")
        handle = self._client.get_workflow_handle(workflow_id, run_id=run_id)
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return ConfirmPinResult(refusal=f"{input.request_id[:300]} is not a workflow run Temporal knows")
            raise
        if desc.workflow_type != PROMOTION_WORKFLOW:
            return ConfirmPinResult(refusal=f"{input.request_id} is a {desc.workflow_type[:100]}, not a promotion")
        if desc.task_queue != activity.info().task_queue:
            return ConfirmPinResult(
                refusal=f"{input.request_id} runs on task queue {desc.task_queue[:100]!r}, not "
                f"Ferry's ({activity.info().task_queue!r}): not a promotion Ferry ran"
            )
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return ConfirmPinResult(
                refusal=f"{input.request_id} has ended ({desc.status.name if desc.status else '?'}"
                "): an approval is usable only while its own promotion pins it"
            )
        status: PromotionStatus = await handle.query("status", result_type=PromotionStatus)
        refusal = promotion_refusal(status, input.environment, input.digest)
        if refusal:
            return ConfirmPinResult(refusal=refusal)
        for name in input.requires_healthy_in:
            try:
                other = await self.environment_status(EnvironmentStatusInput(environment=name))
            except ApplicationError as err:
                if err.type != ErrorType.NOT_FOUND:
                    raise
                return ConfirmPinResult(refusal=f"{err.message}: requires-healthy-in cannot be checked")
            refusal = healthy_in_refusal(name, other.state, input.version, input.digest)
            if refusal:
                return ConfirmPinResult(refusal=f"{refusal} (checked by the environment when the pin arrived)")
        return ConfirmPinResult()

    @activity.defn(name="last_record")
    async def last_record(self, input: LastRecordInput) -> LastRecordResult:
        """The safety record of the last run before `input.run_id` of this environment: what a new run that is not a
        continue-as-new recovers (ferry/recovery.py). Only runs of EnvironmentWorkflow on Ferry's task queue count,
        and only a record the run's own code wrote (its last memo upsert in history, never a memo its starter
        gave it); a run that never completed a workflow task held nothing and is passed over."""
        if not input.workflow_id.startswith("env/") or '"' in input.workflow_id or "\\" in input.workflow_id:
            return LastRecordResult(refusal=f"{input.workflow_id[:200]!r} is not an environment's id")
        queue = activity.info().task_queue
        passed_over: list[str] = []
        # NB: filtered by the server: runs of another type or on another queue (decoys) never count against the cap
        query = (
            f'WorkflowId = "{input.workflow_id}" AND WorkflowType = "{ENVIRONMENT_WORKFLOW}" AND TaskQueue = "{queue}"'
        )
        try:
            runs = [run async for run in self._client.list_workflows(query, limit=MAX_RUNS_SCANNED)]
        except RPCError as err:
            if err.status != RPCStatusCode.UNIMPLEMENTED:
                raise  # an outage: retried until Visibility answers (RECORD_READ_RETRY)
            # a server without Visibility at all (the SDK's time-skipping test server): no run to read
            return LastRecordResult(note="this Temporal server lists no runs (no Visibility)")
        for run in runs:  # newest first
            if run.run_id == input.run_id or run.workflow_type != ENVIRONMENT_WORKFLOW or run.task_queue != queue:
                continue
            found = await self._written_record(input.workflow_id, run.run_id)
            if found is None:
                passed_over.append(f"{run.run_id} (never ran)")
                continue
            (raw,) = found
            return _recovered(run.run_id, run.status.name if run.status else "", raw, passed_over)
        if passed_over:
            return LastRecordResult(
                refusal=f"none of the last {len(passed_over)} run(s) of {input.workflow_id} on "
                f"Ferry's queue ran to the end of a workflow task{_passed(passed_over)}: what the "
                "last real run held cannot be told"
            )
        return LastRecordResult()

    async def _written_record(self, workflow_id: str, run_id: str) -> tuple[Any] | None:
        """(the last ferry_record the run's code upserted, or None,) by reading its history backwards; None
        when the run never completed a workflow task (so nothing it held is lost by passing it over)."""
        execution = WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
        token, ran, keeps_records = b"", False, False
        for _ in range(MAX_HISTORY_PAGES):
            page = await self._client.workflow_service.get_workflow_execution_history_reverse(
                GetWorkflowExecutionHistoryReverseRequest(
                    namespace=self._client.namespace,
                    execution=execution,
                    maximum_page_size=HISTORY_PAGE,
                    next_page_token=token,
                )
            )
            for event in page.history.events:
                ran = ran or event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                keeps_records = keeps_records or _patch_id(event) in RECORD_MARKERS
                if event.HasField("workflow_properties_modified_event_attributes"):
                    fields = event.workflow_properties_modified_event_attributes.upserted_memo.fields
                    if Memo.RECORD in fields:
                        return (self._client.data_converter.payload_converter.from_payload(fields[Memo.RECORD]),)
            token = page.next_page_token
            if not token:
                break
        # a run of this code with no record yet was still reading its predecessor's: it held nothing itself
        return (None,) if ran and not keeps_records else None


def _recovered(run_id: str, status: str, raw: Any, passed_over: list[str]) -> LastRecordResult:
    """What the last run that Ferry ran left to recover: its record (`raw`, as upserted), or why it cannot be used."""
    if raw is None:
        return LastRecordResult(
            run_id=run_id,
            status=status,
            note=f"the last run kept no record (a build from before ferry_record){_passed(passed_over)}",
        )
    try:
        record = EnvironmentRecord.model_validate(raw)
    except ValueError as err:
        return LastRecordResult(
            run_id=run_id, status=status, refusal=f"the record of run {run_id} cannot be read: {str(err)[:300]}"
        )
    if record.unverified:
        return LastRecordResult(
            run_id=run_id,
            status=status,
            refusal=f"run {run_id} never "
            f"recovered its own predecessor's record ({record.unverified[:300]}), "
            "and no SRE has resumed it since",
        )
    return LastRecordResult(run_id=run_id, status=status, record=record, note=_passed(passed_over))


def _patch_id(event: Any) -> str:
    """The patch id of a patch marker event ('' for any other event)."""
    if not event.HasField("marker_recorded_event_attributes"):
        return ""
    data = event.marker_recorded_event_attributes.details.get(PATCH_DATA)
    if data is None or not data.payloads:
        return ""
    try:
        return str(json.loads(data.payloads[0].data).get("id", ""))
    except (ValueError, AttributeError):
        return ""


def _passed(runs: list[str]) -> str:
    return f"; passed over {len(runs)} run(s) that never ran: {', '.join(runs[:5])[:400]}" if runs else ""
