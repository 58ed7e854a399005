"""How workflows read an activity's failure (workflows/failures.py): the classified cause, and the last attempt's
failure behind the server's schedule-to-close timeout."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError, TimeoutType

from workflows.failures import cause_message, cause_type, last_failure, timed_out

GAVE_UP = "Not enough time to schedule next retry before activity ScheduleToClose timeout, giving up retrying"


def _activity_error(cause: BaseException) -> ActivityError:
    err = ActivityError(
        "Activity task failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="w",
        activity_type="deliver_notification",
        activity_id="1",
        retry_state=RetryState.TIMEOUT,
    )
    err.__cause__ = cause
    return err


def _deadline(last: BaseException | None) -> TimeoutError:
    timeout = TimeoutError(GAVE_UP, type=TimeoutType.SCHEDULE_TO_CLOSE, last_heartbeat_details=[])
    timeout.__cause__ = last
    return timeout


def test_an_attempts_failure_is_read_as_it_is() -> None:
    err = _activity_error(ApplicationError("HTTP 503 from hook", type="ReceiverUnavailable"))
    assert last_failure(err) is err.cause and not timed_out(err)
    assert (cause_type(err), cause_message(err)) == ("ReceiverUnavailable", "HTTP 503 from hook")


def test_the_deadline_between_attempts_reads_as_the_last_attempts_failure() -> None:
    # the server ends the activity with a ScheduleToClose timeout whose cause is the last attempt's failure when the
    # deadline falls while the retry waits (backoff, or queued on a busy worker) instead of right after an attempt
    down = ApplicationError("connection refused", type="ReceiverUnavailable")
    err = _activity_error(_deadline(down))
    assert cause_type(err) == "TimeoutError", "the raw cause stays the timeout"
    assert last_failure(err) is down and timed_out(err)
    assert (cause_type(last_failure(err)), cause_message(last_failure(err))) == (
        "ReceiverUnavailable",
        "connection refused",
    )


def test_a_deadline_with_no_attempt_failure_stays_a_timeout() -> None:
    err = _activity_error(_deadline(None))
    assert isinstance(last_failure(err), TimeoutError)
    assert cause_message(last_failure(err)) == GAVE_UP


def test_a_local_activitys_own_failure_is_its_last_failure() -> None:
    own = ApplicationError("bad", type="BadInput")
    assert last_failure(own) is own
