"""Deterministic orchestration only. Never imports kubernetes or oras."""

from workflows.environment import EnvironmentWorkflow
from workflows.promotion import PromotionWorkflow, RollbackWorkflow
from workflows.release import ReleaseWorkflow

ALL_WORKFLOWS: list[type] = [ReleaseWorkflow, EnvironmentWorkflow, PromotionWorkflow, RollbackWorkflow]
