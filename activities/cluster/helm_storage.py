"""A cluster's Helm release storage, for `ferry env import-helm` (the rules: ferry.helm_release).

Contract:
- ``read(name, namespace)``: the release's revisions are listed as metadata only (pages of LIST_PAGE, so 1,000
  revisions of 1 MiB each never reach memory), the newest deployed one is GET and decoded (bounded), and its
  manifest parsed with the bundles' bounds (activities.helm.render.parse_rendered); each object's scope comes from
  discovery. Read-only.
- ``finish(name, namespace, environment, forget)``: once the environment's first reconcile has applied every
  object of the release (each carries its label; otherwise nothing is written and the ones left are named), the
  ``helm`` field manager's managedFields entries are removed from each with a JSON patch (guarded by the
  resourceVersion, re-read and retried on a conflict), and with ``forget`` the release Secrets are deleted, so
  `helm ls` no longer lists it. Idempotent: a second call finds nothing to remove.
Errors: HelmStorageError naming what failed (the CLI prints it); a refused release is its ReleaseRefused reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes.client import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from temporalio.exceptions import ApplicationError

from activities.bundle import BundleCache
from activities.cluster.client import _UNAVAILABLE, REQUEST_TIMEOUT, Cluster, _decoded, _server_message
from activities.cluster.clusters import Clients, ClustersFileError, load_clusters
from activities.helm.render import parse_rendered
from activities.manifests import BundleError
from ferry.helm_release import (
    HELM_MANAGER,
    HelmRelease,
    ReleaseRefused,
    adopted,
    decode_secret,
    manifest_ids,
    newest_deployed,
    release_selector,
    remove_manager_patch,
    revisions,
)
from ferry.plan import ObjectId
from ferry.spec import DEFAULT_CLUSTER

LIST_PAGE = 100  # Secrets' metadata per LIST page
PATCH_TRIES = 3  # a reconcile writing between our GET and PATCH fails the resourceVersion test: read again
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_JSON_PATCH = "application/json-patch+json"


class HelmStorageError(RuntimeError):
    """The import cannot go on: the cluster's answer, a refused release, objects not adopted yet."""


@dataclass
class ReleaseRead:
    release: HelmRelease
    objects: list[tuple[ObjectId, bool]]  # (id with its namespace as applied, namespaced)
    notes: list[str] = field(default_factory=list)


@dataclass
class Finished:
    cleaned: list[str] = field(default_factory=list)  # objects whose helm entries were removed
    already: int = 0  # objects with none left
    missing: list[str] = field(default_factory=list)  # objects of the manifest no longer in the cluster
    forgotten: list[str] = field(default_factory=list)  # release Secrets deleted


