"""The chart release's committed history (histories/chart/release.json, recorded by tests/e2e/test_release_chart.py
with FERRY_RECORD_HISTORIES=1: a signed `ferry release --chart`) takes the chart path behind ferry-chart-release and
replays on the current code; directory releases (histories/release.json and the others) replay unchanged beside it."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import workflow_runner
from workflows.patches import CHART_RELEASE
from workflows.release import ReleaseWorkflow

HISTORY = Path(__file__).parent / "histories" / "chart" / "release.json"


def _history() -> WorkflowHistory:
    data = json.loads(HISTORY.read_text())
    workflow_id = data["events"][0]["workflowExecutionStartedEventAttributes"]["workflowId"]
    return WorkflowHistory.from_json(workflow_id, data)


def test_the_committed_chart_release_took_the_chart_path() -> None:
    events = _history().events
    markers = [
        str(e.marker_recorded_event_attributes.details)
        for e in events
        if e.HasField("marker_recorded_event_attributes")
    ]
    assert any(CHART_RELEASE in m for m in markers), "the chart history carries no ferry-chart-release marker"
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["package_chart", "resolve_tag", "push_chart", "resolve_tag", "sign_artifact"]


async def test_the_chart_release_replays() -> None:
    replayer = Replayer(
        workflows=[ReleaseWorkflow], data_converter=pydantic_data_converter, workflow_runner=workflow_runner()
    )
    result = await replayer.replay_workflow(_history(), raise_on_replay_failure=True)
    assert result.replay_failure is None
