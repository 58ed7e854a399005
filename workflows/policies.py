"""Named timeouts and retry policies, each with the reason it has this value."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from temporalio.common import RetryPolicy

from ferry.errors import NON_RETRYABLE, ErrorType

# Registry calls are single HTTP exchanges (oras's own retries are off): two minutes cover a slow push.
REGISTRY_CALL_TIMEOUT = timedelta(minutes=2)
# Packaging reads and gzips a manifests directory (files are capped at 5 MiB each).
PACKAGE_TIMEOUT = timedelta(minutes=2)
# If the `ferry release` process on the CI host dies, its task queue has no poller: fail within this
# bound instead of waiting for the release deadline.
CI_SCHEDULE_TO_START = timedelta(seconds=60)
# Registry and cluster outages: back off to one attempt every 30 s; the caller's deadline bounds the total.
OUTAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=sorted(str(t) for t in NON_RETRYABLE),
)
# Reads that feed a decision (resolve a tag, fetch a manifest) inside a workflow that must answer soon.
QUICK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
    non_retryable_error_types=sorted(str(t) for t in NON_RETRYABLE),
)
# A reconcile that cannot finish is retried a few times, then the environment waits for its next interval:
# the loop must keep serving signals and report the outage in status, not block inside one activity.
RECONCILE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=sorted(str(t) for t in NON_RETRYABLE),
)
RESOLVE_TIMEOUT = timedelta(minutes=1)
# An iteration's no-op check (resolve + read-only cluster check) is a local activity: one attempt, because while it
# runs the workflow task stays open (signals and queries wait for it). A 10,000-object no-op takes ~20 s; past a
# minute, or on any error, the iteration takes the full path, whose activities own retries and outage records.
CHECK_TIMEOUT = timedelta(minutes=1)
CHECK_RETRY = RetryPolicy(maximum_attempts=1)
# Health polling heartbeats every second; a worker that died mid-poll is noticed within this.
HEALTH_HEARTBEAT = timedelta(seconds=30)
# A reconcile heartbeats on every API request and every downloaded chunk: a crashed worker is noticed within this.
RECONCILE_HEARTBEAT = timedelta(minutes=1)
# A push heartbeats on every registry request; a CI host that died mid-push is noticed within this.
REGISTRY_HEARTBEAT = timedelta(minutes=5)  # one request may upload a whole (<= 100 MiB) bundle
# The health deadline is absolute across retries: health-timeout plus this, from the first attempt's scheduling.
HEALTH_GRACE = timedelta(minutes=1)
# A release whose health wait ended without a verdict (an outage cut it) is looked at again this soon, not an
# interval later: the verdict, and a rollback, should not wait 30 minutes for an API server that is back.
REJUDGE_AFTER = timedelta(minutes=1)
# A resumed health wait gets what is left of the release's deadline, and at least this (one status read or two).
MIN_HEALTH_WAIT = timedelta(seconds=5)
# An environment's run continues as new once its history passes this (or the server suggests it): far below the
# server's limit (50 MB by default, where it terminates the run), so no flood of large signals can end it.
MAX_HISTORY_BYTES = 8 * 1024 * 1024
# The alert router waits past that for deliveries in flight to end (so the next run's input stays small and none is
# given up), until its history nears the server's limits (50 MB, 51,200 events by default).
MAX_ROUTER_HISTORY_BYTES = 32 * 1024 * 1024
MAX_ROUTER_HISTORY_EVENTS = 40_000
# Continue-as-new well before Temporal's history limits; carried state is small (no manifests).
MAX_ITERATIONS_PER_RUN = 100
MAX_EVENTS_KEPT = 50
MAX_GOOD_HISTORY = 10
# Bounded memories the environment carries through continue-as-new (oldest dropped first).
MAX_TAG_BINDINGS = 200  # tag -> digest: enough for every version a range or pin sees in months of releases
MAX_VERIFIED_KEPT = 20  # digest -> verified publisher: recent releases; an older one is simply verified again
MAX_CONSUMED_APPROVALS = 50  # promotion runs whose approvals moved the environment: a replayed pin is refused
MAX_HOLDS = 100  # held versions kept, newest last: a range moves forward, so the oldest holds matter least
# Reading another environment's status is one query through the worker's client: quick, or an outage to retry.
STATUS_QUERY_TIMEOUT = timedelta(seconds=30)
# A promotion's or rollback's reads of an environment's status: a worker restart or a wedged environment makes the
# query fail for a while; retried with backoff (up to ~5 minutes in all), then the run ends on the record with why.
STATUS_READ_RETRY = replace(QUICK_RETRY, maximum_interval=timedelta(seconds=30), maximum_attempts=14)
# A run that replaces the last one reads that run's record before anything else, for as long as Visibility does not
# answer (fail closed: it never starts without knowing what the last run held).
# An approval-required environment's confirmation of a pin with the promotion it names: two tries per iteration,
# and a pin not confirmed in MAX_CONFIRM_ATTEMPTS iterations is refused (until then the environment applies nothing:
# a few minutes at most).
CONFIRM_RETRY = replace(QUICK_RETRY, maximum_attempts=2)
MAX_CONFIRM_ATTEMPTS = 5
RECORD_READ_RETRY = replace(QUICK_RETRY, maximum_interval=timedelta(minutes=1), maximum_attempts=0)
# How soon a promotion first asks its environment whether the pin landed healthy (histories from before the
# environment signalled the outcome back) ...
PIN_POLL = timedelta(seconds=2)
# ... doubling up to this, so a long rollout costs a few dozen polls, not hundreds.
PIN_MAX_POLL = timedelta(seconds=15)
# The environment signals a pin's outcome back; this backstop status check only matters when it cannot (an
# environment still on an older build during a rolling upgrade).
PIN_OUTCOME_BACKSTOP = timedelta(minutes=1)
# A promotion or rollback waits for its pin's outcome for the environment's health timeout (plus, for a
# promotion, one interval until the environment's next iteration) and this much more for the apply itself.
PIN_OUTCOME_SLACK = timedelta(minutes=2)
# A health wait's attempt may run this much past the environment's health timeout (the activity's own deadline).
HEALTH_ATTEMPT_SLACK = timedelta(minutes=1)
# Alert delivery: one HTTP POST per attempt (a provider's own timeout is at most 60 s); retried with backoff up to
# one attempt a minute until the alert's deadline (schedule-to-close), so a receiver outage of an hour costs ~60
# attempts, none of them in history. 4xx answers (other than 408/425/429) and configuration errors are final.
DELIVERY_ATTEMPT_TIMEOUT = timedelta(seconds=90)
# Deliveries share the worker's activity slots with reconciles: at most this many run at once (and this many per
# provider), so a receiver that hangs holds at most these slots and environments always keep the rest.
MAX_DELIVERING = 6
MAX_DELIVERING_PER_PROVIDER = 3
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    non_retryable_error_types=[
        str(t) for t in (ErrorType.DELIVERY_REFUSED, ErrorType.PROVIDER_UNKNOWN, ErrorType.PROVIDERS_FILE_INVALID)
    ],
)

# progressive rollouts (workflows/rollout.py)
ROLLOUT_CALL_TIMEOUT = timedelta(minutes=1)  # one rollout activity on the cluster (retried through outages)
ROLLOUT_POLL_MAX = timedelta(seconds=15)  # the longest pause between reads of a scaling workload
ANALYSIS_QUERY_TIMEOUT = timedelta(seconds=30)  # one interval's queries to Prometheus
METRICS_WAIT = timedelta(minutes=5)  # how long an interval waits for an unreachable Prometheus, then fails safe
ROLLOUT_SUPERSEDE_WAIT = timedelta(minutes=2)  # a cancelled rollout has this long to restore traffic and answer
ROLLOUT_ANSWER_SLACK = timedelta(minutes=10)  # beyond the longest a strategy can take: an unanswered rollout failed
MAX_FAILED_ROLLOUTS = 20  # digests whose rollout failed: never walked again by themselves
