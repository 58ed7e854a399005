"""The worker's clusters file and one client per cluster it lists, inside the operator's bounds."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pydantic
import yaml

from activities.bundle import BundleCache
from activities.cluster.client import Cluster
from activities.cluster.lease import held
from activities.errors import classified
from ferry.clusters import ClusterEntry, ClustersFile, auth_plugin
from ferry.errors import ErrorType
from ferry.reconcile import ReconcileInput
from ferry.spec import DEFAULT_CLUSTER


class ClustersFileError(ValueError):
    """The worker's clusters file cannot be read or is invalid: the worker does not start."""


def load_clusters(path: str | Path | None, default_kubeconfig: str | None) -> ClustersFile:
    """The worker's clusters file (YAML or JSON), or without one the implicit `default` = FERRY_KUBECONFIG. A
    file lists every cluster, `default` included if wanted: nothing is added to it."""
    if path is None:
        return ClustersFile.implicit(default_kubeconfig)
    try:
        clusters = ClustersFile.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError, pydantic.ValidationError) as err:
        raise ClustersFileError(f"clusters file {path} (FERRY_CLUSTERS): {err}") from err
    # NB: a file is the whole list: no implicit `default` beside it (an unbounded `default` on the same kubeconfig
    # as a bounded entry would let any spec that names no cluster past the operator's bounds)
    return clusters


class Clients:
    """One client per cluster of the worker's clusters file (FERRY_CLUSTERS; without one, `default` is the
    worker's kubeconfig)."""

    def __init__(
        self,
        cache: BundleCache,
        default_kubeconfig: str | None = None,
        clusters: ClustersFile | None = None,
        connections: int = 32,
        sops_age_keys: Path | None = None,
    ) -> None:
        self._cache, self._connections, self._sops_age_keys = cache, connections, sops_age_keys
        self._known = clusters if clusters is not None else ClustersFile.implicit(default_kubeconfig)
        self._clusters: dict[str, Cluster] = {}
        self._lock = threading.Lock()

    def cluster(
        self,
        name: str,
        legacy_kubeconfig: str | None = None,
        legacy_context: str | None = None,
        input: ReconcileInput | None = None,
    ) -> Cluster:
        """The named cluster's client. Unknown names, plugins its entry does not allow, and (with `input`) an
        environment outside the entry's `environments` are refused (non-retryable) before the kubeconfig reaches
        the kubernetes client, which would run the plugin on load."""
        if not name:
            name = self._legacy_name(legacy_kubeconfig, legacy_context)
        entry = self._known.clusters.get(name)
        if entry is None:
            raise classified(
                ErrorType.UNKNOWN_CLUSTER,
                f"cluster {name!r} is not in the worker's clusters file "
                f"(FERRY_CLUSTERS lists: {', '.join(sorted(self._known.clusters)) or 'none'})",
            )
        if input is not None and entry.environments is not None:
            self._operator_bounds(name, entry.environments, input)
        with self._lock:
            if name not in self._clusters:
                self._clusters[name] = self._connect(name, entry)
            return self._clusters[name]

    def _legacy_name(self, legacy_kubeconfig: str | None, legacy_context: str | None) -> str:
        """A workflow from before clusters by name: its path is only a key into this worker's own file."""
        name = (
            self._known.by_kubeconfig(legacy_kubeconfig, legacy_context) if legacy_kubeconfig else DEFAULT_CLUSTER
        ) or ""
        if not name:
            raise classified(
                ErrorType.UNKNOWN_CLUSTER,
                f"the environment names kubeconfig {legacy_kubeconfig} "
                "(from before clusters by name) and no entry of the worker's clusters file has that "
                "path: re-apply its spec with `cluster: NAME`",
            )
        return name

    def _connect(self, name: str, entry: ClusterEntry) -> Cluster:
        """A client on the entry's kubeconfig, once its auth plugin (if any) is one the entry allows."""
        kubeconfig = entry.kubeconfig or os.path.expanduser(
            (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)[0]
        )
        try:
            plugin = auth_plugin(yaml.safe_load(Path(kubeconfig).read_text()) or {}, entry.context)
            if plugin is not None and plugin[0] not in entry.allow_auth:
                raise classified(
                    ErrorType.AUTH_PLUGIN_REFUSED,
                    f"cluster {name!r}: its kubeconfig "
                    f"authenticates with the {plugin[0]} plugin {plugin[1]!r}, which the worker "
                    f"does not run unless the clusters file allows it (allow-auth: [{plugin[0]}])",
                )
            return Cluster(kubeconfig, entry.context, self._connections)
        except (
            kubernetes.config.ConfigException,
            OSError,
            yaml.YAMLError,
            AttributeError,
            KeyError,
            ValueError,
            TypeError,
        ) as err:
            # a configuration problem on the worker; retrying will not fix it.
            raise classified(
                ErrorType.BAD_INPUT,
                f"cluster {name!r}: kubeconfig {kubeconfig}"
                f"{f' context {entry.context}' if entry.context else ''}: {err}",
            ) from err

    @staticmethod
    def _operator_bounds(name: str, environments: dict[str, Any], input: ReconcileInput) -> None:
        """The clusters file's word over the spec's: when an entry lists `environments`, only they may use the
        cluster, and only inside the namespaces and cluster-kinds listed for them there."""
        bounds = environments.get(input.environment)
        if bounds is None:
            raise classified(
                ErrorType.OUT_OF_BOUNDS,
                f"environment {input.environment} may not use cluster {name!r}: "
                "its entry in the worker's clusters file does not list it; nothing was applied",
            )
        if bounds.service_account and input.service_account != bounds.service_account:
            raise classified(
                ErrorType.OUT_OF_BOUNDS,
                f"environment {input.environment} must apply as service "
                f"account {bounds.service_account} on cluster {name!r} (the worker's clusters file says "
                f"so); its spec says {input.service_account or 'none'}; nothing was applied",
            )
        wider = sorted({input.namespace, *(input.namespaces or [])} - set(bounds.namespaces)) + sorted(
            f"cluster-kind {k}" for k in set(input.cluster_kinds) - set(bounds.cluster_kinds)
        )
        if wider:
            raise classified(
                ErrorType.OUT_OF_BOUNDS,
                f"environment {input.environment}'s spec reaches beyond what "
                f"cluster {name!r}'s entry in the worker's clusters file allows it: {', '.join(wider)}; "
                "nothing was applied",
            )

    def age_keys_for(self, input: ReconcileInput) -> Path | None:
        """Where this environment's age identities are: its entry's in the cluster's `environments`, else the
        cluster's `sops-age-keys`, else the worker's FERRY_SOPS_AGE_KEYS (None: none configured)."""
        entry = self._known.clusters.get(input.cluster or DEFAULT_CLUSTER)
        bounds = (entry.environments or {}).get(input.environment) if entry is not None else None
        configured = (bounds.sops_age_keys if bounds else None) or (entry.sops_age_keys if entry else None)
        return Path(configured) if configured else self._sops_age_keys

    @contextlib.contextmanager
    def _lease(self, cluster: Cluster, input: ReconcileInput) -> Iterator[None]:
        """Held for the whole reconcile (plan, apply, prune, inventory); a dry run (ferry diff) and the
        iteration's check (check_only) write nothing and take none."""
        if input.dry_run or input.check_only:
            yield
            return
        with held(cluster, input.environment):
            yield
