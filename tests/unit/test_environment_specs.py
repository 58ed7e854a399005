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
    cluster: prod-eu
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
    assert production.cluster.name == "prod-eu" and production.approval.timeout == "24h"
    assert staging.cluster.effective == "default" and staging.writable_namespaces == ["staging"]


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        (
            "{kubeconfig: /var/cache/ferry/sha256/ab/kubeconfig.yaml}",
            "cluster: cluster.kubeconfig: an environment names "
            "a cluster of the worker's clusters file (cluster: NAME), never a kubeconfig path",
        ),
        ("{name: prod-eu, context: admin}", "cluster.context: an environment names a cluster"),
        ("{name: Prod_EU}", "cluster.name: String should match pattern"),
    ],
)
def test_a_spec_names_a_cluster_never_a_path(tmp_path: Path, cluster: str, expected: str) -> None:
    with pytest.raises(CommandError) as err:
        _load(tmp_path, GOOD.replace("cluster: prod-eu", f"cluster: {cluster}"))
    assert expected in str(err.value)


def test_cluster_by_mapping_and_confinement_fields(tmp_path: Path) -> None:
    text = GOOD.replace(
        "cluster: prod-eu",
        "cluster: {name: prod-eu}\n    namespace: shop\n"
        "    namespaces: [shop, shop-jobs]\n    cluster-kinds: [CustomResourceDefinition]\n"
        "    service-account: deployer",
    )
    production = _load(tmp_path, text)[1]
    assert production.cluster.name == "prod-eu" and production.writable_namespaces == ["shop", "shop-jobs"]
    assert production.cluster_kinds == ["CustomResourceDefinition"] and production.service_account == "deployer"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("    namespace: ferry-system\n", "namespace 'ferry-system' is reserved for ferry's inventories and leases"),
        ("    namespaces: [a, ferry-system]\n", "namespace 'ferry-system' is reserved"),
        ("    namespaces: [a, b]\n", "namespace 'staging' (where objects without one go) must be one of namespaces"),
        ("    namespaces: [Not_A_Label]\n", "namespace 'Not_A_Label' must be a lowercase DNS label"),
    ],
)
def test_namespaces_are_bounded(tmp_path: Path, change: str, expected: str) -> None:
    with pytest.raises(CommandError) as err:
        _load(
            tmp_path,
            GOOD.replace(
                "    namespace: staging\n",
                change if "namespaces" not in change else "    namespace: staging\n" + change,
                1,
            ),
        )
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("    version: 1.0.0\n", "environment staging: (spec): give exactly one of `version`"),
        ("    semver: '>=banana'\n", "environment staging: semver:"),
        ("    interval: soon\n", "environment staging: interval: duration: duration 'soon' is not like"),
        ("    approval: {required: true}\n", "environment staging: approval: approval.required is true but"),
        ("    path: ../escape\n", "environment staging: path: '../escape' must be a relative path"),
        ("    colour: blue\n", "environment staging: colour: unknown field (not part of EnvironmentSpec)"),
        (
            "    approval: {required: true, approvers: [a], colour: blue}\n",
            "environment staging: approval: colour: unknown field",
        ),
    ],
)
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
        _load(
            tmp_path,
            GOOD.replace(
                "repository: 127.0.0.1:5001/team/app\n    path: overlays/staging",
                "repository: team\n    path: overlays/staging",
            ),
        )
    with pytest.raises(CommandError, match="environment names must be unique: production"):
        _load(tmp_path, GOOD.replace("name: staging", "name: production"))
    with pytest.raises(CommandError, match="YAML does not parse"):
        _load(tmp_path, "environments: [\n")
