"""Names that histories, Visibility, the CLI and the tests share, defined once: workflow id prefixes, memo keys and
search attribute names. Pure (no temporalio): `workflows/search_attributes.py` makes the typed keys from these.

NB: every one of these is recorded in histories and Visibility (or typed by SREs into queries): never change one."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# Workflow ids are business keys: <prefix><...>.
ENV_PREFIX = "env/"  # env/<name>
RELEASE_PREFIX = "release/"  # release/<repository>/<version>
PROMOTE_PREFIX = "promote/"  # promote/<environment>/<version>
ROLLBACK_PREFIX = "rollback/"  # rollback/<environment>/<target>

# Workflow type names (the @workflow.defn names in workflows/): what Visibility, the audit and the checks of who sent
# a message compare.
RELEASE_WORKFLOW: Final = "ReleaseWorkflow"
ENVIRONMENT_WORKFLOW: Final = "EnvironmentWorkflow"
PROMOTION_WORKFLOW: Final = "PromotionWorkflow"
ROLLBACK_WORKFLOW: Final = "RollbackWorkflow"
ALERT_ROUTER_WORKFLOW: Final = "AlertRouterWorkflow"
ROLLOUT_WORKFLOW: Final = "RolloutWorkflow"


class Memo:
    """Memo keys the workflows upsert so the audit reads operator records from history alone.
    Plain strings, not an enum: they become protobuf map keys."""

    EVENT: Final = "ferry_event"  # EnvironmentWorkflow: each Event it records
    DECISION: Final = "ferry_decision"  # PromotionWorkflow: each approve/reject decision, accepted or refused
    UNDELIVERED: Final = "ferry_undelivered"  # AlertRouterWorkflow: a notification it gave up delivering
    ALERTS_CHANGED: Final = "ferry_alerts_changed"  # AlertRouterWorkflow: who changed the declared alerts
    OUTCOME: Final = "ferry_outcome"  # PromotionWorkflow, RollbackWorkflow: how a cancelled run ended
    OUTCOME_REFUSED: Final = "ferry_outcome_refused"  # PromotionWorkflow, RollbackWorkflow: an answer not taken
    RECORD: Final = "ferry_record"  # EnvironmentWorkflow: its safety record, read back by a run that replaces it
    ROLLOUT_STEP: Final = "ferry_rollout_step"  # RolloutWorkflow: each step, analysis interval and decision


class SearchAttribute(StrEnum):
    """Ferry's custom search attributes (Keyword): what SREs filter on in the Temporal UI."""

    ENVIRONMENT = "FerryEnvironment"
    REPOSITORY = "FerryRepository"
    VERSION = "FerryVersion"
    PHASE = "FerryPhase"
    PUBLISHER = "FerryPublisher"
    TRACKING = "FerryTracking"  # what an environment follows ("semver >=1.0.0"): `ferry env list` reads it


class Signal:
    """Signal names (the `name=` of each @workflow.signal): what the CLI, the UI and other workflows send."""

    APPROVE: Final = "approve"  # PromotionWorkflow (fallback to Update.APPROVE, which answers)
    REJECT: Final = "reject"  # PromotionWorkflow
    PIN_OUTCOME: Final = "pin_outcome"  # PromotionWorkflow, RollbackWorkflow: sent by the environment
    PIN: Final = "pin"  # EnvironmentWorkflow
    RECONCILE_NOW: Final = "reconcile_now"  # EnvironmentWorkflow
    SUSPEND: Final = "suspend"  # EnvironmentWorkflow
    RESUME: Final = "resume"  # EnvironmentWorkflow
    NOTIFY: Final = "notify"  # AlertRouterWorkflow: sent by every other workflow
    ROLLOUT_OUTCOME: Final = "rollout_outcome"  # EnvironmentWorkflow: sent by its RolloutWorkflow when it ends


class Update:
    """Update names (the `name=` of each @workflow.update)."""

    APPROVE: Final = "approve_update"  # PromotionWorkflow
    REJECT: Final = "reject_update"  # PromotionWorkflow
    UPDATE_SPEC: Final = "update_spec"  # EnvironmentWorkflow: `ferry env apply`
    APPROVE_SPEC: Final = "approve_spec"  # EnvironmentWorkflow
    REJECT_SPEC: Final = "reject_spec"  # EnvironmentWorkflow
    PLAN: Final = "plan"  # EnvironmentWorkflow: `ferry diff`
    APPLY_ALERTS: Final = "apply_alerts"  # AlertRouterWorkflow: `ferry alerts apply`
    ROLLOUT_PAUSE: Final = "rollout_pause"  # RolloutWorkflow: `ferry rollout pause`
    ROLLOUT_RESUME: Final = "rollout_resume"  # RolloutWorkflow
    ROLLOUT_ABORT: Final = "rollout_abort"  # RolloutWorkflow
    ROLLOUT_PROMOTE: Final = "rollout_promote"  # RolloutWorkflow: skip the remaining steps (an approver's decision)
    ROLLOUT_APPROVE: Final = "rollout_approve"  # RolloutWorkflow: an approval step's gate
    ROLLOUT_REJECT: Final = "rollout_reject"  # RolloutWorkflow: an approval step refused: rolled back


class Query:
    """Query names (the `name=` of each @workflow.query)."""

    STATUS: Final = "status"  # every long-running workflow
    NOTIFIED: Final = "ferry_notified"  # every workflow that notifies: did this run send that notification?
