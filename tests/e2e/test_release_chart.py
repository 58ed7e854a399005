"""`ferry release --chart DIR` end to end: the console script, the real Temporal dev server (the ReleaseWorkflow's
chart path, its audit trail in history), the real registry, and the real helm reading what was released."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from activities.helm.binary import helm_path
from activities.helm.render import helm_env
from activities.registry import Registries, SignatureActivities
from ferry.cosign import PublisherKey, VerifyArtifactInput
from ferry.settings import Settings
from tests.e2e import test_release
from tests.kit.charts import write_chart
from workflows.patches import CHART_RELEASE

stack = test_release.stack  # the fixture: a ferry worker on a fresh task queue, on the dev server
HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories" / "chart"


def cli_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "FERRY_SIGN_KEY_PASSWORD"},
        "FERRY_TEMPORAL_ADDRESS": settings.temporal.address,
        "FERRY_TASK_QUEUE": settings.temporal.task_queue,
        "FERRY_REGISTRY_INSECURE": settings.registry.default or "",
        "FERRY_REGISTRY": settings.registry.default or "",
        "FERRY_STATE_DIR": str(tmp_path / "no-stack"),
    }


def ferry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "release", *args], capture_output=True, text=True, timeout=180, env=env
    )


async def aferry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The console script in a thread: the test's worker shares this event loop and must keep running."""
    return await asyncio.to_thread(ferry, env, *args)


def released(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def helm(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in helm_env(home).items() if "proxy" not in k.lower()}
    out = subprocess.run([str(helm_path()), *args], env=env, cwd=home, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"
    return out


def helm_pull(home: Path, reference: str, version: str, into: Path) -> Path:
    """`helm pull oci://REPOSITORY --version V --plain-http -d INTO`; the pulled archive."""
    into.mkdir(exist_ok=True)
    helm(home, "pull", reference, "--version", version, "--plain-http", "-d", str(into))
    return into / f"shop-{version}.tgz"


def sign_key(path: Path) -> str:
    """A PKCS#8 release key at ``path``; returns its public key (what an environment's verify lists)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


async def test_release_chart_runs_through_the_workflow_and_helm_reads_it(
    stack: Settings, dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    env = cli_env(stack, tmp_path)
    chart = write_chart(tmp_path / "src")
    public = sign_key(tmp_path / "release.key")
    base = f"team-{uuid.uuid4().hex[:8]}/charts"
    args = ("--chart", str(chart), "--repository", base, "--published-by", "ci-charts", "--json")
    out = released(await aferry(env, *args, "--sign-key", str(tmp_path / "release.key")))
    repository = f"{stack.registry.default}/{base}/shop"
    assert out["repository"] == repository and out["version"] == "1.4.2" and out["tag"] == "1.4.2"
    assert out["reference"] == f"oci://{repository}:1.4.2" and not out["already_released"]
    assert out["workflow_id"] == f"release/{repository}/1.4.2" and out["signature_tag"]

    # the audit trail: the chart path's activities and its patch marker in the release's history
    history = await dev_env.client.get_workflow_handle(out["workflow_id"]).fetch_history()
    activities = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert activities == ["package_chart", "resolve_tag", "push_chart", "resolve_tag", "sign_artifact"]
    markers = [
        e.marker_recorded_event_attributes for e in history.events if e.HasField("marker_recorded_event_attributes")
    ]
    assert any(CHART_RELEASE in str(m.details) for m in markers)
    if os.environ.get("FERRY_RECORD_HISTORIES"):
        HISTORIES.mkdir(parents=True, exist_ok=True)
        (HISTORIES / "release.json").write_text(history.to_json())

    # the real helm pulls and templates it; the signature verifies as an environment's verify would check it
    repo_ref = out["reference"].rsplit(":", 1)[0]
    pulled = helm_pull(tmp_path / "home", repo_ref, "1.4.2", tmp_path / "pulled")
    rendered = helm(tmp_path / "home", "template", "shop", str(pulled), "--namespace=prod")
    assert "kind: Deployment" in rendered.stdout
    verified = SignatureActivities(Registries(stack.registry)).verify_artifact(
        VerifyArtifactInput(
            repository=repository, digest=out["digest"], publishers=[PublisherKey(name="ci", key=public)]
        )
    )
    assert verified.publisher == "ci-charts"

    # the same chart again: idempotent; another chart under the same version: refused, the registry unchanged
    again = released(await aferry(env, *args))
    assert again["already_released"] and again["digest"] == out["digest"]
    (chart / "values.yaml").write_text("replicaCount: 5\ngreeting: changed\nimage: nginx:1.27\n")
    refused = await aferry(env, *args)
    assert refused.returncode == 1 and "VersionAlreadyReleased" in refused.stderr, refused.stderr
    assert helm_pull(tmp_path / "home", repo_ref, "1.4.2", tmp_path / "again").read_bytes() == pulled.read_bytes()


async def test_release_chart_with_build_metadata_is_tagged_with_an_underscore(stack: Settings, tmp_path: Path) -> None:
    env = cli_env(stack, tmp_path)
    chart = write_chart(tmp_path / "src", version="2.0.0+b1")
    base = f"team-{uuid.uuid4().hex[:8]}/charts"
    out = released(await aferry(env, "--chart", str(chart), "--repository", base, "--version", "2.0.0+b1", "--json"))
    assert out["version"] == "2.0.0+b1" and out["tag"] == "2.0.0_b1"
    assert out["workflow_id"].endswith("/shop/2.0.0+b1")
    pulled = helm_pull(tmp_path / "home", f"oci://{out['repository']}", "2.0.0+b1", tmp_path / "pulled")
    assert pulled.is_file()


def test_bad_charts_are_refused_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FERRY_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "FERRY_REGISTRY": "127.0.0.1:1",
        "FERRY_STATE_DIR": str(tmp_path / "no-stack"),
    }
    chart = write_chart(tmp_path / "src")
    not_a_chart = tmp_path / "manifests"
    not_a_chart.mkdir()
    (not_a_chart / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    cases = [
        (("--chart", str(tmp_path / "missing")), "directory does not exist"),
        (("--chart", str(not_a_chart)), "no Chart.yaml: not a Helm chart directory"),
        (("--chart", str(chart), "--version", "1.5.0"), "Chart.yaml says version '1.4.2', the release says '1.5.0'"),
        ((str(chart), "--chart", str(chart)), "give the chart directory once"),
        (("--chart", str(chart / "Chart.yaml")), "not a directory"),
    ]
    for args, reason in cases:
        result = ferry(env, *args, "--repository", "team/charts")
        assert result.returncode == 1 and reason in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
