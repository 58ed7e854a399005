"""Worker Versioning behaviours: how each workflow type moves between builds of Ferry.

NB: these live on versioned subclasses, registered only by a worker that runs under Worker Versioning
(workers/worker.py `deployment_config`), not on the `@workflow.defn` lines in workflows/: Temporal Server 1.32 refuses
every workflow task completion that carries a versioning behaviour from an unversioned worker ("versioning behavior
cannot be specified without deployment options being set with versioned mode"), and the local stack and the tests
run unversioned. Same workflow type names, same code; only the behaviour differs.

- Promotions, rollbacks and releases are PINNED: a run finishes on the build it started on, so a change to their
  code never meets a half-finished history of the old code.
- Environments and the alert router run for months: each run is PINNED to its build and moves to the deployment's
  current build at a continue-as-new (`initial_versioning_behavior=AUTO_UPGRADE`), which it makes as soon as a
  workflow task says the current build changed; `ferry upgrade drain` (cli/upgrade.py) wakes the idle ones, so a
  run never meets new code halfway through its history and none waits for its interval on the old build. Before
  a build is made current, `ferry replay-check` replays open histories against it (tests/e2e/test_versioning.py
  checks the behaviour declared here, docs/upgrades.md is the procedure).

Module-level classes, importable by name: the workflow sandbox re-imports this module to run them.

NB: no `from __future__ import annotations` here (nor in the workflow modules): the SDK compares a subclass's
@workflow.run parameters with the base's @workflow.init, and a string annotation never equals a class.
"""

from temporalio import workflow
from temporalio.common import VersioningBehavior

# NB: passed through, as in the workflow modules: the sandbox re-imports this module, and its own copy of
# ferry.environment would make the run's input another EnvironmentSpec class than the one the workflow's helpers
# (ferry/recovery.py) validate against
with workflow.unsafe.imports_passed_through():
    from ferry.alert_router import AlertRouterInput
    from ferry.environment import EnvironmentInput
    from ferry.progressive import RolloutInput, RolloutOutcome
    from ferry.promotion import PromotionInput, PromotionResult, RollbackInput, RollbackResult
    from ferry.release import ReleaseInput, ReleaseResult
from workflows.alerts import AlertRouterWorkflow
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.release import ReleaseWorkflow
from workflows.rollback import RollbackWorkflow
from workflows.rollout import RolloutWorkflow


def _failure_types(cls: type) -> list[type[BaseException]]:
    return list(workflow._Definition.must_from_class(cls).failure_exception_types)


@workflow.defn(
    name="EnvironmentWorkflow",
    versioning_behavior=VersioningBehavior.PINNED,
    failure_exception_types=_failure_types(EnvironmentWorkflow),
)
class VersionedEnvironmentWorkflow(EnvironmentWorkflow):
    @workflow.run
    async def run(self, input: EnvironmentInput) -> None:
        await super().run(input)


@workflow.defn(
    name="PromotionWorkflow",
    versioning_behavior=VersioningBehavior.PINNED,
    failure_exception_types=_failure_types(PromotionWorkflow),
)
class VersionedPromotionWorkflow(PromotionWorkflow):
    @workflow.run
    async def run(self, input: PromotionInput) -> PromotionResult:
        return await super().run(input)


@workflow.defn(
    name="RollbackWorkflow",
    versioning_behavior=VersioningBehavior.PINNED,
    failure_exception_types=_failure_types(RollbackWorkflow),
)
class VersionedRollbackWorkflow(RollbackWorkflow):
    @workflow.run
    async def run(self, input: RollbackInput) -> RollbackResult:
        return await super().run(input)


@workflow.defn(
    name="ReleaseWorkflow",
    versioning_behavior=VersioningBehavior.PINNED,
    failure_exception_types=_failure_types(ReleaseWorkflow),
)
class VersionedReleaseWorkflow(ReleaseWorkflow):
    @workflow.run
    async def run(self, input: ReleaseInput) -> ReleaseResult:
        return await super().run(input)


@workflow.defn(
    name="AlertRouterWorkflow",
    versioning_behavior=VersioningBehavior.PINNED,
    failure_exception_types=_failure_types(AlertRouterWorkflow),
)
class VersionedAlertRouterWorkflow(AlertRouterWorkflow):
    """Runs forever like an environment: pinned within a run, moves to the current build at continue-as-new (a
    notification wakes it: `ferry upgrade drain` sends one)."""

    @workflow.run
    async def run(self, input: AlertRouterInput) -> None:
        await super().run(input)


@workflow.defn(
    name="RolloutWorkflow",
    versioning_behavior=VersioningBehavior.PINNED,
    failure_exception_types=_failure_types(RolloutWorkflow),
)
class VersionedRolloutWorkflow(RolloutWorkflow):
    """A rollout finishes its walk on the build it started on, as a promotion does."""

    @workflow.run
    async def run(self, input: RolloutInput) -> RolloutOutcome:
        return await super().run(input)


VERSIONED: dict[type, type] = {
    AlertRouterWorkflow: VersionedAlertRouterWorkflow,
    EnvironmentWorkflow: VersionedEnvironmentWorkflow,
    PromotionWorkflow: VersionedPromotionWorkflow,
    RollbackWorkflow: VersionedRollbackWorkflow,
    ReleaseWorkflow: VersionedReleaseWorkflow,
    RolloutWorkflow: VersionedRolloutWorkflow,
}


def versioned(workflows: list[type]) -> list[type]:
    """The versioned class for each workflow class (a class with no entry must declare its own behaviour)."""
    return [VERSIONED.get(cls, cls) for cls in workflows]
