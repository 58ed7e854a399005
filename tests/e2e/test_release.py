"""Releases end to end: `ferry release` logic, the real Temporal dev server, the real registry."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import oras.provider
import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from cli.common import CommandError
from cli.release import prepare_release, run_release
from devstack.procs import free_port
from devstack.registry import Registry, htpasswd_line
from ferry.oci import (
    ANNOTATION_CREATED,
    ANNOTATION_PUBLISHED_BY,
    ANNOTATION_REVISION,
    ANNOTATION_SOURCE,
    FLUX_CONFIG_MEDIA_TYPE,
    FLUX_CONTENT_MEDIA_TYPE,
)
from ferry.settings import Settings
from tests.kit.stack import settings_for
from workers.worker import build_worker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "app"
HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories"


def _args(directory: Path, repository: str, version: str, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(
        dir=str(directory),
        repository=repository,
        version=version,
        revision=kw.get("revision"),
        source=kw.get("source"),
        published_by=kw.get("published_by", "ci-bot"),
        timeout=kw.get("timeout", "2m"),
        json=True,
    )


@pytest.fixture
def app(tmp_path: Path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(EXAMPLE, target)
    return target


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, registry: Registry, tmp_path: Path, task_queue: str
) -> AsyncIterator[Settings]:
    """A ferry worker on a fresh task queue, against the real dev server and registry."""
    settings = settings_for(registry, tmp_path)
    settings.temporal.address = dev_env.client.service_client.config.target_host
    settings.temporal.task_queue = task_queue
    async with build_worker(dev_env.client, settings):
        yield settings


async def release(
    settings: Settings, directory: Path, version: str, repository: str | None = None, **kw: Any
) -> dict[str, Any]:
    repo = repository or f"{settings.registry.default}/team/app-{uuid.uuid4().hex[:8]}"
    input, expected, _ = prepare_release(_args(directory, repo, version, **kw), settings)
    return await run_release(input, expected, settings)


def _manifest(registry: Registry, repository: str, tag: str) -> dict[str, Any]:
    return oras.provider.Registry(hostname=registry.host, insecure=True).get_manifest(f"{repository}:{tag}")


async def test_release_twice_is_idempotent(stack: Settings, registry: Registry, app: Path) -> None:
    first = await release(stack, app, "1.0.0")
    assert not first["already_released"] and first["digest"].startswith("sha256:")
    second = await release(stack, app, "1.0.0", repository=first["repository"])
    assert second["already_released"] and second["digest"] == first["digest"]
    tags = oras.provider.Registry(hostname=registry.host, insecure=True).get_tags(first["repository"])
    assert tags == ["1.0.0"]
    from urllib.parse import quote

    assert first["temporal_ui"].endswith("/workflows/" + quote(f"release/{first['repository']}/1.0.0", safe=""))


async def test_same_version_other_content_is_refused_and_registry_unchanged(
    stack: Settings, registry: Registry, app: Path
) -> None:
    first = await release(stack, app, "2.0.0")
    (app / "base" / "configmap.yaml").write_text(
        (app / "base" / "configmap.yaml").read_text().replace("Hello from Ferry", "changed")
    )
    with pytest.raises(CommandError) as err:
        await release(stack, app, "2.0.0", repository=first["repository"])
    message = str(err.value)
    assert "VersionAlreadyReleased" in message and first["layer_digest"] in message
    manifest = _manifest(registry, first["repository"], "2.0.0")
    assert manifest["layers"][0]["digest"] == first["layer_digest"]


def test_deterministic_digest_across_copies(app: Path, tmp_path: Path) -> None:
    from cli.release import local_layer_digest

    other = tmp_path / "elsewhere"
    # copy files in reverse order with different mtimes and modes
    for path in sorted(app.rglob("*"), reverse=True):
        target = other / path.relative_to(app)
        if path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
            os.utime(target, (1_000_000, 1_000_000 + hash(path.name) % 1000))
            target.chmod(0o600)
    assert local_layer_digest(app) == local_layer_digest(other)
    (other / "base" / "service.yaml").write_text((other / "base" / "service.yaml").read_text() + "\n# x\n")
    assert local_layer_digest(app) != local_layer_digest(other)


async def test_independent_client_reads_flux_media_types_and_annotations(
    stack: Settings, registry: Registry, app: Path
) -> None:
    out = await release(stack, app, "v3.1.0", revision="main@sha1:0123456789abcdef", source="https://git.example/app")
    manifest = _manifest(registry, out["repository"], "v3.1.0")  # plain oras-py, none of ferry's code
    assert manifest["config"]["mediaType"] == FLUX_CONFIG_MEDIA_TYPE
    assert [layer["mediaType"] for layer in manifest["layers"]] == [FLUX_CONTENT_MEDIA_TYPE]
    annotations = manifest["annotations"]
    assert annotations[ANNOTATION_REVISION] == "main@sha1:0123456789abcdef"
    assert annotations[ANNOTATION_SOURCE] == "https://git.example/app"
    assert annotations[ANNOTATION_PUBLISHED_BY] == "ci-bot"
    assert annotations[ANNOTATION_CREATED].endswith("Z")


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("latest", "'latest' is refused"),
        ("1.0.0+build.5", "build metadata"),
        ("1.0", "is not semver"),
        ("banana", "is not semver"),
    ],
)
def test_bad_versions_are_refused_with_reason(settings: Settings, app: Path, version: str, reason: str) -> None:
    with pytest.raises(CommandError) as err:
        prepare_release(_args(app, f"{settings.registry.default}/team/app", version), settings)
    assert reason in str(err.value)


def test_bad_directories_are_refused_with_file_document_and_field(settings: Settings, tmp_path: Path) -> None:
    repo = f"{settings.registry.default}/team/app"
    with pytest.raises(CommandError, match="does not exist"):
        prepare_release(_args(tmp_path / "missing", repo, "1.0.0"), settings)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CommandError, match="holds no manifests"):
        prepare_release(_args(empty, repo, "1.0.0"), settings)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"
    )
    with pytest.raises(CommandError, match=r"a.yaml: document 1 \(ConfigMap\): missing metadata.name"):
        prepare_release(_args(bad, repo, "1.0.0"), settings)
    (bad / "a.yaml").write_text("kind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(CommandError, match="a.yaml: document 0: missing apiVersion"):
        prepare_release(_args(bad, repo, "1.0.0"), settings)
    (bad / "a.yaml").write_text("apiVersion: v1\nkind: [unclosed\n")
    with pytest.raises(CommandError, match=r"a.yaml: line \d+: YAML does not parse"):
        prepare_release(_args(bad, repo, "1.0.0"), settings)
    (bad / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (bad / "link.yaml").symlink_to("/etc/hostname")
    with pytest.raises(CommandError, match="link.yaml: symlink points outside the bundle directory"):
        prepare_release(_args(bad, repo, "1.0.0"), settings)
    (bad / "link.yaml").unlink()
    (bad / "big.yaml").write_text("#" * (6 * 1024 * 1024))
    with pytest.raises(CommandError, match="big.yaml: .* over the .*-byte limit"):
        prepare_release(_args(bad, repo, "1.0.0"), settings)
    (bad / "big.yaml").unlink()
    os.mkfifo(bad / "pipe")
    with pytest.raises(CommandError, match="pipe: device files, FIFOs and sockets"):
        prepare_release(_args(bad, repo, "1.0.0"), settings)
    (bad / "pipe").unlink()
    kust = tmp_path / "kust"
    kust.mkdir()
    (kust / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    # NB: refused before kustomize runs: a resource that is not in the bundle is one kustomize would try to fetch
    with pytest.raises(CommandError, match="kustomization.yaml: resources entry 'missing.yaml' is not a file or"):
        prepare_release(_args(kust, repo, "1.0.0"), settings)
    (kust / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (kust / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(CommandError, match="kustomize build failed"):
        prepare_release(_args(kust, repo, "1.0.0"), settings)


@pytest.fixture
def flaky_registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(port=free_port(), root=tmp_path / "flaky")
    reg.start()
    yield reg
    reg.stop()


async def test_registry_outage_delays_release_and_history_shows_attempts(
    dev_env: WorkflowEnvironment, flaky_registry: Registry, tmp_path: Path, task_queue: str, app: Path
) -> None:
    settings = settings_for(flaky_registry, tmp_path)
    settings.temporal.address = dev_env.client.service_client.config.target_host
    settings.temporal.task_queue = task_queue
    flaky_registry.stop()
    repo = f"{flaky_registry.host}/team/outage"
    async with build_worker(dev_env.client, settings):
        task = asyncio.create_task(release(settings, app, "1.0.0", repository=repo))
        await asyncio.sleep(4)
        assert not task.done()
        flaky_registry.start()
        out = await asyncio.wait_for(task, timeout=90)
    assert oras.provider.Registry(hostname=flaky_registry.host, insecure=True).get_tags(repo) == ["1.0.0"]
    history = await dev_env.client.get_workflow_handle(out["workflow_id"]).fetch_history()
    started = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    retried = [e for e in started if e.activity_task_started_event_attributes.attempt > 1]
    assert retried, "the outage should show as retried attempts in history"
    assert (
        "RegistryUnavailable" in retried[0].activity_task_started_event_attributes.last_failure.message
        or retried[0].activity_task_started_event_attributes.last_failure.application_failure_info.type
        == "RegistryUnavailable"
    )
    assert out["digest"] == _manifest_digest(flaky_registry, repo, "1.0.0")


def history_text(history: Any) -> str:
    """The history as JSON with every payload decoded, so a search sees what the payloads carry."""
    import base64

    raw = history.to_json_dict()
    decoded: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    decoded.append(base64.b64decode(value).decode(errors="replace"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(raw)
    return json.dumps(raw) + "\n" + "\n".join(decoded)


def _manifest_digest(registry: Registry, repository: str, tag: str) -> str:
    import urllib.request

    host, path = repository.split("/", 1)
    request = urllib.request.Request(
        f"http://{host}/v2/{path}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request) as response:
        return str(response.headers["Docker-Content-Digest"])


async def test_credentials_never_enter_history(
    dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str, app: Path
) -> None:
    root = tmp_path / "auth"
    root.mkdir()
    (root / "htpasswd").write_text(htpasswd_line("ci", "pa55-w0rd-never-in-history") + "\n")
    reg = Registry(port=free_port(), root=root, htpasswd=root / "htpasswd")
    reg.start()
    try:
        settings = settings_for(reg, tmp_path, username="ci", password=SecretStr("pa55-w0rd-never-in-history"))
        settings.temporal.address = dev_env.client.service_client.config.target_host
        settings.temporal.task_queue = task_queue
        async with build_worker(dev_env.client, settings):
            out = await release(settings, app, "1.0.0", repository=f"{reg.host}/team/secret")
        history = await dev_env.client.get_workflow_handle(out["workflow_id"]).fetch_history()
        text = history_text(history)
        assert "pa55-w0rd-never-in-history" not in text
        import base64

        assert base64.b64encode(b"ci:pa55-w0rd-never-in-history").decode() not in text
        assert out["digest"] in text  # the history is readable and does carry the outcome
    finally:
        reg.stop()


async def test_release_history_for_replay(stack: Settings, app: Path, dev_env: WorkflowEnvironment) -> None:
    """Records the history that tests/replay replays (FERRY_RECORD_HISTORIES=1 rewrites the committed one)."""
    out = await release(stack, app, "1.0.0", repository=f"{stack.registry.default}/team/replay")
    history = await dev_env.client.get_workflow_handle(out["workflow_id"]).fetch_history()
    if os.environ.get("FERRY_RECORD_HISTORIES"):
        HISTORIES.mkdir(parents=True, exist_ok=True)
        (HISTORIES / "release.json").write_text(history.to_json())
    assert any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED for e in history.events)


def test_cli_release_exit_codes(tmp_path: Path) -> None:
    """The console script: one clear line and a non-zero exit on bad input, before any connection."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "release",
            str(EXAMPLE),
            "--repository",
            "127.0.0.1:1/team/app",
            "--version",
            "latest",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "ferry: version 'latest' is refused: releases are immutable semver tags (e.g. 1.2.3)"
    ]


