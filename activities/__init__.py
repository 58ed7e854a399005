"""Side effects as thin adapters. Only registry.py imports oras; only cluster.py imports kubernetes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ferry.settings import Settings

if TYPE_CHECKING:
    from activities.registry import RegistryActivities


def cluster_activities(settings: Settings, registry: RegistryActivities) -> list[Callable[..., Any]]:
    """The cluster's activities (reconcile, health, and the iteration check that composes the registry's resolve
    with the cluster's read-only reconcile), over a bundle cache that pulls through `registry`."""
    from activities.analysis.activity import AnalysisActivities
    from activities.bundle import BundleCache
    from activities.check import EnvironmentCheck
    from activities.cluster import ClusterActivities, load_clusters

    cache = BundleCache(settings.worker.cache_dir, registry.pull_artifact)
    kubeconfig = str(settings.kubeconfig) if settings.kubeconfig else None
    clusters = load_clusters(settings.clusters, kubeconfig)  # read once: the cluster and analysis activities share it
    cluster = ClusterActivities(
        cache,
        kubeconfig,
        clusters,
        connections=settings.worker.max_concurrent_activities + settings.worker.max_concurrent_local_activities,
        sops_age_keys=settings.worker.sops_age_keys,
    )
    check = EnvironmentCheck(registry.resolve_desired, cluster.reconcile_environment)
    analysis = AnalysisActivities(clusters, settings.worker.prometheus_url)
    return [
        cluster.reconcile_environment,
        cluster.wait_healthy,
        check.check_environment,
        cluster.rollout_initialize,
        cluster.rollout_set_weight,
        cluster.rollout_preview,
        cluster.rollout_promote,
        cluster.rollout_finish,
        cluster.rollout_status,
        analysis.query_analysis,
    ]
