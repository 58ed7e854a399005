"""Deterministic orchestration only. Never imports kubernetes or oras.

NB: this package imports none of its workflow modules itself. The workflow sandbox re-imports a workflow's module
(and its package) for every workflow it runs; an `__init__` that imported every workflow module would make each new
environment compile all of them (~0.2 s of a worker's CPU per new workflow, most of `ferry env apply`'s time on a
fleet). `ALL_WORKFLOWS` is resolved on first use, outside the sandbox."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "ALL_WORKFLOWS":
        from workflows.alerts import AlertRouterWorkflow
        from workflows.environment import EnvironmentWorkflow
        from workflows.promotion import PromotionWorkflow
        from workflows.release import ReleaseWorkflow
        from workflows.rollback import RollbackWorkflow
        from workflows.rollout import RolloutWorkflow

        return [
            ReleaseWorkflow,
            EnvironmentWorkflow,
            PromotionWorkflow,
            RollbackWorkflow,
            AlertRouterWorkflow,
            RolloutWorkflow,
        ]
    raise AttributeError(f"module 'workflows' has no attribute {name!r}")
