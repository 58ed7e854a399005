"""Reading environments from other workflows: a query through the worker's Temporal client.

``environment_status`` is read-only and idempotent; an environment that does not exist is NotFound
(non-retryable); a Temporal hiccup is retried by the caller's policy.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import classified
from ferry.environment import EnvironmentStatus, env_workflow_id
from ferry.errors import ErrorType
from ferry.promotion import (
    PROMOTION_WORKFLOW,
    ConfirmPinInput,
    ConfirmPinResult,
    EnvironmentStatusInput,
    PromotionStatus,
    healthy_in_refusal,
    promotion_refusal,
)


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
            return ConfirmPinResult(refusal=f"{input.request_id} runs on task queue {desc.task_queue[:100]!r}, not "
                                    f"Ferry's ({activity.info().task_queue!r}): not a promotion Ferry ran")
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return ConfirmPinResult(refusal=f"{input.request_id} has ended ({desc.status.name if desc.status else '?'}"
                                    "): an approval is usable only while its own promotion pins it")
        status: PromotionStatus = await handle.query("status", result_type=PromotionStatus)
        refusal = promotion_refusal(status, input.environment, input.digest)
        if refusal:
            return ConfirmPinResult(refusal=refusal)
        for name in input.requires_healthy_in:
            other = await self.environment_status(EnvironmentStatusInput(environment=name))
            refusal = healthy_in_refusal(name, other.state, input.version, input.digest)
            if refusal:
                return ConfirmPinResult(refusal=f"{refusal} (checked by the environment when the pin arrived)")
        return ConfirmPinResult()
