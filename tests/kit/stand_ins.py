"""Stand-in activities (the samples' style) for orchestration tests: registered under the activity names of
workflows/activity_stubs.py (the names in history), over a tiny in-memory world: tags in a registry, the digest each
namespace runs, digests that fail health. No registry, no cluster: a test states what the world does and asserts the
workflow's decisions and the order of its activity calls. The activities that only talk to Temporal
(environment_status's query, confirm_pin, last_record) are the real ones of activities/environments.py."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.environments import EnvironmentActivities
from ferry.artifacts import (
    FetchManifestInput,
    Layer,
    Manifest,
    PushArtifactInput,
    PushArtifactResult,
    ResolveTagInput,
    ResolveTagResult,
)
from ferry.environment import EnvironmentStatus
from ferry.oci import ANNOTATION_PUBLISHED_BY, FLUX_CONTENT_MEDIA_TYPE
from ferry.promotion import EnvironmentStatusInput
from ferry.reconcile import (
    ChangeSet,
    CheckInput,
    CheckResult,
    HealthInput,
    HealthResult,
    HealthState,
    ReconcileInput,
    ReconcileResult,
    ResolveInput,
    ResolveResult,
    VersionRef,
)
from ferry.release import PackageBundleInput, PackageBundleResult
from ferry.versions import SemverRange, select
from workflows import activity_stubs


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def stand_in(stub: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a stand-in under a stub's activity name (the name in history), checked to exist."""
    definition = activity._Definition.must_from_callable(stub)
    return activity.defn(name=definition.name)


@dataclass
class World:
    """A registry of released tags (one publisher) and a cluster whose namespaces each run at most one digest, with
    digests that fail health."""

    tags: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    running: dict[str, str] = field(default_factory=dict)  # namespace -> digest applied there
    calls: list[str] = field(default_factory=list)
    workload: bool = True  # the bundle has a Deployment (a write rolls out); else only configuration
    publisher: str = "ci-main"  # the manifests' published-by annotation

    def release(self, version: str, *, healthy: bool = True) -> str:
        self.tags[version] = digest_of(version)
        if not healthy:
            self.failing.add(self.tags[version])
        return self.tags[version]

    def resolve(self, input: ResolveInput) -> ResolveResult:
        """As the registry adapter: a pinned version, or the highest tag in the range that is not held."""
        if input.version is not None:
            if input.version not in self.tags:
                raise ApplicationError(f"{input.version} is not released", type="NotFound", non_retryable=True)
            return ResolveResult(ref=VersionRef(version=input.version, digest=self.tags[input.version]), candidates=1)
        best = select(list(self.tags), SemverRange(input.semver or ""), input.prereleases, frozenset(input.held))
        if best is None:
            return ResolveResult()
        return ResolveResult(ref=VersionRef(version=best, digest=self.tags[best]), candidates=len(self.tags))

    def reconcile(self, input: ReconcileInput) -> ReconcileResult:
        changed = self.running.get(input.namespace) != input.digest
        if changed and not (input.check_only or input.dry_run):
            self.running[input.namespace] = input.digest
        kind = "apps/v1/Deployment" if self.workload else "v1/ConfigMap"
        objects = [f"{kind}/{input.namespace}/app"]
        changes = ChangeSet(updated=objects, unchanged=1) if changed else ChangeSet(unchanged=2)
        if input.check_only:
            return ReconcileResult(changes=ChangeSet(), health=HealthState(), pending=1 if changed else 0)
        # as the adapter: a written workload has a rollout to wait for; written configuration does not
        health = (
            HealthState(status="Progressing", reason="updated", digest=input.digest)
            if changed and self.workload
            else self.health(input.digest)
        )
        return ReconcileResult(changes=changes, health=health, revision=input.digest[-12:])

    def health(self, digest: str) -> HealthState:
        if digest in self.failing:
            return HealthState(status="Failed", reason="Deployment/app: CrashLoopBackOff", digest=digest)
        return HealthState(status="Healthy", reason="1 of 1 ready", digest=digest)

    def activities(self, client: Client) -> list[Callable[..., Any]]:
        """The stand-ins for the registry and the cluster, and the real Temporal-only activities (on the
        time-skipping server, which has no Visibility, last_record finds no earlier run)."""

        @stand_in(activity_stubs.resolve_desired)
        async def resolve_desired(input: ResolveInput) -> ResolveResult:
            self.calls.append("resolve_desired")
            return self.resolve(input)

        @stand_in(activity_stubs.reconcile_environment)
        async def reconcile_environment(input: ReconcileInput) -> ReconcileResult:
            self.calls.append(f"reconcile_environment {input.version}")
            return self.reconcile(input)

        @stand_in(activity_stubs.wait_healthy)
        async def wait_healthy(input: HealthInput) -> HealthResult:
            self.calls.append("wait_healthy")
            return HealthResult(health=self.health(input.digest))

        @stand_in(activity_stubs.check_environment)
        async def check_environment(input: CheckInput) -> CheckResult:
            self.calls.append("check_environment")
            found = self.resolve(input.resolve) if input.resolve is not None else None
            if found is not None and found.ref is not None and found.ref.digest != input.reconcile.digest:
                return CheckResult(found=found)
            check = input.reconcile.model_copy(update={"check_only": True, "dry_run": False})
            return CheckResult(found=found, result=self.reconcile(check))

        temporal = EnvironmentActivities(client)

        @stand_in(activity_stubs.environment_status)
        async def environment_status(input: EnvironmentStatusInput) -> EnvironmentStatus:
            self.calls.append("environment_status")
            return await temporal.environment_status(input)

        @stand_in(activity_stubs.resolve_tag)
        async def resolve_tag(input: ResolveTagInput) -> ResolveTagResult:
            self.calls.append(f"resolve_tag {input.tag}")
            if input.tag not in self.tags:
                raise ApplicationError(f"{input.tag} is not released", type="NotFound", non_retryable=True)
            return ResolveTagResult(digest=self.tags[input.tag])

        @stand_in(activity_stubs.fetch_manifest)
        async def fetch_manifest(input: FetchManifestInput) -> Manifest:
            self.calls.append("fetch_manifest")
            return Manifest(
                digest=input.reference,
                media_type="application/vnd.oci.image.manifest.v1+json",
                config_media_type="application/vnd.cncf.flux.config.v1+json",
                config_digest=digest_of("{}"),
                layers=[],
                annotations={ANNOTATION_PUBLISHED_BY: self.publisher},
            )

        return [
            resolve_desired,
            reconcile_environment,
            wait_healthy,
            check_environment,
            environment_status,
            resolve_tag,
            fetch_manifest,
            temporal.confirm_pin,
            temporal.last_record,
        ]


