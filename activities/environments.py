"""Reading environments from other workflows: a query through the worker's Temporal client.

``environment_status`` is read-only and idempotent; an environment that does not exist is NotFound
(non-retryable); a Temporal hiccup is retried by the caller's policy.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import classified
from ferry.environment import EnvironmentStatus, env_workflow_id
from ferry.errors import ErrorType
from ferry.promotion import EnvironmentStatusInput


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
