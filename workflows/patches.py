"""The environment workflow's patch ids and the baselines that fold them (workflows/environment.py and its mixins)."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ferry.recovery import BASELINE_3, RECORD_RECOVERED
    from workflows.pinning import GATE_HARDENED, PIN_CONFIRMED

__all__ = ["BASELINE_3", "GATE_HARDENED", "PIN_CONFIRMED", "RECORD_RECOVERED"]


# NB: every patch an environment run may meet, folded into one. A run that starts on this code records one marker
# (and the SDK's TemporalChangeVersion upsert that goes with each marker) for BASELINE instead of one pair per patch
# it meets: 12 history events in a first rollout became 2, in every run after a continue-as-new too. Histories from
# before BASELINE (no marker) replay as before: patched(BASELINE) is False in them and each patch decides alone.
# A patch added after BASELINE must NOT be folded in (runs with BASELINE's marker never took its path): call
# workflow.patched() for it directly, or fold it into a new baseline that includes all of these.
BASELINE = "ferry-environment-baseline-1"
FOLDED_INTO_BASELINE = frozenset({
    "ferry-audit-memo", "ferry-alerts", "ferry-publish-tracking", "ferry-publish-on-change", "ferry-cancel-suspends",
    "ferry-local-check", "ferry-pin-outcome-signal", "ferry-pin-during-resolve", "ferry-health-preemptible",
    "ferry-health-outage-unjudged", "ferry-protected-spec",
    # NB: came with BASELINE (a run with its marker always had it); older runs meet it alone
    "ferry-health-from-apply"})


# Patches after BASELINE, folded into BASELINE_2 the same way (runs with BASELINE's marker meet each alone).
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

# NB: the second baseline: every patch above and the gate's (workflows/pinning.py), so a run that starts on this code
# records one marker again. The same rule: a patch added after it is called alone, or folded into a third baseline.
BASELINE_2 = "ferry-environment-baseline-2"
FOLDED_INTO_BASELINE_2 = frozenset({
    ACTIVITY_CANCEL_SUSPENDS, CANCEL_CONTINUES_AS_NEW, HEALTH_REJUDGED, ANSWERS_BEFORE_CONTINUE_AS_NEW, FLOOD_BOUNDED,
    UPGRADE_ON_VERSION_CHANGE, GATE_HARDENED, PIN_CONFIRMED})

# Patches after BASELINE_2, folded into BASELINE_3 (ferry/recovery.py names it: the audit of a run's record reads it).
# Every run keeps its safety record in its memo (Memo.RECORD), and a run that is not a continue-as-new recovers the
# last run's before anything else (ferry/recovery.py, RECORD_RECOVERED): a termination or a start over production
# loses nothing.
# A pin's hold is taken only for the version it rolls back from (the applied one): no sender can fill the holds.
HOLD_OF_APPLIED = "ferry-hold-of-applied"
# A pin that cannot be confirmed in MAX_CONFIRM_ATTEMPTS iterations is refused (older runs tried again forever).
CONFIRM_BOUNDED = "ferry-confirm-bounded"
FOLDED_INTO_BASELINE_3 = frozenset({RECORD_RECOVERED, HOLD_OF_APPLIED, CONFIRM_BOUNDED})



def env_patched(patch_id: str) -> bool:
    """workflow.patched(patch_id) for a patch folded into a baseline (patched() memoizes each for the run): a run
    with BASELINE_3's marker took every path; one with BASELINE_2's the first two sets; one with BASELINE's the
    first set; older runs meet each alone."""
    if patch_id in FOLDED_INTO_BASELINE:
        return (workflow.patched(BASELINE_3) or workflow.patched(BASELINE_2) or workflow.patched(BASELINE)
                or workflow.patched(patch_id))
    if patch_id in FOLDED_INTO_BASELINE_2:
        return workflow.patched(BASELINE_3) or workflow.patched(BASELINE_2) or workflow.patched(patch_id)
    if patch_id in FOLDED_INTO_BASELINE_3:
        return workflow.patched(BASELINE_3) or workflow.patched(patch_id)
    raise ValueError(f"{patch_id} is not folded into {BASELINE}, {BASELINE_2} or {BASELINE_3}: call "
                     "workflow.patched() for it")
