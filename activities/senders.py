"""Who sent a notification: the alert router delivers only what one of Ferry's own workflow runs sent (any client
may signal `notify` to alerts/router). The run the notification names is described by Temporal (the rule is
ferry.alerts.sender_refusal) and asked whether it sent that key (its outbox remembers what it sent)."""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from ferry.alert_router import NOTIFIED_QUERY, SenderInput, SenderResult, sender_refusal

SENDER_QUERY_TIMEOUT = timedelta(seconds=10)
KNOWN_RUNS = 2000  # runs described lately (type, task queue): a busy environment's notifications cost one describe


class SenderActivities:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._runs: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()

    async def _describe(self, source: str, run_id: str) -> tuple[str, str] | None:
        key = (source, run_id)
        if key in self._runs:
            self._runs.move_to_end(key)
            return self._runs[key]
        try:
            desc = await self._client.get_workflow_handle(source, run_id=run_id).describe()
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return None
            raise  # an outage: retried; the router delivers marked unverified if it persists
        self._runs[key] = (desc.workflow_type, desc.task_queue)
        if len(self._runs) > KNOWN_RUNS:
            self._runs.popitem(last=False)
        return self._runs[key]

    @activity.defn(name="check_sender")
    async def check_sender(self, input: SenderInput) -> SenderResult:
        """Whether the run a notification names is Ferry's, and what each alert says of its sender."""
        if not input.source or not input.run_id:
            return SenderResult(refusal="the notification names no workflow run")
        described = await self._describe(input.source, input.run_id)
        if described is None:
            return SenderResult(refusal=f"{input.source[:100]} run {input.run_id[:64]} is not a run Temporal knows")
        refusal = sender_refusal(input, described[0], described[1], activity.info().task_queue)
        if refusal:
            return SenderResult(refusal=refusal)
        named = f"{described[0]} {input.source[:200]} (run {input.run_id})"
        try:
            sent = await self._client.get_workflow_handle(input.source, run_id=input.run_id).query(
                NOTIFIED_QUERY, args=[input.key, input.digest], result_type=bool, rpc_timeout=SENDER_QUERY_TIMEOUT
            )
        except WorkflowQueryFailedError as err:
            # a run on a build without this query (a rolling upgrade) cannot vouch for it: not delivered
            return SenderResult(unverified=f"{named} cannot say whether it sent it: {str(err)[:200]}")
        if not sent:
            return SenderResult(refusal=f"{named} did not send {input.key} with this content")
        return SenderResult(sender=f"{named}, checked by Ferry")