class HelmStorage:
    """One cluster's Helm release Secrets and the objects of a release."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _secrets_metadata(self, name: str, namespace: str) -> list[dict[str, Any]]:
        path = self.cluster.resource("v1", "Secret").path(namespace=namespace)
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self.cluster.call(
                "get",
                path,
                label_selector=release_selector(name),
                limit=LIST_PAGE,
                _continue=token,
                header_params={"Accept": _METADATA_ONLY},
            )
            items += page.get("items") or []
            revisions(items, name)  # ReleaseRefused past MAX_REVISIONS, before the next page
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return items

    def read(self, name: str, namespace: str) -> ReleaseRead:
        with _errors(f"Helm release {namespace}/{name}"):
            chosen = newest_deployed(self._secrets_metadata(name, namespace), name)
            secret = self.cluster.get(self.cluster.resource("v1", "Secret"), chosen["metadata"]["name"], namespace)
            if secret is None:
                raise HelmStorageError(f"Secret {namespace}/{chosen['metadata']['name']} was deleted while read")
            release = decode_secret(secret, name)
            rendered = parse_rendered(release.manifest, f"release {name}'s manifest")
            read = ReleaseRead(release, [])
            for oid in manifest_ids(rendered):
                try:
                    namespaced = self.cluster.resource(oid.api_version, oid.kind).namespaced
                except ResourceNotFoundError:
                    read.notes.append(f"{oid}: {oid.api_version} {oid.kind} is not served by the cluster")
                    continue
                where = (oid.namespace or release.namespace) if namespaced else ""
                read.objects.append((oid.model_copy(update={"namespace": where}), namespaced))
            return read

    def finish(self, name: str, namespace: str, environment: str, forget: bool = False) -> Finished:
        read = self.read(name, namespace)
        done = Finished()
        with _errors(f"Helm release {namespace}/{name}"):
            live: list[tuple[Any, dict[str, Any]]] = []
            waiting: list[str] = []
            for oid, _ in read.objects:
                resource = self.cluster.resource(oid.api_version, oid.kind)
                obj = self.cluster.get(resource, oid.name, oid.namespace or None)
                if obj is None:
                    done.missing.append(str(oid))
                elif not adopted(obj, environment):
                    waiting.append(str(oid))
                else:
                    live.append((resource, obj))
            if waiting:
                raise HelmStorageError(
                    f"{len(waiting)} of {len(read.objects)} object(s) of release {name} are not applied by "
                    f"environment {environment} yet (`ferry env apply`, then wait for its first reconcile); "
                    f"nothing was changed: {', '.join(waiting[:5])}"
                )
            for resource, obj in live:
                if self._remove_helm_manager(resource, obj):
                    done.cleaned.append(str(ObjectId.of(obj)))
                else:
                    done.already += 1
            if forget:
                done.forgotten = self._forget(name, namespace)
        return done

    def _remove_helm_manager(self, resource: Any, obj: dict[str, Any]) -> bool:
        """Remove the helm manager's entries (ferry.helm_release.remove_manager_patch); False when none."""
        meta = obj["metadata"]
        for _ in range(PATCH_TRIES):
            patch = remove_manager_patch(obj, HELM_MANAGER)
            if patch is None:
                return False
            try:
                _decoded(
                    self.cluster.dyn.patch(
                        resource,
                        body=patch,
                        name=meta["name"],
                        namespace=meta.get("namespace") or None,
                        content_type=_JSON_PATCH,
                        _request_timeout=REQUEST_TIMEOUT,
                        serialize=False,
                    )
                )
                return True
            except ApiException as err:
                if err.status not in (409, 422):
                    raise
                again = self.cluster.get(resource, meta["name"], meta.get("namespace") or None)
                if again is None:
                    return False
                obj, meta = again, again["metadata"]
        raise HelmStorageError(f"{ObjectId.of(obj)}: changed on every one of {PATCH_TRIES} tries: run again")

    def _forget(self, name: str, namespace: str) -> list[str]:
        """Delete every revision's Secret (names and labels of Helm's own, checked one by one)."""
        resource = self.cluster.resource("v1", "Secret")
        deleted: list[str] = []
        for _, secret in revisions(self._secrets_metadata(name, namespace), name):
            self.cluster.delete(resource, secret["metadata"]["name"], namespace)
            deleted.append(secret["metadata"]["name"])
        return deleted


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """The cluster's and the rules' failures as HelmStorageError, naming what was being read."""
    try:
        yield
    except ApiException as err:
        raise HelmStorageError(f"{what}: the cluster answered: {_server_message(err)}") from None
    except (ReleaseRefused, BundleError) as err:
        raise HelmStorageError(f"{what}: {err}") from None
    except _UNAVAILABLE as err:
        raise HelmStorageError(f"{what}: cluster unreachable: {err}") from None


def open_storage(
    clusters_file: str | None, default_kubeconfig: str | None, cluster: str | None, kubeconfig: str | None
) -> HelmStorage:
    """The storage of ``kubeconfig`` when given, else of the clusters file's entry ``cluster`` (default
    ``default``), through the worker's own gate (an auth plugin the entry does not allow is refused before the
    kubeconfig is loaded). No bundle cache: this process never renders."""
    if kubeconfig:
        return HelmStorage(Cluster(kubeconfig, None))
    try:
        clients = Clients(cast(BundleCache, None), default_kubeconfig, load_clusters(clusters_file, default_kubeconfig))
        return HelmStorage(clients.cluster(cluster or DEFAULT_CLUSTER))
    except (ClustersFileError, ApplicationError) as err:  # the file, or the gate's refusal naming the entry
        raise HelmStorageError(str(err)) from None


__all__ = ["Finished", "HelmStorage", "HelmStorageError", "ReleaseRead", "open_storage"]
