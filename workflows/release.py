"""ReleaseWorkflow: package on the CI host, refuse to change a released version, push, verify."""

from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn, TypeVar

from temporalio import activity, workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from ferry.artifacts import FetchManifestInput, PushArtifactInput, ResolveTagInput
    from ferry.cosign import SignArtifactInput
    from ferry.errors import ErrorType
    from ferry.helm_oci import HELM_CHART_MEDIA_TYPE, PushChartInput, PushChartResult
    from ferry.oci import (
        ANNOTATION_CREATED,
        ANNOTATION_PUBLISHED_BY,
        ANNOTATION_RELEASE_WORKFLOW,
        ANNOTATION_REVISION,
        ANNOTATION_SOURCE,
        ANNOTATION_VERSION,
        FLUX_CONFIG_MEDIA_TYPE,
        FLUX_CONTENT_MEDIA_TYPE,
    )
    from ferry.release import (
        PackageBundleInput,
        PackageBundleResult,
        PackageChartInput,
        PackageChartResult,
        ReleaseInput,
        ReleaseResult,
        ci_task_queue_problem,
    )
    from ferry.times import timestamp
    from workflows import activity_stubs as stubs
    from workflows import outbox as alerting
    from workflows import policies
    from workflows.patches import ALERTS, CHART_RELEASE
    from workflows.search_attributes import FERRY_PUBLISHER, FERRY_REPOSITORY, FERRY_VERSION

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


# ----------------------------------------------- `ferry release --chart`'s CI activities (typed references, as in
# workflows/activity_stubs.py; registered by cli/release.py's CI worker through workers.wiring.chart_release_activities)
@activity.defn(name="package_chart")  # activities/bundle.py ChartActivities
def package_chart(input: PackageChartInput) -> PackageChartResult:
    _not_here("package_chart")


@activity.defn(name="push_chart")  # activities/registry/charts.py ChartRegistry
def push_chart(input: PushChartInput) -> PushChartResult:
    _not_here("push_chart")


def _not_here(name: str) -> NoReturn:
    raise RuntimeError(f"{name} is a typed reference: the `ferry release --chart` process serves it on its CI queue")


def release_search_attributes(input: ReleaseInput) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(FERRY_REPOSITORY, input.repository),
            SearchAttributePair(FERRY_VERSION, input.version),
            SearchAttributePair(FERRY_PUBLISHER, input.publisher),
        ]
    )


def _refuse_foreign_queue(input: ReleaseInput) -> None:
    """The model refuses such a queue when decoding; this also refuses the worker's own queue whatever it is
    named. A refusal issues no command first, so valid releases keep their command sequence."""
    problem = ci_task_queue_problem(input.ci_task_queue)
    if problem is None and input.ci_task_queue == workflow.info().task_queue:
        problem = f"ci_task_queue {input.ci_task_queue!r} is this worker's own queue"
    if problem is not None:
        raise ApplicationError(problem, type=str(ErrorType.BAD_INPUT), non_retryable=True)


def _annotations(input: ReleaseInput) -> dict[str, str]:
    """The release's OCI manifest annotations: when, which version, who published it, from which workflow/source."""
    annotations = {
        ANNOTATION_CREATED: input.created or timestamp(workflow.now()),
        ANNOTATION_VERSION: input.version,
        ANNOTATION_PUBLISHED_BY: input.publisher,
        ANNOTATION_RELEASE_WORKFLOW: workflow.info().workflow_id,
    }
    if input.source:
        annotations[ANNOTATION_SOURCE] = input.source
    if input.revision:
        annotations[ANNOTATION_REVISION] = input.revision
    return annotations


