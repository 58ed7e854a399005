"""Deterministic orchestration only. Never imports kubernetes or oras."""

from workflows.release import ReleaseWorkflow

ALL_WORKFLOWS: list[type] = [ReleaseWorkflow]
