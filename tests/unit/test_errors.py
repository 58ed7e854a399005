from __future__ import annotations

import pytest

from activities.errors import classified
from ferry.errors import ErrorType, classify_http_status, is_retryable, truncate


@pytest.mark.parametrize(
    ("status", "expected", "retryable"),
    [
        (401, ErrorType.UNAUTHORIZED, False),
        (403, ErrorType.UNAUTHORIZED, False),
        (404, ErrorType.NOT_FOUND, False),
        (400, ErrorType.BAD_INPUT, False),
        (422, ErrorType.BAD_INPUT, False),
        (409, ErrorType.CONFLICT, False),
        (429, ErrorType.REGISTRY_UNAVAILABLE, True),
        (500, ErrorType.REGISTRY_UNAVAILABLE, True),
        (503, ErrorType.REGISTRY_UNAVAILABLE, True),
    ],
)
def test_http_status_classification(status: int, expected: ErrorType, retryable: bool) -> None:
    got = classify_http_status(status, unavailable=ErrorType.REGISTRY_UNAVAILABLE)
    assert got == expected
    assert is_retryable(got) is retryable
    err = classified(got, "x")
    assert err.type == str(expected) and err.non_retryable is (not retryable)


def test_messages_are_truncated_below_payload_limits() -> None:
    assert len(truncate("x" * 100_000)) <= 4096
    assert len(classified(ErrorType.BAD_INPUT, "y" * 100_000).message) <= 4096


def test_missing_kubeconfig_is_bad_input_naming_the_file(tmp_path: object) -> None:
    from pathlib import Path

    from temporalio.exceptions import ApplicationError

    from activities.bundle import BundleCache
    from activities.cluster import ClusterActivities
    from ferry.clusters import ClusterEntry, ClustersFile

    clusters = ClustersFile(
        clusters={"prod": ClusterEntry(kubeconfig=f"{tmp_path}/missing-kubeconfig", context="prod")}
    )
    acts = ClusterActivities(BundleCache(Path(str(tmp_path)), pull=None), clusters=clusters)
    try:
        acts.cluster("prod")
    except ApplicationError as err:
        assert err.type == "BadInput" and err.non_retryable
        assert "missing-kubeconfig context prod" in err.message
    else:
        raise AssertionError("a missing kubeconfig must be refused")
