"""The sticky-cache rule (ferry/capacity.py): an even share of the queue's running workflows against one worker's
cache, with headroom; an LRU cache under a cyclic load larger than itself misses every task."""

from __future__ import annotations

import pytest

from ferry.capacity import cache_pressure


@pytest.mark.parametrize(
    ("running", "workers", "capacity", "level"),
    [
        (0, 0, 10_000, "ok"),
        (9_000, 1, 10_000, "ok"),
        (9_500, 1, 10_000, "thin"),  # within 10 %: a few promotions more and it thrashes
        (10_001, 1, 10_000, "thrashing"),  # the measured cliff: one over is every task a miss
        (300, 1, 285, "thrashing"),
        (10_000, 2, 6_000, "thin"),  # fits two workers, not one: losing either makes the other thrash
        (10_000, 2, 11_001, "ok"),
        (10_001, 2, 5_000, "thrashing"),  # ceil(10,001 / 2) = 5,001 > 5,000
        (1, 0, 2, "ok"),  # nobody polls yet: this worker is the one
        (1, 1, 0, "thrashing"),  # cache off
    ],
)
def test_cache_pressure_levels(running: int, workers: int, capacity: int, level: str) -> None:
    assert cache_pressure(running, workers, capacity, "ferry").level == level


def test_the_warning_names_the_queue_the_numbers_and_the_setting() -> None:
    message = cache_pressure(300, 1, 285, "ferry-eu").message
    assert "'ferry-eu'" in message and "300" in message and "285" in message
    assert "FERRY_MAX_CACHED_WORKFLOWS to at least 331" in message
    thin = cache_pressure(10_000, 2, 6_000, "ferry").message
    assert "2 workers" in thin and "others stop" in thin


def test_the_demand_ratio_is_an_even_share_over_the_cache() -> None:
    assert cache_pressure(300, 1, 285, "ferry").demand_ratio == pytest.approx(300 / 285)
    assert cache_pressure(10_001, 2, 5_000, "ferry").demand_ratio == pytest.approx(5_001 / 5_000)
    assert cache_pressure(0, 1, 0, "ferry").demand_ratio == 0.0
    assert cache_pressure(1, 1, 0, "ferry").demand_ratio == float("inf")
