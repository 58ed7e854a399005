"""`ferry release DIR --repository HOST/PATH --version VERSION`: what CI runs to publish manifests."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from cli.commands import SIGN_KEY_PASSWORD_VARIABLE
from cli.common import CommandError, connect_client, emit, local_identity, root_cause, settings_from
from ferry.cosign import ReleaseSigner, load_signer
from ferry.durations import parse_duration
from ferry.oci import split_repository
from ferry.release import (
    PackageBundleResult,
    PackageChartResult,
    ReleaseInput,
    ReleaseResult,
    chart_version_problem,
    new_ci_task_queue,
    release_workflow_id,
    strip_url_credentials,
)
from ferry.settings import Settings
from ferry.versions import VersionError, parse_release_version
from workers.client import workflow_url
from workers.wiring import (
    BundleError,
    chart_release_activities,
    layer_digest,
    package_chart_release,
    package_release,
    release_activities,
)
from workers.worker import ci_worker
from workflows.release import ReleaseWorkflow, release_search_attributes

# The workflow's own deadline: the release timeout plus time for the CI-queue timeouts to fire.
CI_GRACE = parse_duration("2m")
MAX_KEY_FILE = 16 * 1024


def _git(directory: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def git_facts(directory: Path) -> dict[str, str]:
    """Flux's revision convention <branch>@sha1:<commit>, the remote URL, and the commit time."""
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return {}
    branch = _git(directory, "rev-parse", "--abbrev-ref", "HEAD") or "HEAD"
    # NB: CI checkouts often embed a job token in the remote URL: it never leaves this process.
    source = strip_url_credentials(_git(directory, "config", "--get", "remote.origin.url"))
    return {
        "revision": f"{branch}@sha1:{commit}",
        "source": source,
        "created": _git(directory, "log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%SZ"),
    }


def resolve_repository(repository: str, settings: Settings) -> str:
    """A bare PATH uses the default registry (the local stack's when running)."""
    if "/" in repository and ("." in repository.split("/")[0] or ":" in repository.split("/")[0]):
        return repository
    if settings.registry.default:
        return f"{settings.registry.default}/{repository}"
    return repository


