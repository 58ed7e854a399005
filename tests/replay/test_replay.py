"""Every workflow replays against committed histories: a change that alters the command sequence without
`workflow.patched()` fails here. `histories/*.json` are recorded from the current code by the e2e tests with
FERRY_RECORD_HISTORIES=1; `histories/v1/` keeps the histories of the first release, from before the patches
(ferry-audit-memo, ferry-publish-on-change, ferry-pin-acknowledged, ferry-pin-poll-backoff), which must replay
too. `histories/signed/` (signed approvals refused and accepted through Updates, a signed pin, a replayed pin
refused, a rollback, outcomes signalled back; recorded by tests/e2e/test_trust.py), `histories/signed-polling/`
(the same from before ferry-pin-outcome-signal, when promotions polled) and `histories/spec-approval/` (a
protected spec change pending, refused and approved) cover the approval gate; `drift/`, `auto-rollback/` and
`continue-as-new/` (a run of 100 iterations ending in continue-as-new, from the time-skipping server) cover the
environment's other paths (drift/ from before ferry-local-check); `local-check-drift/` (no-op iterations checked by
the local activity, drift found by it and corrected by the full path) and `local-check-outage/` (the check failing
in a registry outage, the full path recording it) cover the iteration's local check. Since the environment's patches
were folded into one marker (ferry-environment-baseline-1), `baseline/` holds environment histories recorded on
that code: auto-rollback, continue-as-new, local-check-drift, local-check-outage, signed (pins with approvals,
a rollback), spec-approval, and config-only (a rollout judged by its reconcile, no wait_healthy).
`pre-baseline/` holds the same paths recorded on the last build before it (one marker per patch met: 8 of the 11
it had, as open runs of that build carry them); both generations must replay. Step 14's paths
(tests/e2e/test_loop_never_stops.py): `activity-cancel/` (a cancel during a reconcile suspends the environment and
continues as new), `health-rejudged/` (a plan Update and a signal without input, a health wait cut by an outage and
the release judged again, rolled back and held), `promotion-cancel-activity/` and `promotion-cancel-approval/` (a
promotion cancelled while resolving and while awaiting approval). Since the later patches were folded into a second
marker (ferry-environment-baseline-2), `baseline-2/` holds the signed, spec-approval, activity-cancel and
health-rejudged paths recorded on that code (FERRY_RECORD_PREFIX=baseline-2), the signed one with the
environment's own confirmation of a promotion's pin (confirm_pin). `baseline-3/` (ferry-environment-baseline-3:
the recovered record, holds only of the applied version) holds every path recorded on that code by the e2e and
workflow tests (FERRY_RECORD_PREFIX=baseline-3), with the alert router checking its senders and the promotion
confirming its pin's outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import workflow_runner
from workflows import ALL_WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"
TYPES = {
    "release": "ReleaseWorkflow",
    "environment": "EnvironmentWorkflow",
    "promotion": "PromotionWorkflow",
    "rollback": "RollbackWorkflow",
    "alert-router": "AlertRouterWorkflow",
    "rollout": "RolloutWorkflow",
}
# NB: the alert workflows came after the first release: histories/alerts/ (tests/workflows/test_alerts.py) has theirs
ALERTS = {"AlertRouterWorkflow"}
COMMITTED = sorted(str(p.relative_to(HISTORIES)) for p in HISTORIES.rglob("*.json"))


@pytest.mark.parametrize("name", COMMITTED)
async def test_replay_committed_history(name: str) -> None:
    data = json.loads((HISTORIES / name).read_text())
    # NB: replay under the recorded workflow id: workflow code may derive values from it (pin request ids)
    # (the time-skipping test server does not record it: those histories replay under a stand-in id)
    workflow_id = data["events"][0]["workflowExecutionStartedEventAttributes"].get("workflowId", "env/recorded")
    history = WorkflowHistory.from_json(workflow_id, data)
    expected = TYPES[Path(name).stem]
    assert history.events[0].workflow_execution_started_event_attributes.workflow_type.name == expected
    replayer = Replayer(
        workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=workflow_runner()
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


@pytest.mark.parametrize("generation", [".", "v1"])
def test_every_workflow_has_committed_histories(generation: str) -> None:
    names = {wf.__temporal_workflow_definition.name for wf in ALL_WORKFLOWS}  # type: ignore[attr-defined]
    recorded = {TYPES[p.stem] for p in (HISTORIES / generation).glob("*.json")}
    recorded |= {TYPES[p.stem] for p in (HISTORIES / "alerts").glob("*.json")} if generation == "." else ALERTS
    assert names <= recorded, (
        f"no committed history in histories/{generation} for {names - recorded}: record "
        "with FERRY_RECORD_HISTORIES=1 make test"
    )
