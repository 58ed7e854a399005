"""Connection-pool checks the adapter tiers share: many callers at once, and whether urllib3 discarded a
connection (its "Connection pool is full" warning: the next request to that host opens a new connection)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest


def pool_overflowed(
    call: Callable[[], object], caplog: pytest.LogCaptureFixture, callers: int = 24, calls: int = 3
) -> bool:
    """Run `call` `calls` times in each of `callers` threads released at once; True if urllib3 discarded a
    connection meanwhile. Every call must succeed and every thread finish (a failing call is no evidence either
    way)."""
    barrier = threading.Barrier(callers)
    errors: list[BaseException] = []
    done: list[int] = []

    def caller() -> None:
        try:
            barrier.wait()
            for _ in range(calls):
                call()
                done.append(1)
        except BaseException as err:  # NB: reported below, in the test's thread
            errors.append(err)

    caplog.set_level("WARNING", logger="urllib3.connectionpool")
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "callers still running after 30 s"
    assert not errors, f"{len(errors)} caller(s) failed, first: {errors[0]!r}"
    assert len(done) == callers * calls
    return any("Connection pool is full" in r.getMessage() for r in caplog.records)
