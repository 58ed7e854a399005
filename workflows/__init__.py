"""Deterministic orchestration only. Never imports kubernetes or oras."""

from workflows.alerts import AlertRouterWorkflow
from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.release import ReleaseWorkflow
from workflows.rollback import RollbackWorkflow

ALL_WORKFLOWS: list[type] = [ReleaseWorkflow, EnvironmentWorkflow, PromotionWorkflow, RollbackWorkflow,
                             AlertRouterWorkflow]