@dataclass
class CiHost:
    """The `ferry release` process's activities over an in-memory registry."""

    tags: dict[str, str] = field(default_factory=dict)
    layers: dict[str, str] = field(default_factory=dict)  # manifest digest -> layer digest
    pushed: list[PushArtifactInput] = field(default_factory=list)
    content: str = "manifests v1"

    def activities(self) -> list[Callable[..., Any]]:
        @stand_in(activity_stubs.package_bundle)
        async def package_bundle(input: PackageBundleInput) -> PackageBundleResult:
            return PackageBundleResult(
                path=f"/tmp/{uuid.uuid4()}.tar.gz",
                layer_digest=digest_of(self.content),
                size=len(self.content),
                files=1,
            )

        @stand_in(activity_stubs.resolve_tag)
        async def resolve_tag(input: ResolveTagInput) -> ResolveTagResult:
            digest = self.tags.get(input.tag)
            if digest is None and not input.missing_ok:
                raise ApplicationError(f"{input.tag} not found", type="NotFound", non_retryable=True)
            return ResolveTagResult(digest=digest)

        @stand_in(activity_stubs.push_artifact)
        async def push_artifact(input: PushArtifactInput) -> PushArtifactResult:
            self.pushed.append(input)
            layer = digest_of(self.content)
            digest = digest_of(f"manifest of {layer} {sorted(input.annotations.items())}")
            self.tags[input.tag], self.layers[digest] = digest, layer
            return PushArtifactResult(digest=digest, layer_digest=layer, size=len(self.content))

        @stand_in(activity_stubs.fetch_manifest)
        async def fetch_manifest(input: FetchManifestInput) -> Manifest:
            digest = self.tags.get(input.reference, input.reference)
            return Manifest(
                digest=digest,
                media_type="application/vnd.oci.image.manifest.v1+json",
                config_media_type="application/vnd.cncf.flux.config.v1+json",
                config_digest=digest_of("{}"),
                layers=[Layer(media_type=FLUX_CONTENT_MEDIA_TYPE, digest=self.layers[digest], size=1)],
                annotations={ANNOTATION_PUBLISHED_BY: "ci-first"},
            )

        return [package_bundle, resolve_tag, push_artifact, fetch_manifest]
