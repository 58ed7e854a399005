"""Which activities each Ferry process serves, built from its settings: the worker (every workflow's activities on
task queue ``ferry``), `ferry release`'s CI worker (package, resolve, push, sign) and `ferry verify` (a release's
signature, checked the way environments check it).

The CLI reaches activities/ only through this module (docs/architecture.md, the ``cli-through-workers``
contract): what it needs from them (the bundle packaged before a release starts, the error types it reports in one
line, the binaries the wheels install) is named here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activities import cluster_activities
from activities.bundle import (
    BundleActivities,
    BundleError,
    ChartActivities,
    default_work_dir,
    package,
    packaged_chart,
    scan,
    validate,
    write_tarball,
)
from activities.helm.charts import check_chart
from activities.registry import ChartRegistry, Registries, RegistryActivities, SignatureActivities
from activities.tools import script_path
from activities.validate import check_plain_secrets
from ferry.cosign import ReleaseSigner
from ferry.release import PackageBundleResult, PackageChartResult
from ferry.settings import Settings
from workers.settings import SettingsInvalid

if TYPE_CHECKING:
    from temporalio.client import Client

    from activities.cluster.helm_storage import HelmStorage

__all__ = [
    "BundleError",
    "RegistryActivities",
    "SignatureActivities",
    "all_activities",
    "chart_release_activities",
    "check_clusters",
    "helm_storage",
    "helm_storage_error",
    "layer_digest",
    "package_chart_release",
    "package_release",
    "release_activities",
    "script_path",
    "verify_activities",
]


def all_activities(settings: Settings, client: Client) -> list[Callable[..., Any]]:
    """Activity classes hold their clients; their bound methods are registered."""
    from activities.environments import EnvironmentActivities
    from activities.notify import NotifyActivities
    from activities.senders import SenderActivities
    from ferry.alert_render import Links

    registries = Registries(
        settings.registry,
        connections=settings.worker.max_concurrent_activities + settings.worker.max_concurrent_local_activities,
    )
    registry = RegistryActivities(registries)
    # NB: no package_bundle/push_artifact/sign_artifact here: only the `ferry release` process serves them, on
    # its own CI queue, so no workflow can make this worker package its host's files or push them anywhere.
    return [
        registry.list_tags,
        registry.resolve_tag,
        registry.fetch_manifest,
        registry.pull_artifact,
        registry.resolve_desired,
        # NB: verification only; sign_artifact is registered by `ferry release --sign-key` alone, on its CI queue.
        SignatureActivities(registries).verify_artifact,
        *cluster_activities(settings, registry),
        EnvironmentActivities(client).environment_status,
        EnvironmentActivities(client).confirm_pin,
        EnvironmentActivities(client).last_record,
        SenderActivities(client).check_sender,
        NotifyActivities(
            settings.worker.alert_providers,
            Links(
                ui_url=settings.temporal.ui_url,
                address=settings.temporal.address,
                namespace=settings.temporal.namespace,
            ),
        ).deliver_notification,
    ]


def check_clusters(settings: Settings) -> None:
    """The worker's clusters file (or its one kubeconfig) read as the worker will; SettingsInvalid names the
    problem. Run at start, so a bad file stops the worker in one line, not at its first reconcile."""
    from activities.cluster import ClustersFileError, load_clusters

    try:
        load_clusters(settings.clusters, str(settings.kubeconfig) if settings.kubeconfig else None)
    except ClustersFileError as err:
        raise SettingsInvalid(str(err)) from err


def package_release(directory: Path, *, allow_plain_secrets: bool = False) -> tuple[int, PackageBundleResult]:
    """What `ferry release` checks and packages before it starts anything: (objects the bundle renders, the
    packaged bundle in the CI host's work directory). BundleError names the first problem, and a Secret (or a
    secretGenerator) in the clear unless ``allow_plain_secrets``."""
    objects = validate(directory, allow_plain_secrets=allow_plain_secrets)
    return objects, package(directory, default_work_dir(), scan(directory))


def layer_digest(directory: Path, scratch: Path) -> str:
    """The digest the bundle in ``directory`` packages to (its tar.gz is written under ``scratch``)."""
    return write_tarball(directory, scan(directory), scratch / "bundle.tar.gz")


def release_activities(
    settings: Settings, bundle_dir: str, packaged: PackageBundleResult | None, signer: ReleaseSigner | None = None
) -> list[Callable[..., Any]]:
    """What `ferry release`'s own CI worker serves: the bundle this process already packaged (parsed and tarred
    once per release, owned by this list's BundleActivities, not a global) and the push; sign_artifact with a
    signer only."""
    registries = Registries(settings.registry)
    registry = RegistryActivities(registries)
    bundles = BundleActivities(prepared={bundle_dir: packaged} if packaged is not None else None)
    activities: list[Callable[..., Any]] = [
        bundles.package_bundle,
        registry.resolve_tag,
        registry.fetch_manifest,
        registry.push_artifact,
    ]
    if signer is not None:
        activities.append(SignatureActivities(registries, signer).sign_artifact)
    return activities


def verify_activities(settings: Settings) -> tuple[SignatureActivities, RegistryActivities]:
    """What `ferry verify` calls in its own process: the signature check and the tag resolution."""
    registries = Registries(settings.registry)
    return SignatureActivities(registries), RegistryActivities(registries)


def helm_storage(settings: Settings, cluster: str | None, kubeconfig: str | None) -> HelmStorage:
    """What `ferry env import-helm` reads and cleans: the Helm release storage of ``kubeconfig`` when given, else
    of the clusters file's entry ``cluster`` (the worker's own gate). Its calls raise helm_storage_error()."""
    from activities.cluster.helm_storage import open_storage

    return open_storage(
        str(settings.clusters) if settings.clusters else None,
        str(settings.kubeconfig) if settings.kubeconfig else None,
        cluster,
        kubeconfig,
    )


def helm_storage_error() -> type[Exception]:
    """The error type of helm_storage's calls, for the CLI to report in one line."""
    from activities.cluster.helm_storage import HelmStorageError

    return HelmStorageError


def package_chart_release(chart_dir: Path, *, allow_plain_secrets: bool = False) -> PackageChartResult:
    """What `ferry release --chart DIR` checks and packages before it starts anything: the chart's deterministic
    archive in the CI host's work directory. BundleError (or an UnsafeArchive ApplicationError) names the problem,
    and a Secret in the clear outside the chart's templates/ unless ``allow_plain_secrets``."""
    if not allow_plain_secrets:
        check_plain_secrets(chart_dir)
    return packaged_chart(chart_dir, default_work_dir())


def chart_release_activities(
    settings: Settings, chart_dir: str, packaged: PackageChartResult, signer: ReleaseSigner | None = None
) -> list[Callable[..., Any]]:
    """What `ferry release --chart`'s CI worker serves: the chart this process packaged, the resolve/fetch the
    workflow asks, the push in Helm's layout; sign_artifact with a signer only. NB: no package_bundle or
    push_artifact, so an older ReleaseWorkflow that ignores `chart` cannot push the chart as a Flux bundle."""
    registries = Registries(settings.registry)
    registry = RegistryActivities(registries)
    charts = ChartActivities(prepared={chart_dir: packaged})
    activities: list[Callable[..., Any]] = [
        charts.package_chart,
        registry.resolve_tag,
        registry.fetch_manifest,
        ChartRegistry(registries, check_chart).push_chart,
    ]
    if signer is not None:
        activities.append(SignatureActivities(registries, signer).sign_artifact)
    return activities
