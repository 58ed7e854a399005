"""Every workflow replays against a committed history: a change that alters the command sequence without
`workflow.patched()` fails here. Histories are recorded by the e2e tests with FERRY_RECORD_HISTORIES=1."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows import ALL_WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"
EXPECTED = {"release.json": "ReleaseWorkflow", "environment.json": "EnvironmentWorkflow",
            "promotion.json": "PromotionWorkflow", "rollback.json": "RollbackWorkflow"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_replay_committed_history(name: str) -> None:
    path = HISTORIES / name
    assert path.is_file(), f"{path} is missing: record it with FERRY_RECORD_HISTORIES=1 make test"
    history = WorkflowHistory.from_json(f"replay-{name}", path.read_text())
    assert history.events[0].workflow_execution_started_event_attributes.workflow_type.name == EXPECTED[name]
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_every_workflow_has_a_committed_history() -> None:
    names = {wf.__temporal_workflow_definition.name for wf in ALL_WORKFLOWS}  # type: ignore[attr-defined]
    assert names <= set(EXPECTED.values()), f"no committed history for {names - set(EXPECTED.values())}"
