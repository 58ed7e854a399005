"""`ferry env apply` retries an Update-with-Start the server turned away for a transient reason (with the same
update id), and reports anything else at once. The messages are the server's own (seen at 300 environments)."""

from __future__ import annotations

import pytest
from temporalio.service import RPCError, RPCStatusCode

from cli.environments import _update_retryable


@pytest.mark.parametrize(
    ("message", "status", "retry"),
    [
        (
            "Unable to perform workflow execution update due to Workflow Task in failed state.",
            RPCStatusCode.UNAVAILABLE,
            True,
        ),
        ("workflow update was aborted", RPCStatusCode.UNAVAILABLE, True),
        ("Namespace default is not found.", RPCStatusCode.NOT_FOUND, False),
        ("update_spec: unknown field 'intervall'", RPCStatusCode.INVALID_ARGUMENT, False),
    ],
)
def test_transient_refusals_are_retried_and_others_reported(message: str, status: RPCStatusCode, retry: bool) -> None:
    assert _update_retryable(RPCError(message, status, b"")) is retry
