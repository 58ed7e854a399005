"""ReleaseInput: the CI task queue is a CI host's own; source URLs carry no credential."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ferry.release import ReleaseInput, ci_task_queue_problem, new_ci_task_queue, strip_url_credentials


def _input(**kw: str) -> ReleaseInput:
    return ReleaseInput.model_validate(
        {
            "repository": "registry.example.com/team/app",
            "version": "1.0.0",
            "ci_task_queue": new_ci_task_queue(),
            "bundle_dir": "/src",
            "publisher": "ci",
        }
        | kw
    )


@pytest.mark.parametrize(
    "queue",
    [
        "ferry",
        "ferry-ci-",
        "ferry-ci-XYZ",
        "other-worker",
        "ferry-ci-" + "a" * 65,
        "ferry-ci/host/../x",
        "ferry-ci/" + "h" * 300 + "/abcdef01",
        "",
    ],
)
def test_a_ci_task_queue_that_is_not_a_ci_hosts_is_refused(queue: str) -> None:
    """Issue 11: a crafted ReleaseWorkflow whose ci_task_queue is the main `ferry` queue packaged a directory of
    the worker's host and pushed it anywhere."""
    assert ci_task_queue_problem(queue) is not None
    with pytest.raises(ValidationError, match="not a CI host's queue"):
        _input(ci_task_queue=queue)


def test_ci_task_queues_made_by_ferry_release_are_accepted() -> None:
    assert ci_task_queue_problem(new_ci_task_queue()) is None
    assert new_ci_task_queue() != new_ci_task_queue()
    # NB: the form committed histories carry (ferry-ci/<host>/<8 hex>) still decodes.
    assert _input(ci_task_queue="ferry-ci/vm/2cf5cc7e").ci_task_queue == "ferry-ci/vm/2cf5cc7e"


@pytest.mark.parametrize(
    "url, clean",
    [
        ("https://user:glpat-s3cr3t@gitlab.example.com/team/config.git", "https://gitlab.example.com/team/config.git"),
        ("https://x-access-token:ghs_T0KEN@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://ghp_T0KEN@github.com:8443/o/r.git?private_token=T0KEN#frag", "https://github.com:8443/o/r.git"),
        ("http://gitlab-ci-token:T0KEN@10.0.0.1/o/r", "http://10.0.0.1/o/r"),
        ("ssh://git:T0KEN@host.example.com:22/o/r.git", "ssh://git@host.example.com:22/o/r.git"),
        ("git+ssh://deploy@host/o/r.git", "git+ssh://deploy@host/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("deploy:T0KEN@host.example.com:o/r.git", "deploy@host.example.com:o/r.git"),
        ("https://[::1]:8080/o/r.git", "https://[::1]:8080/o/r.git"),
        ("/srv/git/config.git", "/srv/git/config.git"),
        ("file:///srv/git/config.git", "file:///srv/git/config.git"),
        ("", ""),
    ],
)
def test_credentials_are_stripped_from_source_urls(url: str, clean: str) -> None:
    assert strip_url_credentials(url) == clean
    assert _input(source=url).source == clean
    assert "T0KEN" not in clean and "s3cr3t" not in clean
