"""The workflow type names ferry/names.py spells for Visibility, the audit and the sender checks are the names the
workflows are registered under."""

from __future__ import annotations

from temporalio import workflow

from ferry import names
from workflows import ALL_WORKFLOWS


def test_the_named_workflow_types_are_the_registered_ones() -> None:
    registered = {workflow._Definition.must_from_class(cls).name for cls in ALL_WORKFLOWS}
    assert {
        names.RELEASE_WORKFLOW,
        names.ENVIRONMENT_WORKFLOW,
        names.PROMOTION_WORKFLOW,
        names.ROLLBACK_WORKFLOW,
        names.ALERT_ROUTER_WORKFLOW,
        names.ROLLOUT_WORKFLOW,
    } == registered


def _constants(*holders: type) -> set[str]:
    return {value for holder in holders for key, value in vars(holder).items() if key.isupper()}


def test_every_registered_handler_is_named_by_a_ferry_names_constant() -> None:
    signals = _constants(names.Signal)
    updates = _constants(names.Update)
    queries = _constants(names.Query)
    for cls in ALL_WORKFLOWS:
        definition = workflow._Definition.must_from_class(cls)
        assert {n for n in definition.signals if n is not None} <= signals, cls
        assert {n for n in definition.updates if n is not None} <= updates, cls
        assert {n for n in definition.queries if n is not None} <= queries, cls