def local_layer_digest(directory: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return layer_digest(directory, Path(tmp))


def load_sign_key(path: str) -> ReleaseSigner:
    """The signing key from ``--sign-key``; errors name the file and the problem, never the key's bytes."""
    try:
        with open(path, "rb") as handle:
            pem = handle.read(MAX_KEY_FILE + 1)
    except OSError as err:
        raise CommandError(f"--sign-key {path}: {err.strerror}") from None
    if len(pem) > MAX_KEY_FILE:
        raise CommandError(f"--sign-key {path}: larger than {MAX_KEY_FILE} bytes, not a PEM key")
    password = os.environ.get(SIGN_KEY_PASSWORD_VARIABLE)
    try:
        return load_signer(pem, password.encode() if password else None)
    except ValueError as err:
        raise CommandError(f"--sign-key {path}: {err}") from None


def release_input(
    args: argparse.Namespace,
    repository: str,
    version: str,
    directory: Path,
    timeout: timedelta,
    signer: ReleaseSigner | None,
    chart: bool = False,
) -> ReleaseInput:
    """The ReleaseWorkflow's input: the git facts of ``directory`` unless the flags say otherwise; only the
    signing key's fingerprint (ValueError from the model names a refused field)."""
    facts = git_facts(directory)
    return ReleaseInput(
        repository=repository,
        version=version,
        ci_task_queue=new_ci_task_queue(),
        bundle_dir=str(directory),
        revision=args.revision or facts.get("revision", ""),
        source=args.source or facts.get("source", ""),
        publisher=args.published_by or local_identity(),
        created=facts.get("created") or None,
        timeout_seconds=max(10, int(timeout.total_seconds())),
        sign_key_fingerprint=signer.fingerprint if signer else None,
        chart=chart,
    )


def _allow_plain(args: argparse.Namespace) -> bool:
    """--allow-plain-secrets (absent from a Namespace built by older callers: refused, the safe side)."""
    return bool(getattr(args, "allow_plain_secrets", False))


def prepare_release(
    args: argparse.Namespace, settings: Settings, signer: ReleaseSigner | None = None
) -> tuple[ReleaseInput, PackageBundleResult, int]:
    """Validate everything before anything is started or pushed; one clear line for the first problem. With a
    signer, the release is signed; only the key's fingerprint enters the workflow input. The packaged bundle is
    returned for run_release's CI worker: parsed and tarred once per release, not twice."""
    if not args.dir or not args.version:
        raise CommandError("ferry release: give DIR and --version (or --chart DIR for a Helm chart)")
    directory = Path(args.dir).absolute()
    repository = resolve_repository(args.repository, settings)
    try:
        split_repository(repository)
        parse_release_version(args.version)
        timeout = parse_duration(args.timeout)
    except (ValueError, VersionError) as err:
        raise CommandError(str(err)) from None
    if not directory.exists():
        raise CommandError(f"{args.dir}: directory does not exist")
    try:
        objects, packaged = package_release(directory, allow_plain_secrets=_allow_plain(args))
    except BundleError as err:
        raise CommandError(f"invalid bundle: {err}") from None
    input = release_input(args, repository, args.version, directory, timeout, signer)
    return input, packaged, objects


async def run_release(
    input: ReleaseInput, packaged: PackageBundleResult, settings: Settings, signer: ReleaseSigner | None = None
) -> dict[str, Any]:
    """Serve the CI task queue in this process while the ReleaseWorkflow runs; return its outcome. The signing
    key, if any, stays in this process: only this worker registers sign_artifact."""
    activities = release_activities(settings, input.bundle_dir, packaged, signer)
    return await _run_workflow(input, activities, packaged.layer_digest, settings)


async def _run_workflow(
    input: ReleaseInput, activities: list[Any], expected_layer: str, settings: Settings
) -> dict[str, Any]:
    repository, version = input.repository, input.version
    timeout = timedelta(seconds=input.timeout_seconds)
    client = await connect_client(settings)
    # NB: the worker-specific task queue: packaging and push run here, on the CI host, for this process's life.
    async with ci_worker(client, input.ci_task_queue, activities):
        workflow_id = release_workflow_id(repository, version)
        handle = await client.start_workflow(
            ReleaseWorkflow.run,
            input,
            id=workflow_id,
            task_queue=settings.temporal.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=release_search_attributes(input),
            execution_timeout=timeout + CI_GRACE,
        )
        try:
            result: ReleaseResult = await handle.result()
        except WorkflowFailureError as err:
            raise CommandError(
                f"release {repository}:{version} failed: {root_cause(err)} "
                f"({workflow_url(settings.temporal, workflow_id)})"
            ) from None
    if result.layer_digest != expected_layer:
        # Attached to a release of the same version started by someone else, with other content.
        raise CommandError(
            f"release {repository}:{version} failed: VersionAlreadyReleased: "
            f"released layer {result.layer_digest}, this content {expected_layer}"
        )
    return {
        "repository": repository,
        "version": version,
        "digest": result.digest,
        "layer_digest": result.layer_digest,
        "size": result.size,
        "already_released": result.already_released,
        "publisher": result.publisher,
        "signature_tag": result.signature_tag,
        "signature_key_fingerprint": result.signature_key_fingerprint,
        "workflow_id": workflow_id,
        "run_id": handle.result_run_id,
        "temporal_ui": workflow_url(settings.temporal, workflow_id),
    }


def prepare_chart_release(
    args: argparse.Namespace, settings: Settings, signer: ReleaseSigner | None = None
) -> tuple[ReleaseInput, PackageChartResult]:
    """`ferry release --chart DIR --repository HOST/PATH`: check and package the chart (deterministic) before
    anything starts; the release goes to HOST/PATH/<chart name> at Chart.yaml's version (``--version``, if given,
    must say the same). One clear line for the first problem."""
    if args.dir:
        raise CommandError(f"ferry release --chart {args.chart}: give the chart directory once (drop {args.dir!r})")
    directory = Path(args.chart).absolute()
    if not directory.exists():
        raise CommandError(f"--chart {args.chart}: directory does not exist")
    if not directory.is_dir():
        raise CommandError(f"--chart {args.chart}: not a directory (give the chart's directory, not its .tgz)")
    try:
        timeout = parse_duration(args.timeout)
        packaged = package_chart_release(directory, allow_plain_secrets=_allow_plain(args))
    except BundleError as err:
        raise CommandError(f"invalid chart: {err}") from None
    except ValueError as err:
        raise CommandError(str(err)) from None
    except ApplicationError as err:  # UnsafeArchive from the archive check
        raise CommandError(f"invalid chart: {err.message}") from None
    problem = chart_version_problem(args.version or "", packaged.version, args.chart)
    if problem:
        raise CommandError(problem)
    repository = f"{resolve_repository(args.repository, settings)}/{packaged.name}"
    try:
        split_repository(repository)
        input = release_input(args, repository, packaged.version, directory, timeout, signer, chart=True)
    except ValueError as err:
        raise CommandError(str(err)) from None
    return input, packaged


async def run_chart_release(
    input: ReleaseInput, packaged: PackageChartResult, settings: Settings, signer: ReleaseSigner | None = None
) -> dict[str, Any]:
    """The chart's ReleaseWorkflow, its CI queue served here (package_chart, push_chart, sign_artifact)."""
    activities = chart_release_activities(settings, input.bundle_dir, packaged, signer)
    out = await _run_workflow(input, activities, packaged.layer_digest, settings)
    return out | {
        "chart": packaged.name,
        "tag": input.tag,
        "files": packaged.files,
        "reference": f"oci://{input.repository}:{input.tag}",
    }


def cmd_release(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    signer = load_sign_key(args.sign_key) if args.sign_key else None
    if getattr(args, "chart", None):
        chart_input, chart = prepare_chart_release(args, settings, signer)
        out = asyncio.run(run_chart_release(chart_input, chart, settings, signer))
        what = "identical chart"
    else:
        input, packaged, objects = prepare_release(args, settings, signer)
        out = asyncio.run(run_release(input, packaged, settings, signer)) | {"objects": objects}
        what = "identical content"
    note = f" (already released: {what})" if out["already_released"] else ""
    if out["signature_tag"]:
        note += f"\nsigned by {out['signature_key_fingerprint']} as {out['publisher']} ({out['signature_tag']})"
    reference = f" {out['reference']}" if "reference" in out else ""
    emit(out, args.json, f"{out['digest']}{reference}{note}")
    return 0
