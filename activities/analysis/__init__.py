"""Rollout analysis: the worker's Prometheus, queried once per check and interval (issue 29)."""
