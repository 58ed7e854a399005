"""The Kubernetes adapter, over the official client. The only package that imports kubernetes.

Contract of the activities here:
- ``reconcile``: fetch the artifact by digest (worker cache), render, plan against the live cluster with one
  LIST per kind, validate every write with a server-side dry run first (so a bad object aborts before
  anything changes), apply changed objects with server-side apply (manager ``ferry``, force) in dependency
  order, prune what the previous inventory had and this one lacks, write the inventory. Idempotent: a second
  call with the same digest writes nothing. Heartbeats on every API request (cancellable between requests).
  The decisions are pure (``ferry.plan.plan`` -> ``Plan``: changes, stale set, apply stages); this adapter only
  reads, dry-runs, applies, prunes and writes the inventory.
- ``wait_healthy``: polls workload status (one LIST per workload kind) until healthy, failed or timed out.
  Heartbeats every poll.
Errors: API unreachable/timeouts/429/5xx -> ClusterUnavailable (retryable); 401/403 Unauthorized, 404,
422 Invalid -> BadInput, 'field is immutable' -> ImmutableField, render problems -> RenderFailed
(non-retryable). urllib3's own retries are off: Temporal owns retries.
"""

from activities.cluster.client import HEALTH_POLL_SECONDS, INVENTORY_NAMESPACE, REQUEST_TIMEOUT, Cluster
from activities.cluster.clusters import ClustersFileError, load_clusters
from activities.cluster.health import Health
from activities.cluster.lease import LEASE_RENEW_AFTER, LEASE_SECONDS
from activities.cluster.reconcile import Reconcile
from activities.cluster.rollout import RolloutActivities


class ClusterActivities(Reconcile, Health, RolloutActivities):
    """Cluster activities, registered as bound methods; holds one client per cluster of the worker's clusters
    file (FERRY_CLUSTERS; without one, `default` is the worker's kubeconfig)."""


__all__ = [
    "HEALTH_POLL_SECONDS",
    "INVENTORY_NAMESPACE",
    "LEASE_RENEW_AFTER",
    "LEASE_SECONDS",
    "REQUEST_TIMEOUT",
    "Cluster",
    "ClusterActivities",
    "ClustersFileError",
    "load_clusters",
]
