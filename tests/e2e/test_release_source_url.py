"""A CI checkout's job token in `git remote.origin.url` never reaches workflow history or the artifact."""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
import uuid
from pathlib import Path

import oras.provider
import pytest
from temporalio.testing import WorkflowEnvironment

from cli.release import prepare_release, run_release
from devstack.registry import Registry
from ferry.oci import ANNOTATION_REVISION, ANNOTATION_SOURCE
from tests.e2e.test_release import EXAMPLE, history_text
from tests.kit.stack import settings_for
from workers.worker import build_worker

TOKEN = "glpat-Job7oken-n3ver-in-history"


def _git(directory: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(directory), *args], check=True, capture_output=True)


@pytest.mark.parametrize(
    "remote, clean",
    [
        (
            f"https://gitlab-ci-token:{TOKEN}@gitlab.example.com/team/config.git",
            "https://gitlab.example.com/team/config.git",
        ),
        (
            f"ssh://git:{TOKEN}@gitlab.example.com:2222/team/config.git",
            "ssh://git@gitlab.example.com:2222/team/config.git",
        ),
    ],
)
async def test_a_token_in_the_git_remote_is_absent_from_history_and_artifact(
    dev_env: WorkflowEnvironment, registry: Registry, tmp_path: Path, task_queue: str, remote: str, clean: str
) -> None:
    app = tmp_path / "checkout"
    shutil.copytree(EXAMPLE, app)
    _git(app, "init", "-q", "-b", "main")
    _git(app, "-c", "user.name=ci", "-c", "user.email=ci@example.com", "add", ".")
    _git(app, "-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "-q", "-m", "config")
    _git(app, "remote", "add", "origin", remote)
    settings = settings_for(registry, tmp_path)
    settings.temporal.address = dev_env.client.service_client.config.target_host
    settings.temporal.task_queue = task_queue
    repository = f"{registry.host}/team/src-{uuid.uuid4().hex[:8]}"
    args = argparse.Namespace(
        dir=str(app),
        repository=repository,
        version="1.0.0",
        revision=None,
        source=None,
        published_by="ci-bot",
        timeout="2m",
        json=True,
    )
    async with build_worker(dev_env.client, settings):
        input, expected, _ = prepare_release(args, settings)
        assert input.source == clean
        out = await run_release(input, expected, settings)
    text = history_text(await dev_env.client.get_workflow_handle(out["workflow_id"]).fetch_history())
    assert clean in text, "the history carries the source, without its credential"
    assert TOKEN not in text and base64.b64encode(TOKEN.encode()).decode() not in text
    manifest = oras.provider.Registry(hostname=registry.host, insecure=True).get_manifest(f"{repository}:1.0.0")
    assert manifest["annotations"][ANNOTATION_SOURCE] == clean
    assert manifest["annotations"][ANNOTATION_REVISION].startswith("main@sha1:")
    assert TOKEN not in str(manifest)


async def test_an_explicit_source_flag_is_stripped_too(
    dev_env: WorkflowEnvironment, registry: Registry, tmp_path: Path, task_queue: str
) -> None:
    settings = settings_for(registry, tmp_path)
    settings.temporal.address = dev_env.client.service_client.config.target_host
    settings.temporal.task_queue = task_queue
    repository = f"{registry.host}/team/src-{uuid.uuid4().hex[:8]}"
    args = argparse.Namespace(
        dir=str(EXAMPLE),
        repository=repository,
        version="1.0.0",
        revision="r1",
        source=f"https://x-access-token:{TOKEN}@github.com/o/r",
        published_by="ci-bot",
        timeout="2m",
        json=True,
    )
    async with build_worker(dev_env.client, settings):
        input, expected, _ = prepare_release(args, settings)
        out = await run_release(input, expected, settings)
    text = history_text(await dev_env.client.get_workflow_handle(out["workflow_id"]).fetch_history())
    assert TOKEN not in text
    manifest = oras.provider.Registry(hostname=registry.host, insecure=True).get_manifest(f"{repository}:1.0.0")
    assert manifest["annotations"][ANNOTATION_SOURCE] == "https://github.com/o/r"
