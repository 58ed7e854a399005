"""A promotion or rollback must not call its own pin "superseded" before the environment has even handled it.

The pin is a signal. After a worker restart the real EnvironmentWorkflow can take seconds to handle it (its
sticky queue times out first), while its status query already answers with the previous pin; that window
cannot be forced on demand with the real workflow, so here a scripted stand-in for the environment (a test
workflow, clearly not the product's) holds the pin back for a fixed time. Its events also hold a Pinned answer to
an earlier run with the same business key, which must not be taken for this run's. Everything else is real (the
RollbackWorkflow, the environment-status activity, the time-skipping server) but the registry: released tags are a
stand-in's (tests/kit/stand_ins.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ferry.environment import Applied, EnvironmentState, EnvironmentStatus, LenientPayload, Pin, PinRequest
from ferry.events import Event
from ferry.promotion import RollbackInput, RollbackResult
from ferry.reconcile import HealthState, VersionRef
from ferry.spec import EnvironmentSpec, env_workflow_id
from tests.kit.stand_ins import World
from workers.worker import workflow_runner
from workflows import ALL_WORKFLOWS
from workflows.rollback import RollbackWorkflow

ACK_DELAY = timedelta(seconds=10)  # several of the waiting workflow's polls


@workflow.defn(name="SlowToAcknowledgeEnvironment", sandboxed=False)
class SlowToAcknowledgeEnvironment:
    """Test stand-in: answers `status` like an environment, and handles a `pin` only ACK_DELAY after it came."""

    def __init__(self) -> None:
        self._status: EnvironmentStatus | None = None
        self._pin: PinRequest | None = None

    @workflow.run
    async def run(self, status: EnvironmentStatus) -> None:
        self._status = status
        await workflow.wait_condition(lambda: self._pin is not None)
        await workflow.sleep(ACK_DELAY)
        request, state, now = self._pin, status.state, workflow.now().isoformat()
        assert request is not None
        state.pin = Pin(
            **request.model_dump(include={"version", "digest", "by", "reason", "kind", "request_id", "hold"}), at=now
        )
        state.last_applied = Applied(version=request.version, digest=request.digest, at=now)
        state.health = HealthState(status="Healthy", digest=request.digest, at=now)
        state.events.append(Event(at=now, type="Pinned", message="pinned", request_id=request.request_id))
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name="pin")
    def pin(self, payload: LenientPayload) -> None:
        self._pin = PinRequest.model_validate(payload.root)

    @workflow.query(name="status")
    def status(self) -> EnvironmentStatus:
        assert self._status is not None
        return self._status


async def test_rollback_waits_for_its_pin_to_be_handled(time_env: WorkflowEnvironment, task_queue: str) -> None:
    world = World()
    repository = "registry.test/team/ack"
    old, new = world.release("1.0.0"), world.release("1.1.0")
    at = "2026-01-01T00:00:00Z"
    state = EnvironmentState(
        spec=EnvironmentSpec.model_validate(
            {"name": "prod", "repository": repository, "version": "1.1.0", "approval": {"approvers": ["bob"]}}
        ),
        last_applied=Applied(version="1.1.0", digest=new, at=at),
        last_known_good=VersionRef(version="1.1.0", digest=new),
        health=HealthState(status="Healthy", digest=new, at=at),
        # the current pin is a promotion's; an earlier rollback under this business key pinned once (its event stays)
        pin=Pin(version="1.1.0", digest=new, by="carol", kind="promotion", request_id="promote/prod/1.1.0@r0"),
        events=[Event(at=at, type="Pinned", message="pinned", request_id="rollback/prod/1.0.0")],
    )
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[*ALL_WORKFLOWS, SlowToAcknowledgeEnvironment],
        activities=world.activities(time_env.client),
        workflow_runner=workflow_runner(),
    ):
        await time_env.client.start_workflow(  # left running: this test's server goes with the test
            SlowToAcknowledgeEnvironment.run,
            EnvironmentStatus(name="prod", tracking="version 1.1.0", state=state),
            id=env_workflow_id("prod"),
            task_queue=task_queue,
        )
        rollback = await time_env.client.start_workflow(
            RollbackWorkflow.run,
            RollbackInput(environment="prod", to_version="1.0.0", requested_by="bob"),
            id="rollback/prod/1.0.0",
            task_queue=task_queue,
            result_type=RollbackResult,
        )
        result: Any = await rollback.result()
        history = await rollback.fetch_history()
    assert (result.outcome, result.reason, result.digest) == ("succeeded", "applied and healthy", old)
    # the stand-in, like an environment still on an older build, never signals the outcome back: the rollback
    # waits for the answer, then its one backstop status check (a minute later) judges the acknowledged pin
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    assert len(timers) == 1 and b"backstop" in timers[0].user_metadata.summary.data
    polls = [
        e
        for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "environment_status"
    ]
    assert len(polls) == 2  # the rollback's first look at the environment, and the one backstop check
