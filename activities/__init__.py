"""Side effects as thin adapters. Only registry.py imports oras; only cluster.py imports kubernetes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ferry.settings import Settings


def extra_activities(settings: Settings) -> list[Callable[..., Any]]:
    """Activities beyond the registry set (bundle, cluster), registered by the worker."""
    return []
