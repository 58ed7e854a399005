"""What an activity's failure says, as workflows read it: the cause's error type and message, one way.

NB: stateless: passed through the workflow sandbox (workers/worker.py)."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError


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
