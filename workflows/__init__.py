"""Deterministic orchestration only. Never imports kubernetes or oras."""

ALL_WORKFLOWS: list[type] = []