# An input the model refuses (a crafted ci_task_queue) fails the workflow on the record instead of failing
# its first workflow task forever.
@workflow.defn(name="ReleaseWorkflow", failure_exception_types=[ValidationError])
class ReleaseWorkflow(alerting.Notifies):
    """Idempotent per (repository, version): identical content is an "already released" success,
    different content is VersionAlreadyReleased (non-retryable). Bundle bytes stay on the CI host. A signed
    release (``sign_key_fingerprint``) also signs the verified digest in cosign's format, on the CI host."""

    @workflow.run
    async def run(self, input: ReleaseInput) -> ReleaseResult:
        """package → already released? → push → verify the tag → sign → announce."""
        _refuse_foreign_queue(input)
        workflow.upsert_search_attributes(
            [
                FERRY_REPOSITORY.value_set(input.repository),
                FERRY_VERSION.value_set(input.version),
                FERRY_PUBLISHER.value_set(input.publisher),
            ]
        )
        self._input = input
        if input.chart and workflow.patched(CHART_RELEASE):
            result = await self._chart_release(input)
            if result.already_released:
                return result
        else:
            packaged = await self._on_ci(
                stubs.package_bundle, PackageBundleInput(bundle_dir=input.bundle_dir), policies.PACKAGE_TIMEOUT
            )
            existing = await self._on_ci(
                stubs.resolve_tag, ResolveTagInput(repository=input.repository, tag=input.version, missing_ok=True)
            )
            if existing.digest is not None:
                return await self._already_released(input, packaged.layer_digest, packaged.size, existing.digest)
            result = await self._signed(input, await self._pushed(input, packaged))
        if workflow.patched(ALERTS):
            await alerting.send(
                alerting.notification(
                    "ReleasePublished",
                    "",
                    f"{input.repository}:{input.version} released by {input.publisher} as {result.digest}",
                    version=input.version,
                    digest=result.digest,
                    by=input.publisher,
                    details={"repository": input.repository, "revision": input.revision, "source": input.source},
                )
            )
        return result

    async def _pushed(self, input: ReleaseInput, packaged: PackageBundleResult) -> ReleaseResult:
        """Push the packaged layer with Flux's media types, then check the tag resolves to what was pushed."""
        pushed = await self._on_ci(
            stubs.push_artifact,
            PushArtifactInput(
                repository=input.repository,
                tag=input.version,
                file_path=packaged.path,
                layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
                config_media_type=FLUX_CONFIG_MEDIA_TYPE,
                annotations=_annotations(input),
            ),
        )
        return await self._verified(input, pushed.digest, pushed.layer_digest, packaged.layer_digest, pushed.size)

    async def _chart_release(self, input: ReleaseInput) -> ReleaseResult:
        """package_chart → already released? → push_chart (Helm's layout, tag_for(version)) → verify → sign."""
        packaged = await self._on_ci(
            package_chart,
            PackageChartInput(chart_dir=input.bundle_dir, version=input.version),
            policies.PACKAGE_TIMEOUT,
        )
        existing = await self._on_ci(
            stubs.resolve_tag, ResolveTagInput(repository=input.repository, tag=input.tag, missing_ok=True)
        )
        if existing.digest is not None:
            return await self._already_released(
                input, packaged.layer_digest, packaged.size, existing.digest, HELM_CHART_MEDIA_TYPE
            )
        annotations = {k: v for k, v in _annotations(input).items() if k not in (ANNOTATION_CREATED, ANNOTATION_SOURCE)}
        pushed = await self._on_ci(
            push_chart,
            PushChartInput(
                repository=input.repository,
                archive_path=packaged.path,
                version=input.version,
                created=input.created or timestamp(workflow.now()),
                annotations=annotations,
            ),
        )
        result = await self._verified(input, pushed.digest, pushed.layer_digest, packaged.layer_digest, pushed.size)
        return await self._signed(input, result)

    async def _verified(
        self, input: ReleaseInput, digest: str, layer_digest: str, packaged_layer: str, size: int
    ) -> ReleaseResult:
        """The pushed layer is the packaged one and the tag resolves to the pushed manifest."""
        if layer_digest != packaged_layer:
            raise ApplicationError(
                f"pushed layer {layer_digest} is not the packaged {packaged_layer}",
                type=str(ErrorType.DIGEST_MISMATCH),
                non_retryable=True,
            )
        verified = await self._on_ci(stubs.resolve_tag, ResolveTagInput(repository=input.repository, tag=input.tag))
        if verified.digest != digest:
            raise ApplicationError(
                f"{input.repository}:{input.tag} resolves to {verified.digest}, not the pushed {digest}: "
                "someone else pushed this tag concurrently",
                type=str(ErrorType.DIGEST_MISMATCH),
                non_retryable=True,
            )
        workflow.logger.info("released %s:%s as %s", input.repository, input.version, digest)
        return ReleaseResult(
            repository=input.repository,
            version=input.version,
            digest=digest,
            layer_digest=layer_digest,
            size=size,
            publisher=input.publisher,
        )

    async def _signed(self, input: ReleaseInput, result: ReleaseResult) -> ReleaseResult:
        """Sign the verified digest on the CI host, which alone holds the key. NB: an unsigned release issues
        no command here, and histories recorded before signing have no sign_key_fingerprint: hence no patch gate."""
        if input.sign_key_fingerprint is None:
            return result
        signed = await self._on_ci(
            stubs.sign_artifact,
            SignArtifactInput(
                repository=input.repository,
                digest=result.digest,
                publisher=input.publisher,
                key_fingerprint=input.sign_key_fingerprint,
            ),
        )
        workflow.logger.info(
            "signed %s@%s with %s as %s", input.repository, result.digest, signed.key_fingerprint, signed.signature_tag
        )
        return result.model_copy(
            update={"signature_tag": signed.signature_tag, "signature_key_fingerprint": signed.key_fingerprint}
        )

    async def _on_ci(
        self, activity: Callable[[A], R], arg: A, start_to_close: timedelta = policies.REGISTRY_CALL_TIMEOUT
    ) -> R:
        """An activity on the CI host's task queue: retried through outages until the release deadline;
        failed within CI_SCHEDULE_TO_START if the `ferry release` process is gone."""
        return await workflow.execute_activity(
            activity,
            arg,
            task_queue=self._input.ci_task_queue,
            schedule_to_start_timeout=policies.CI_SCHEDULE_TO_START,
            start_to_close_timeout=start_to_close,
            schedule_to_close_timeout=timedelta(seconds=self._input.timeout_seconds),
            heartbeat_timeout=policies.REGISTRY_HEARTBEAT if activity in (stubs.push_artifact, push_chart) else None,
            retry_policy=policies.OUTAGE_RETRY,
        )

    async def _already_released(
        self,
        input: ReleaseInput,
        packaged_layer: str,
        packaged_size: int,
        digest: str,
        media_type: str = FLUX_CONTENT_MEDIA_TYPE,
    ) -> ReleaseResult:
        manifest = await self._on_ci(
            stubs.fetch_manifest, FetchManifestInput(repository=input.repository, reference=digest)
        )
        layer = manifest.layer(media_type)
        existing_layer = layer.digest if layer else f"(no {'chart' if input.chart else 'Flux content'} layer)"
        if existing_layer != packaged_layer:
            raise ApplicationError(
                f"{input.repository}:{input.tag} is already released with different content "
                f"(released layer {existing_layer}, this content {packaged_layer}); "
                "released versions are immutable: release a new version",
                type=str(ErrorType.VERSION_ALREADY_RELEASED),
                non_retryable=True,
            )
        result = ReleaseResult(
            repository=input.repository,
            version=input.version,
            digest=digest,
            layer_digest=packaged_layer,
            size=layer.size if layer else packaged_size,
            already_released=True,
            publisher=manifest.annotations.get(ANNOTATION_PUBLISHED_BY, input.publisher),
        )
        # A CI re-run of a release whose signing never happened (or with another key) signs it now.
        return await self._signed(input, result)
