"""The workflow type names ferry/names.py spells for Visibility, the audit and the sender checks are the names the
workflows are registered under."""

from __future__ import annotations

from temporalio import workflow

from ferry import names
from workflows import ALL_WORKFLOWS


def test_the_named_workflow_types_are_the_registered_ones() -> None:
    registered = {workflow._Definition.must_from_class(cls).name for cls in ALL_WORKFLOWS}
    assert {names.RELEASE_WORKFLOW, names.ENVIRONMENT_WORKFLOW, names.PROMOTION_WORKFLOW, names.ROLLBACK_WORKFLOW,
            names.ALERT_ROUTER_WORKFLOW} == registered
