"""Is one worker's sticky cache big enough for its task queue? (pure; the worker's cache watch asks it.)

The SDK keeps each running workflow it served in a least-recently-used cache (`max_cached_workflows`). Environments
are served in a cycle (one task per interval each), and an LRU cache under a cyclic load even slightly larger than
itself evicts exactly the workflow whose turn comes next: every task misses and replays its whole history. Measured
(bench/README.md, Fleet): 300 environments at 1m with a cache of 285 had 1 hit and 596 misses in two minutes, and
cost the worker 3.3x the CPU; with a cache of 330, all 601 tasks hit. So there is no gentle degradation to wait for:
the cache must hold what a worker serves, with headroom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# Room for what is not an environment iteration (promotions, rollbacks, the alert router) and for growth.
HEADROOM = 1.1


@dataclass(frozen=True)
class CachePressure:
    level: Literal["ok", "thin", "thrashing"]
    message: str
    demand_ratio: float  # an even share of the queue over the cache: above 1, every task misses


def cache_pressure(running: int, workers: int, capacity: int, queue: str) -> CachePressure:
    """`running` workflows on `queue`, served by `workers` (those polling it now, this one included), against a
    cache of `capacity` per worker. Thrashing: an even share already exceeds the cache. Thin: the share fits, but
    the queue does not fit one worker, so losing the others (a crash, a rolling update) would make it thrash."""
    workers = max(1, workers)
    share = math.ceil(running / workers)  # sticky placement is not balanced: an even share is the best case
    ratio = share / capacity if capacity else (math.inf if running else 0.0)
    advice = (
        f"raise FERRY_MAX_CACHED_WORKFLOWS to at least {int(running * HEADROOM) + 1} (about 0.3 MB per cached "
        "environment) or run more workers"
    )
    if capacity == 0 and running:
        return CachePressure(
            "thrashing",
            f"the sticky cache is off (FERRY_MAX_CACHED_WORKFLOWS=0): every one of the "
            f"{running} running workflows on task queue {queue!r} replays its history at each task; "
            f"{advice}",
            ratio,
        )
    if share > capacity:
        return CachePressure(
            "thrashing",
            f"{running} running workflows on task queue {queue!r} across {workers} "
            f"worker(s) is {share} per worker, more than this worker's sticky cache of {capacity}: "
            f"served in a cycle, every workflow task misses the cache and replays the workflow's "
            f"whole history; {advice}",
            ratio,
        )
    if running * HEADROOM > capacity:
        alone = (
            "within 10 % of this worker's sticky cache"
            if workers == 1
            else f"fit {workers} workers (about {share} each) but not this worker's sticky cache alone: if the "
            "others stop, this one thrashes"
        )
        return CachePressure(
            "thin", f"{running} running workflows on task queue {queue!r} {alone} (size {capacity}); {advice}", ratio
        )
    return CachePressure("ok", f"{running} running workflows on task queue {queue!r}; sticky cache {capacity}", ratio)