def _write_key(path: Path, encrypted_with: bytes | None = None) -> tuple[Path, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (
        serialization.BestAvailableEncryption(encrypted_with) if encrypted_with else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    path.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path, key


def _key_forms(key: Any) -> list[str]:
    """Every text form the private key could leak in: its scalar, its DER/PEM encodings (PKCS#8 and SEC1)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    secret = key.private_numbers().private_value
    forms = [str(secret), f"{secret:x}", f"{secret:064x}"]
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
        forms += [base64.b64encode(der).decode(), der.hex()]
        forms += [line for line in pem.splitlines() if not line.startswith("-----") and len(line) >= 16]
    forms.append(base64.b64encode(secret.to_bytes(32, "big")).decode())
    return forms


async def test_signed_release_verifies_and_the_key_never_enters_history(
    stack: Settings, app: Path, dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from activities.registry import Registries, SignatureActivities
    from cli.release import load_sign_key
    from ferry.cosign import PublisherKey, VerifyArtifactInput, signature_tag

    key_file, key = _write_key(tmp_path / "release.key", encrypted_with=b"pem-pass")
    monkeypatch.setenv("FERRY_SIGN_KEY_PASSWORD", "pem-pass")
    signer = load_sign_key(str(key_file))
    repo = f"{stack.registry.default}/team/replay-signed"
    input, expected, _ = prepare_release(_args(app, repo, "1.0.0", published_by="ci-bot"), stack, signer)
    assert input.sign_key_fingerprint == signer.fingerprint
    out = await run_release(input, expected, stack, signer)
    assert out["signature_tag"] == signature_tag(out["digest"])
    assert out["signature_key_fingerprint"] == signer.fingerprint

    verified = SignatureActivities(Registries(stack.registry)).verify_artifact(
        VerifyArtifactInput(
            repository=repo,
            digest=out["digest"],
            publishers=[PublisherKey(name="ci-main", key=key_file.with_suffix(".pub").read_text())],
        )
    )
    assert (verified.publisher, verified.key_name) == ("ci-bot", "ci-main")

    history = await dev_env.client.get_workflow_handle(out["workflow_id"]).fetch_history()
    text = history_text(history)
    assert "sign_artifact" in text and signer.fingerprint in text  # the history says who signed
    leaked = [form[:12] + "…" for form in _key_forms(key) if form in text]
    assert not leaked, f"private key material in history: {leaked}"
    assert "pem-pass" not in text
    if os.environ.get("FERRY_RECORD_HISTORIES"):
        (HISTORIES / "signed").mkdir(parents=True, exist_ok=True)
        (HISTORIES / "signed" / "release.json").write_text(history.to_json())


async def test_rerelease_with_a_key_signs_the_already_released_digest(
    stack: Settings, app: Path, tmp_path: Path
) -> None:
    from cli.release import load_sign_key

    first = await release(stack, app, "1.0.0")
    assert first["signature_tag"] is None
    signer = load_sign_key(str(_write_key(tmp_path / "ci.key")[0]))
    input, expected, _ = prepare_release(_args(app, first["repository"], "1.0.0"), stack, signer)
    again = await run_release(input, expected, stack, signer)
    assert again["already_released"] and again["digest"] == first["digest"]
    assert again["signature_key_fingerprint"] == signer.fingerprint


async def test_cli_verify_exit_codes(stack: Settings, app: Path, registry: Registry, tmp_path: Path) -> None:
    from cli.release import load_sign_key

    key_file, _ = _write_key(tmp_path / "ci-main.key")
    _, _ = _write_key(tmp_path / "stranger.key")
    signer = load_sign_key(str(key_file))
    repo = f"{stack.registry.default}/team/app-{uuid.uuid4().hex[:8]}"
    input, expected, _ = prepare_release(_args(app, repo, "1.0.0", published_by="ci-bot"), stack, signer)
    out = await run_release(input, expected, stack, signer)
    await release(stack, app, "2.0.0", repository=repo)  # unsigned

    env = os.environ | {"FERRY_REGISTRY_INSECURE": registry.host}

    def ferry(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "verify", *args, "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    good = ferry(f"{repo}:1.0.0", "--key", str(tmp_path / "ci-main.pub"), "--json")
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert (report["digest"], report["publisher"], report["key_name"], report["fingerprint"]) == (
        out["digest"],
        "ci-bot",
        "ci-main",
        signer.fingerprint,
    )
    text = ferry(f"{repo}@{out['digest']}", "--key", str(tmp_path / "ci-main.pub"))
    assert text.returncode == 0 and f"signed by: ci-main {signer.fingerprint}" in text.stdout

    stranger = ferry(f"{repo}:1.0.0", "--key", str(tmp_path / "stranger.pub"))
    assert stranger.returncode == 1 and "VerificationFailed" in stranger.stderr and "unknown key" in stranger.stderr
    unsigned = ferry(f"{repo}:2.0.0", "--key", str(tmp_path / "ci-main.pub"))
    assert unsigned.returncode == 1 and "unsigned" in unsigned.stderr
    private = ferry(f"{repo}:1.0.0", "--key", str(key_file))
    assert private.returncode == 1 and "not a PEM public key" in private.stderr
    assert "PRIVATE" not in private.stderr


def test_cli_release_sign_key_problems_exit_1_without_echoing_the_key(tmp_path: Path) -> None:
    """A key that cannot be used is reported as one line, before any connection, and its bytes are not echoed."""
    key_file, key = _write_key(tmp_path / "enc.key", encrypted_with=b"pw")
    cosign_key = tmp_path / "cosign.key"
    cosign_key.write_text(
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FERRY_SIGN_KEY_PASSWORD"}
    cases = [
        (key_file, "the key is encrypted: put its password in FERRY_SIGN_KEY_PASSWORD"),
        (cosign_key, "cosign's encrypted key format"),
        (tmp_path / "missing.key", "No such file"),
    ]
    for path, reason in cases:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "release",
                str(EXAMPLE),
                "--repository",
                "127.0.0.1:1/team/app",
                "--version",
                "1.0.0",
                "--sign-key",
                str(path),
                "--state-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 1 and reason in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not [form for form in _key_forms(key) if form in result.stderr + result.stdout]
