"""What a promotion or rollback writes in its memo for the audit (read from history alone): how a cancelled run
ended, and a pin outcome it did not take."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ferry.names import Memo
    from ferry.times import timestamp


def record_cancelled(details: str) -> None:
    """The memo says Cancelled, with when and in which state, so the audit reads it from history alone."""
    workflow.upsert_memo(
        {
            Memo.OUTCOME: {
                "outcome": "cancelled",
                "at": timestamp(workflow.now()),
                "reason": (workflow.cancellation_reason() or "")[:200],
                "details": details[:500],
            }
        }
    )


def record_refused_outcome(request_id: str, reason: str) -> None:
    """An answer this run did not take, in history (memo) for the audit: who sent it is on the signal's event."""
    workflow.upsert_memo(
        {
            Memo.OUTCOME_REFUSED: {
                "request_id": request_id[:300],
                "at": timestamp(workflow.now()),
                "reason": reason[:500],
            }
        }
    )
