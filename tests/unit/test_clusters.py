"""The worker's clusters file: strict, names only, plugins detected before the kubernetes client loads anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.cluster import ClustersFileError, load_clusters
from ferry.clusters import ClustersFile, auth_plugin
from workers.settings import load_settings


def _kubeconfig(user: dict[str, object], current: str = "main") -> dict[str, object]:
    return {
        "current-context": current,
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u"}},
            {"name": "other", "context": {"cluster": "c", "user": "plain"}},
        ],
        "users": [{"name": "u", "user": user}, {"name": "plain", "user": {"token": "t"}}],
    }


def test_plugins_are_found_for_the_context_that_would_load() -> None:
    exec_user = {"exec": {"command": "/bin/sh", "args": ["-c", "touch /tmp/x"]}}
    assert auth_plugin(_kubeconfig(exec_user), None) == ("exec", "/bin/sh -c touch /tmp/x")
    assert auth_plugin(_kubeconfig(exec_user), "other") is None
    assert auth_plugin(_kubeconfig(exec_user, current="other"), None) is None
    provider = {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/usr/bin/gcloud"}}}
    assert auth_plugin(_kubeconfig(provider), "main") == ("auth-provider", "gcp (cmd-path /usr/bin/gcloud)")
    assert auth_plugin(_kubeconfig({"client-certificate-data": "x"}), None) is None


def test_the_file_is_strict_and_is_the_whole_list(tmp_path: Path) -> None:
    path = tmp_path / "clusters.yaml"
    path.write_text("clusters:\n  prod-eu: {kubeconfig: /etc/ferry/prod.kubeconfig, allow-auth: [exec]}\n")
    clusters = load_clusters(path, "/etc/ferry/local.kubeconfig")
    assert clusters.clusters["prod-eu"].allow_auth == ["exec"]
    # NB: no implicit `default` beside a file: an unbounded `default` on the same kubeconfig as a bounded entry
    # would take any spec that names no cluster past the operator's bounds
    assert "default" not in clusters.clusters
    assert (
        load_clusters(None, "/etc/ferry/local.kubeconfig").clusters["default"].kubeconfig
        == "/etc/ferry/local.kubeconfig"
    )
    assert clusters.by_kubeconfig("/etc/ferry/prod.kubeconfig", None) == "prod-eu"
    assert clusters.by_kubeconfig("/anything/else", None) is None
    assert sorted(load_clusters(path, None).clusters) == ["prod-eu"]
    assert ClustersFile.implicit(None).clusters["default"].kubeconfig is None
    for text, named in (
        ("clusters:\n  a: {kubeconfig: x, allow-auth: [anything]}\n", "allow-auth"),
        ("clusters:\n  a: {kubeconfig: x, colour: blue}\n", "colour"),
        ("clusters:\n  Prod_EU: {kubeconfig: x}\n", "Prod_EU"),
        ("kubeconfig: x\n", "kubeconfig"),
        ("clusters:\n  a: {kubeconfig: x, context: ''}\n", "context"),
    ):
        path.write_text(text)
        with pytest.raises(ClustersFileError) as err:
            load_clusters(path, None)
        assert str(path) in str(err.value) and named in str(err.value)
    with pytest.raises(ClustersFileError):
        load_clusters(tmp_path / "missing.yaml", None)


def test_ferry_clusters_and_the_local_stacks_file(tmp_path: Path) -> None:
    assert load_settings(env={"FERRY_CLUSTERS": "/etc/ferry/clusters.yaml"}, state_dir=tmp_path).clusters == Path(
        "/etc/ferry/clusters.yaml"
    )
    (tmp_path / "devstack.json").write_text(
        json.dumps(
            {"kube": {"worker_kubeconfig": str(tmp_path / "w.kubeconfig"), "clusters": str(tmp_path / "clusters.yaml")}}
        )
    )
    settings = load_settings(env={}, state_dir=tmp_path)
    assert settings.clusters == tmp_path / "clusters.yaml" and settings.kubeconfig == tmp_path / "w.kubeconfig"


def test_a_lease_holder_is_unique_per_acquisition() -> None:
    """Activity ids restart with every run: a new run's reconcile on the same host must not pass for an old
    attempt still running (both would write)."""
    from activities.cluster.lease import _holder

    assert _holder() != _holder()
