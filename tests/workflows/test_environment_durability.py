"""Durability limits with the time-skipping server and stand-in activities (tests/kit/stand_ins.py): 500 iterations
through continue-as-new, state intact. The real adapters' iterations are tests/e2e's."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ferry.environment import EnvironmentInput, EnvironmentState, LenientPayload
from ferry.spec import EnvironmentSpec
from tests.kit.environments import record_histories
from tests.kit.stand_ins import World
from workers.worker import workflow_runner
from workflows import policies
from workflows.environment import EnvironmentWorkflow

ITERATIONS = 500


async def test_500_iterations_continue_as_new_with_state_intact(time_env: WorkflowEnvironment, task_queue: str) -> None:
    world = World()
    digest = world.release("1.0.0")
    name = "dur"
    spec = EnvironmentSpec(
        name=name,
        repository="registry.test/team/dur",
        namespace=name,
        semver=">=1.0.0",
        interval="1m",
        health_timeout="30s",
    )
    client = time_env.client
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[EnvironmentWorkflow],
        activities=world.activities(client),
        workflow_runner=workflow_runner(),
    ):
        handle = await client.start_workflow(
            EnvironmentWorkflow.run,
            EnvironmentInput(state=EnvironmentState(spec=spec)),
            id=f"env/{name}",
            task_queue=task_queue,
        )
        await handle.signal(EnvironmentWorkflow.suspend, LenientPayload({"by": "test", "reason": "marker"}))
        await handle.signal(EnvironmentWorkflow.resume, LenientPayload({"by": "test"}))
        # time skips through each 1-minute interval while the workflow waits
        while (status := await handle.query(EnvironmentWorkflow.status)).state.iterations < ITERATIONS:
            await time_env.sleep(600)  # ten 1-minute intervals per call keeps each RPC short
        first_run = client.get_workflow_handle(f"env/{name}", run_id=handle.first_execution_run_id)
        await record_histories("continue-as-new", {"environment": first_run})
        first_history = await first_run.fetch_history()
        latest = client.get_workflow_handle(f"env/{name}")
        desc = await latest.describe()
        await latest.terminate("test done")
    assert status.state.iterations >= ITERATIONS
    assert status.state.last_applied is not None and status.state.last_applied.digest == digest
    assert status.state.last_known_good is not None and status.state.last_known_good.digest == digest
    assert [e.type for e in status.state.events][:4] == ["Suspended", "Resumed", "Applied", "Healthy"]
    assert desc.status == WorkflowExecutionStatus.RUNNING and desc.run_id != handle.first_execution_run_id
    assert first_history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    # one run is bounded: MAX_ITERATIONS_PER_RUN iterations of a small fixed number of events each
    assert len(first_history.events) < 30 * policies.MAX_ITERATIONS_PER_RUN
    # past the first iteration, the stand-in cluster already runs the digest: each iteration is a check, no apply
    assert world.calls.count("reconcile_environment 1.0.0") == 1 and world.running == {name: digest}
