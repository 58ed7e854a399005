"""Connection-pool checks the adapter tiers share: many callers at once, and whether urllib3 discarded a
connection (its "Connection pool is full" warning: the next request to that host opens a new connection)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest


def pool_overflowed(call: Callable[[], object], caplog: pytest.LogCaptureFixture, callers: int = 24,
                    calls: int = 3) -> bool:
    """Run `call` `calls` times in each of `callers` threads released at once; True if urllib3 discarded a
    connection meanwhile."""
    barrier = threading.Barrier(callers)

    def caller() -> None:
        barrier.wait()
        for _ in range(calls):
            call()

    caplog.set_level("WARNING", logger="urllib3.connectionpool")
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return any("Connection pool is full" in r.getMessage() for r in caplog.records)
