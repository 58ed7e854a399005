"""environments.yaml validation: every refusal names the environment, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.common import CommandError
from cli.environments import load_environments

GOOD = """
environments:
  - name: staging
    repository: 127.0.0.1:5001/team/app
    path: overlays/staging
    namespace: staging
    semver: ">=1.0.0"
  - name: production
    repository: 127.0.0.1:5001/team/app
    path: overlays/production
    version: 1.0.0
    cluster: {kubeconfig: /etc/ferry/prod.kubeconfig, context: prod}
    approval: {required: true, approvers: [alice], requires-healthy-in: [staging]}
"""


def _load(tmp_path: Path, text: str) -> list:  # type: ignore[type-arg]
    path = tmp_path / "environments.yaml"
    path.write_text(text)
    return load_environments(path)


def test_good_file(tmp_path: Path) -> None:
    staging, production = _load(tmp_path, GOOD)
    assert staging.semver == ">=1.0.0" and staging.interval == "1m" and staging.prune and staging.auto_rollback
    assert production.version == "1.0.0" and production.approval.requires_healthy_in == ["staging"]
    assert production.cluster.context == "prod" and production.approval.timeout == "24h"


@pytest.mark.parametrize(("change", "expected"), [
    ("    version: 1.0.0\n", "environment staging: (spec): give exactly one of `version`"),
    ("    semver: '>=banana'\n", "environment staging: semver:"),
    ("    interval: soon\n", "environment staging: interval: duration: duration 'soon' is not like"),
    ("    approval: {required: true}\n", "environment staging: approval: approval.required is true but"),
    ("    path: ../escape\n", "environment staging: path: '../escape' must be a relative path"),
    ("    colour: blue\n", "environment staging: colour: unknown field (not part of EnvironmentSpec)"),
    ("    approval: {required: true, approvers: [a], colour: blue}\n",
     "environment staging: approval: colour: unknown field"),
])
def test_invalid_fields_are_named(tmp_path: Path, change: str, expected: str) -> None:
    text = GOOD.replace('    semver: ">=1.0.0"\n', '    semver: ">=1.0.0"\n' + change, 1)
    if change.startswith("    semver:"):
        text = GOOD.replace('    semver: ">=1.0.0"\n', change, 1)
    with pytest.raises(CommandError) as err:
        _load(tmp_path, text)
    assert expected in str(err.value)


def test_bad_name_repository_duplicates(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="environment Prod: name: 'Prod' must be a lowercase DNS label"):
        _load(tmp_path, GOOD.replace("name: staging", "name: Prod"))
    with pytest.raises(CommandError, match="environment staging: repository: repository 'team' is not HOST"):
        _load(tmp_path, GOOD.replace("repository: 127.0.0.1:5001/team/app\n    path: overlays/staging",
                                     "repository: team\n    path: overlays/staging"))
    with pytest.raises(CommandError, match="environment names must be unique: production"):
        _load(tmp_path, GOOD.replace("name: staging", "name: production"))
    with pytest.raises(CommandError, match="YAML does not parse"):
        _load(tmp_path, "environments: [\n")
