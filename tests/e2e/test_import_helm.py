"""`ferry env import-helm` through the CLI: a real `helm install`, the environments file written (with the
release's values), --finish refused before the adoption, then after Ferry's reconcile --forget-helm removes
Helm's field manager and its release Secrets (`helm ls` empty)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack.kube.session import KubeServer
from ferry.declared import EnvironmentsFile
from ferry.helm_spec import HelmSource
from ferry.model import PEOPLE
from ferry.settings import Settings
from tests.kit.helm_releases import VALUES, Release, helm_entries, installed, reconcile_chart

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def release(kube_server: KubeServer, namespace: str, tmp_path: Path) -> Release:
    return installed(kube_server, namespace, tmp_path)


def ferry(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "env", "import-helm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp),
            "PYTHONPATH": str(ROOT),
            "FERRY_STATE_DIR": str(tmp / ".ferry"),
        },
    )


def test_import_helm_through_the_cli(release: Release, settings: Settings, kube_server: KubeServer) -> None:
    release.install(VALUES)
    before = release.settled()
    kube = ["--kubeconfig", str(kube_server.kubeconfig), "-n", release.namespace]
    missing = ferry(release.tmp, "shop", *kube)
    assert missing.returncode != 0 and "does not record where the chart came from" in missing.stderr
    out = release.tmp / "shop.yaml"
    repository = f"{settings.registry.default}/team/cfg"
    wrote = ferry(
        release.tmp, "shop", *kube, "--repository", repository, "--path", "charts/shop", "--version", "1.0.0",
        "--name", release.environment, "-o", str(out),
    )  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    assert "chart shop 1.4.2" in wrote.stderr and "--finish" in wrote.stderr
    spec = EnvironmentsFile.model_validate(yaml.safe_load(out.read_text()), context={PEOPLE: True}).environments[0]
    assert spec.helm is not None and spec.helm.values == VALUES and spec.helm.release_name == "shop"

    early = ferry(release.tmp, "shop", *kube, "--name", release.environment, "--forget-helm")
    assert early.returncode != 0 and "not applied by environment" in early.stderr
    assert release.run("ls", f"--namespace={release.namespace}", "--short").strip() == "shop"

    reconcile_chart(release, settings, spec.path, HelmSource.of(spec.helm, spec.name, spec.path))
    done = ferry(release.tmp, "shop", *kube, "--name", release.environment, "--forget-helm")
    assert done.returncode == 0, done.stderr
    assert "from 2 object(s)" in done.stdout and "deleted 1 release Secret(s)" in done.stdout
    after = release.settled()
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert helm_entries(after) == []
    assert release.run("ls", f"--namespace={release.namespace}", "--short").strip() == ""
