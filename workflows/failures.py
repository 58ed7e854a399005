"""What an activity's failure says, as workflows read it: the cause's error type and message, one way.

NB: stateless: passed through the workflow sandbox (workers/worker.py)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.exceptions import TimeoutError as ActivityTimeout

from workflows.patches import CANCEL_IS_CANCELLED


def _cause(err: BaseException) -> BaseException | None:
    """An ActivityError wraps the activity's own failure; a failed local activity raises that failure itself."""
    return err.cause if isinstance(err, ActivityError) else err


def cause_type(err: BaseException) -> str:
    """The classified type (ferry.errors.ErrorType) of an ApplicationError cause, '' when it has none; otherwise
    the cause's class name (TimeoutError, CancelledError, ...)."""
    cause = _cause(err)
    return cause.type or "" if isinstance(cause, ApplicationError) else type(cause).__name__


def cause_message(err: BaseException, limit: int | None = 500) -> str:
    """The cause's message (bounded: it goes into events and history), or the cause itself in words."""
    cause = _cause(err)
    return str(getattr(cause, "message", cause))[:limit]


def last_failure(err: BaseException) -> BaseException:
    """What ended an activity's retries: its cause, and when the server gave up at the schedule-to-close deadline
    between attempts (a TimeoutError carrying the last attempt's failure as its cause), that last failure, so a
    receiver that stayed down past the deadline reads as down, not as a bare timeout. Whether the server ends a
    retried activity with the attempt's failure or with that timeout depends on where the deadline falls (after
    an attempt or during a backoff); both read the same here.

    NB: for the words of a record only. Decisions (environment.py, promotion.py) keep branching on cause_type: what
    they branch on must not change under running workflows."""
    cause = _cause(err)
    if isinstance(cause, ActivityTimeout) and cause.cause is not None:
        return cause.cause
    return cause if cause is not None else err


def timed_out(err: BaseException) -> bool:
    """The server ended the activity with a timeout (its deadline), not with an attempt's own failure."""
    return isinstance(_cause(err), ActivityTimeout)


def raise_if_cancelled(err: BaseException, patch_id: str = CANCEL_IS_CANCELLED) -> None:
    """Re-raise an activity call's failure when it is the workflow's own cancellation (the activity was cancelled
    with the workflow), so a caller that handles activity failures never mistakes a cancel for one. Patched where
    it begins: histories from before took the failure path."""
    if is_cancelled_exception(err) and workflow.patched(patch_id):
        raise err
