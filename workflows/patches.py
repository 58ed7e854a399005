"""Every patch id of Ferry's workflows (the strings passed to workflow.patched()), each named once with what it
changed, grouped by workflow; and the environment's baselines that fold its patches into one marker (env_patched).

NB: the strings are recorded in running workflows' histories: never change one. A branch behind a patch is removed
only after deprecate_patch (docs/architecture.md)."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ferry.recovery import BASELINE_3, RECORD_RECOVERED

__all__ = [
    "ACTIVITY_CANCEL_SUSPENDS",
    "ALERTS",
    "ALERTS_GATE",
    "ANSWERS_BEFORE_CONTINUE_AS_NEW",
    "AUDIT_MEMO",
    "BASELINE",
    "BASELINE_2",
    "BASELINE_3",
    "CANCEL_CONTINUES_AS_NEW",
    "CANCEL_IS_CANCELLED",
    "CANCEL_RECORDED",
    "CANCEL_SUSPENDS",
    "CHART_RELEASE",
    "CONFIRM_BOUNDED",
    "DECISION_REFUSAL_FAILS",
    "DECISION_UPDATE_WAITS",
    "FLOOD_BOUNDED",
    "FOLDED_INTO_BASELINE",
    "FOLDED_INTO_BASELINE_2",
    "FOLDED_INTO_BASELINE_3",
    "GATE_HARDENED",
    "HEALTH_FROM_APPLY",
    "HEALTH_OUTAGE_UNJUDGED",
    "HEALTH_PREEMPTIBLE",
    "HEALTH_REJUDGED",
    "HOLD_OF_APPLIED",
    "LOCAL_CHECK",
    "OUTCOME_CONFIRMED",
    "PIN_ACKNOWLEDGED",
    "PIN_CONFIRMED",
    "PIN_DURING_RESOLVE",
    "PIN_OUTCOME_SIGNAL",
    "PIN_POLL_BACKOFF",
    "PROTECTED_SPEC",
    "PUBLISH_ON_CHANGE",
    "PUBLISH_TRACKING",
    "RECHECK_HEALTHY_IN",
    "RECORD_EVERY_DECISION",
    "RECORD_RECOVERED",
    "ROUTER_CHECKS_SENDERS",
    "ROUTER_MOVES",
    "STATUS_READ_ON_RECORD",
    "UPGRADE_ON_VERSION_CHANGE",
    "env_patched",
]

# ------------------------------------------------------------------ shared by several workflows

# Workflows send notifications to the alert router (environment events, release, promotion and rollback outcomes).
ALERTS = "ferry-alerts"
# An approval-required environment confirms a pin that rests on approvals with the promotion run it names (still
# pinning, an approval accepted there, requires-healthy-in as read now) before applying it: an approval copied out
# of a refused promotion's history moves nothing.
PIN_CONFIRMED = "ferry-pin-confirmed"
# Step 15's gate: names compare case-insensitively, a signed statement's lifetime is bounded, the safety net's spec
# fields are protected, each pending spec change has its own id (environment and promotion).
GATE_HARDENED = "ferry-gate-hardened"
# The environment signals a pin's outcome back (pin_outcome) and the sender waits for it instead of polling.
PIN_OUTCOME_SIGNAL = "ferry-pin-outcome-signal"

# ------------------------------------------------------------------ PromotionWorkflow and RollbackWorkflow

# A status read retries longer (STATUS_READ_RETRY) and one that still fails ends the run on the record (older
# histories failed the workflow at once).
STATUS_READ_ON_RECORD = "ferry-status-read-on-record"
# A cancelled run records how it ended in its memo (Memo.OUTCOME); older histories upserted FerryPhase only.
CANCEL_RECORDED = "ferry-cancel-recorded"
# A pin_outcome saying "succeeded" is taken only when the environment's own status confirms it (older runs took the
# first answer from any sender).
OUTCOME_CONFIRMED = "ferry-outcome-confirmed"
# A pin carries this run's own id (workflow id@run id) and its repository, and the sender waits for the
# environment to acknowledge it; older histories used the bare workflow id and judged the first status.
PIN_ACKNOWLEDGED = "ferry-pin-acknowledged"
# The status poll (before PIN_OUTCOME_SIGNAL) backs off up to PIN_MAX_POLL (older histories polled every PIN_POLL).
PIN_POLL_BACKOFF = "ferry-pin-poll-backoff"
# A cancel that lands during an activity ends the run Cancelled (older code took the activity's CancelledError for
# its failure: "refused ... Cancelled"); workflows/failures.py's raise_if_cancelled.
CANCEL_IS_CANCELLED = "ferry-cancel-is-cancelled"

# ------------------------------------------------------------------ PromotionWorkflow

# requires-healthy-in is checked again when the approval arrives (staging may have failed the version since).
RECHECK_HEALTHY_IN = "ferry-recheck-healthy-in"
# Every decision is recorded, a duplicate too (older histories answered a duplicate without a record).
RECORD_EVERY_DECISION = "ferry-record-every-decision"
# A decision Update waits until the version is resolved, so it answers the real verdict (older: "recorded; will be
# judged" at once).
DECISION_UPDATE_WAITS = "ferry-decision-update-waits"
# A refused decision fails its Update with DecisionRefused (older histories returned accepted=false).
DECISION_REFUSAL_FAILS = "ferry-decision-refusal-fails"

# ------------------------------------------------------------------ ReleaseWorkflow

# `ferry release --chart`: a ReleaseInput with chart=True packages a Helm chart and pushes it in Helm's OCI layout
# (package_chart, push_chart on the CI queue); directory releases keep their command sequence.
CHART_RELEASE = "ferry-chart-release"

# ------------------------------------------------------------------ AlertRouterWorkflow

# At most a few deliveries at once and per provider: a hanging receiver holds few of the worker's activity slots.
ALERTS_GATE = "ferry-alerts-gate"
# The router continues as new when the deployment's current build changes (Worker Versioning: `ferry upgrade drain`
# wakes it with a WorkerBuildChanged notification) and when its history passes Ferry's own bound: any message, a
# dropped one too, wakes a look at its size (older runs stayed on their build and let a flood of refused signals
# grow the history to the server's limit).
ROUTER_MOVES = "ferry-router-moves"
# A notification is delivered only when the run it names is one of Ferry's (check_sender: any client may signal
# notify); each alert says who sent it. One Temporal cannot tell about now is delivered marked unverified.
ROUTER_CHECKS_SENDERS = "ferry-router-checks-senders"

# ------------------------------------------------------------------ EnvironmentWorkflow (asked through env_patched)

# Each recorded event is also upserted to the memo (Memo.EVENT), so the audit reads it from history alone.
AUDIT_MEMO = "ferry-audit-memo"
# FerryTracking (what the environment tracks) is published as a search attribute for `ferry env list`.
PUBLISH_TRACKING = "ferry-publish-tracking"
# Search attributes are upserted only when they change (older histories upserted them every iteration).
PUBLISH_ON_CHANGE = "ferry-publish-on-change"
# A cancel request suspends the environment instead of ending it.
CANCEL_SUSPENDS = "ferry-cancel-suspends"
# An idle iteration is one local activity (check_environment: resolve and a read-only cluster check).
LOCAL_CHECK = "ferry-local-check"
# A pin that arrives while resolving wins (older code released it as a rollback pin on a range).
PIN_DURING_RESOLVE = "ferry-pin-during-resolve"
# The health wait's deadline is absolute across retries, and a pin to another digest pre-empts the wait.
HEALTH_PREEMPTIBLE = "ferry-health-preemptible"
# A health check that could not reach the cluster judges nothing (Unknown) instead of failing the release.
HEALTH_OUTAGE_UNJUDGED = "ferry-health-outage-unjudged"
# A protected spec change of an approval-required environment waits for a signed approval (approve_spec).
PROTECTED_SPEC = "ferry-protected-spec"
# A reconcile that wrote no workload and found the rest healthy is judged by itself (no wait_healthy activity).
HEALTH_FROM_APPLY = "ferry-health-from-apply"

# A cancel that lands during an activity suspends the environment (older code recorded it as ReconcileFailed).
ACTIVITY_CANCEL_SUSPENDS = "ferry-activity-cancel-suspends"
# After a cancel suspends it, the run continues as new: the server takes one cancel request per run, so only a new
# run hears the next one.
CANCEL_CONTINUES_AS_NEW = "ferry-cancel-continues-as-new"
# A release whose health wait ended without a verdict is judged again, from its own deadline, on the next iteration.
HEALTH_REJUDGED = "ferry-health-rejudged"
# A continue-as-new waits for the pin outcomes being signalled back (older code could end the run before one was sent).
ANSWERS_BEFORE_CONTINUE_AS_NEW = "ferry-answers-before-continue-as-new"
# Signals of unknown names are counted and dropped, and any message wakes a check of the history's size: the run
# continues as new before a flood of signals pushes it past the server's limit (older code let the SDK buffer them).
FLOOD_BOUNDED = "ferry-flood-bounded"
# The deployment's current build changed (Worker Versioning): continue as new onto it at once.
UPGRADE_ON_VERSION_CHANGE = "ferry-upgrade-on-version-change"

# Every run keeps its safety record in its memo (Memo.RECORD), and a run that is not a continue-as-new recovers the
# last run's before anything else: RECORD_RECOVERED (ferry/recovery.py names it and BASELINE_3: the audit of a
# run's record reads them).
# A pin's hold is taken only for the version it rolls back from (the applied one): no sender can fill the holds.
HOLD_OF_APPLIED = "ferry-hold-of-applied"
# A pin that cannot be confirmed in MAX_CONFIRM_ATTEMPTS iterations is refused (older runs tried again forever).
CONFIRM_BOUNDED = "ferry-confirm-bounded"

# NB: every patch an environment run may meet, folded into one. A run that starts on this code records one marker
# (and the SDK's TemporalChangeVersion upsert that goes with each marker) for BASELINE instead of one pair per patch
# it meets: 12 history events in a first rollout became 2, in every run after a continue-as-new too. Histories from
# before BASELINE (no marker) replay as before: patched(BASELINE) is False in them and each patch decides alone.
# A patch added after BASELINE must NOT be folded in (runs with BASELINE's marker never took its path): call
# workflow.patched() for it directly, or fold it into a new baseline that includes all of these.
BASELINE = "ferry-environment-baseline-1"
FOLDED_INTO_BASELINE = frozenset(
    {
        AUDIT_MEMO,
        ALERTS,
        PUBLISH_TRACKING,
        PUBLISH_ON_CHANGE,
        CANCEL_SUSPENDS,
        LOCAL_CHECK,
        PIN_OUTCOME_SIGNAL,
        PIN_DURING_RESOLVE,
        HEALTH_PREEMPTIBLE,
        HEALTH_OUTAGE_UNJUDGED,
        PROTECTED_SPEC,
        # came with BASELINE (a run with its marker always had it); older runs meet it alone
        HEALTH_FROM_APPLY,
    }
)

# The second baseline: the patches of steps 14 and 15 (the gate's included), so a run that starts on this code
# records one marker again. The same rule: a patch added after it is called alone, or folded into a third baseline.
BASELINE_2 = "ferry-environment-baseline-2"
FOLDED_INTO_BASELINE_2 = frozenset(
    {
        ACTIVITY_CANCEL_SUSPENDS,
        CANCEL_CONTINUES_AS_NEW,
        HEALTH_REJUDGED,
        ANSWERS_BEFORE_CONTINUE_AS_NEW,
        FLOOD_BOUNDED,
        UPGRADE_ON_VERSION_CHANGE,
        GATE_HARDENED,
        PIN_CONFIRMED,
    }
)

# The patches after BASELINE_2, folded into BASELINE_3 (runs with BASELINE_2's marker meet each alone).
FOLDED_INTO_BASELINE_3 = frozenset({RECORD_RECOVERED, HOLD_OF_APPLIED, CONFIRM_BOUNDED})


def env_patched(patch_id: str) -> bool:
    """workflow.patched(patch_id) for a patch folded into a baseline (patched() memoizes each for the run): a run
    with BASELINE_3's marker took every path; one with BASELINE_2's the first two sets; one with BASELINE's the
    first set; older runs meet each alone."""
    if patch_id in FOLDED_INTO_BASELINE:
        return (
            workflow.patched(BASELINE_3)
            or workflow.patched(BASELINE_2)
            or workflow.patched(BASELINE)
            or workflow.patched(patch_id)
        )
    if patch_id in FOLDED_INTO_BASELINE_2:
        return workflow.patched(BASELINE_3) or workflow.patched(BASELINE_2) or workflow.patched(patch_id)
    if patch_id in FOLDED_INTO_BASELINE_3:
        return workflow.patched(BASELINE_3) or workflow.patched(patch_id)
    raise ValueError(
        f"{patch_id} is not folded into {BASELINE}, {BASELINE_2} or {BASELINE_3}: call workflow.patched() for it"
    )
