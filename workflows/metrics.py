"""Counters Ferry's workflows emit through the Temporal SDK's workflow metric meter.

They are exported with the SDK's own worker metrics on the worker's Prometheus endpoint
(`FERRY_PROMETHEUS_BIND`); the SDK drops them while replaying, so each counts what happened once.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ferry.events import EventType


def _count(name: str, description: str, **attributes: str) -> None:
    workflow.metric_meter().create_counter(name, description).add(1, attributes)


def environment_event(environment: str, type_: EventType) -> None:
    _count(
        "ferry_environment_events",
        f"operator-visible environment events ({', '.join(EventType)})",
        environment=environment,
        type=type_.value,
    )


def promotion_decision(environment: str, action: str, accepted: bool) -> None:
    _count(
        "ferry_promotion_decisions",
        "approve/reject decisions received, accepted or refused",
        environment=environment,
        action=action,
        accepted=str(accepted).lower(),
    )


def outcome(workflow_kind: str, environment: str, outcome_: str) -> None:
    _count(
        f"ferry_{workflow_kind}_outcomes",
        f"{workflow_kind} workflows finished, by outcome",
        environment=environment,
        outcome=outcome_,
    )
