"""The Kubernetes adapter, over the official client. The only module that imports kubernetes.

Contract of the activities here:
- ``reconcile``: fetch the artifact by digest (worker cache), render, plan against the live cluster with one
  LIST per kind, validate every write with a server-side dry run first (so a bad object aborts before
  anything changes), apply changed objects with server-side apply (manager ``ferry``, force) in dependency
  order, prune what the previous inventory had and this one lacks, write the inventory. Idempotent: a second
  call with the same digest writes nothing. Heartbeats on every API request (cancellable between requests).
- ``wait_healthy``: polls workload status (one LIST per workload kind) until healthy, failed or timed out.
  Heartbeats every poll.
Errors: API unreachable/timeouts/429/5xx -> ClusterUnavailable (retryable); 401/403 Unauthorized, 404,
422 Invalid -> BadInput, 'field is immutable' -> ImmutableField, render problems -> RenderFailed
(non-retryable). urllib3's own retries are off: Temporal owns retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pydantic
import urllib3
import yaml
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.bundle import BundleCache, BundleError, render
from activities.errors import classified
from ferry.clusters import ClustersFile, auth_plugin
from ferry.environment import (
    DEFAULT_CLUSTER,
    RESERVED_NAMESPACES,
    ChangeSet,
    HealthInput,
    HealthResult,
    HealthState,
    ReconcileInput,
    ReconcileResult,
)
from ferry.errors import ErrorType, classify_http_status
from ferry.health import WORKLOAD_KINDS, object_status
from ferry.plan import (
    ENVIRONMENT_LABEL,
    FIELD_MANAGER,
    ObjectId,
    apply_order,
    confirm_update,
    delete_order,
    outside,
    plan_object,
    prepare,
    prune_disabled,
    stale,
)

INVENTORY_NAMESPACE = "ferry-system"
REQUEST_TIMEOUT = 30.0
HEALTH_POLL_SECONDS = 1.0
# Applied (and, for CRDs and Namespaces, awaited) before anything else: what the rest may need to exist. NB: a
# RoleBinding is judged by RBAC against its Role, so a new Role must exist before its binding can be dry-run.
DEFINITION_KINDS = ("CustomResourceDefinition", "Namespace", "ClusterRole", "Role")
_TYPED_PATCH_ERROR = "failed to create typed patch object"
_UNAVAILABLE = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)
# One reconcile per environment at a time: a coordination.k8s.io/v1 Lease in INVENTORY_NAMESPACE. Another holder
# takes it over only LEASE_SECONDS after its last renewal (a crashed or stalled attempt); the holder renews it
# before any request once LEASE_RENEW_AFTER has passed, so it never writes on a lease that could have expired.
# NB: expiry compares the holder's renewTime with this worker's clock: workers' clocks must agree to well
# within LEASE_SECONDS - LEASE_RENEW_AFTER (NTP does).
LEASE_SECONDS = 30
LEASE_RENEW_AFTER = 10.0


class _Lease:
    def __init__(self, name: str, holder: str, environment: str) -> None:
        self.name, self.holder, self.environment = name, holder, environment
        self.resource_version = ""
        self.transitions = 0
        self.renewed = 0.0  # time.monotonic() of the last successful write of the lease


class _Counter(threading.local):
    requests = 0
    lease: _Lease | None = None  # the lease this thread's reconcile holds
    in_lease = False  # the lease's own requests do not renew it


class Cluster:
    """One cluster: an ApiClient (no urllib3 retries), discovery, and a per-thread request counter."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=config)
        config.retries = 0
        self.api = kubernetes.client.ApiClient(config)
        self.counter = _Counter()
        original = self.api.call_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counter.requests += 1
            if activity.in_activity() and not activity.info().is_local:
                # NB: one heartbeat per API request (the SDK throttles them): a crashed worker is noticed within
                # the heartbeat timeout, and a cancellation (a new pin, a cancelled workflow) stops the reconcile
                # between two requests instead of after the whole plan
                activity.heartbeat(self.counter.requests)
                if activity.is_cancelled():
                    raise CancelledError("reconcile cancelled")
            lease = self.counter.lease
            if lease is not None and not self.counter.in_lease and time.monotonic() - lease.renewed > LEASE_RENEW_AFTER:
                _renew(self, lease)
            return original(*args, **kwargs)

        self.api.call_api = counted  # type: ignore[method-assign]
        self._dyn: DynamicClient | None = None
        self._lock = threading.Lock()

    @property
    def dyn(self) -> DynamicClient:
        with self._lock:
            if self._dyn is None:
                self._dyn = DynamicClient(self.api)
            return self._dyn

    def resource(self, api_version: str, kind: str, wait: float = 0.0) -> Any:
        """The API resource serving `kind`; `wait` seconds for one a CRD established moments ago (the API
        server's discovery can lag behind the Established condition)."""
        deadline = time.monotonic() + wait
        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            while True:
                self.dyn.resources.invalidate_cache()
                try:
                    return self.dyn.resources.get(api_version=api_version, kind=kind)
                except ResourceNotFoundError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.2)

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.dyn.request(method, path, body=body, _request_timeout=REQUEST_TIMEOUT, serialize=False,
                                    **params)
        data = response.data if hasattr(response, "data") else response
        return json.loads(data) if data else {}

    def list(self, resource: Any, label_selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("get", resource.path(), label_selector=label_selector)["items"]
        for item in items:
            item.setdefault("apiVersion", resource.group_version)
            item.setdefault("kind", resource.kind)
        return items

    def apply(self, resource: Any, obj: dict[str, Any], dry_run: bool = False, as_user: str | None = None
              ) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource.path(name=meta["name"], namespace=meta.get("namespace") if resource.namespaced else None)
        params: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True,
                                  "content_type": "application/apply-patch+yaml"}
        if dry_run:
            params["dry_run"] = "All"
        if as_user:
            params["header_params"] = {"Impersonate-User": as_user}
        result: dict[str, Any] = self.call("patch", path, body=obj, **params)
        return result

    def get(self, resource: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.call("get", resource.path(name=name, namespace=namespace))
            return result
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete(self, resource: Any, name: str, namespace: str | None, as_user: str | None = None) -> None:
        try:
            self.call("delete", resource.path(name=name, namespace=namespace or None),
                      propagation_policy="Background",
                      **({"header_params": {"Impersonate-User": as_user}} if as_user else {}))
        except ApiException as err:
            if err.status != 404:
                raise


def _server_message(err: ApiException) -> str:
    body = ""
    with contextlib.suppress(Exception):
        body = json.loads(err.body or "{}").get("message", "")
    return str(body or f"HTTP {err.status}: {err.reason}")


def _rejects_object(err: ApiException) -> bool:
    """The server refuses this object itself: retrying cannot help. NB: a real API server answers a schema error
    in an apply (an unknown field, a string where a number belongs) with HTTP 500 "failed to create typed patch
    object", whatever fieldValidation says; that 500 is the manifest's fault, not an outage."""
    message = _server_message(err)
    if "immutable" in message:
        return False  # ImmutableField, its own non-retryable type
    return err.status in (400, 404, 409, 422) or (err.status == 500 and _TYPED_PATCH_ERROR in message)


@contextlib.contextmanager
def _classified(what: str) -> Iterator[None]:
    try:
        yield
    except ApiException as err:
        if not err.status:  # NB: the client turns a TLS failure (e.g. a cut connection) into status 0
            raise classified(ErrorType.CLUSTER_UNAVAILABLE, f"{what}: cluster unreachable: {err.reason}") from err
        body = ""
        with contextlib.suppress(Exception):
            body = json.loads(err.body or "{}").get("message", "")
        if err.status == 500 and _TYPED_PATCH_ERROR in body:
            raise classified(ErrorType.BAD_INPUT, f"{what}: {body}") from err
        if err.status == 422 and "immutable" in body:
            raise classified(ErrorType.IMMUTABLE_FIELD, f"{what}: {body}") from err
        if err.status == 403:
            # NB: the server names the identity it refused (the worker's, or the impersonated service account)
            raise classified(ErrorType.FORBIDDEN, f"{what}: forbidden by the cluster's RBAC: {body or err.reason}"
                             ) from err
        kind = classify_http_status(err.status or 0, unavailable=ErrorType.CLUSTER_UNAVAILABLE)
        raise classified(kind, f"{what}: HTTP {err.status}: {body or err.reason}") from err
    except BundleError as err:
        raise classified(ErrorType.RENDER_FAILED, f"{what}: {err}") from err
    except _UNAVAILABLE as err:
        raise classified(ErrorType.CLUSTER_UNAVAILABLE, f"{what}: cluster unreachable: {err}") from err


def _inventory_name(environment: str) -> str:
    return f"ferry-inventory-{environment}"


def _lease_name(environment: str) -> str:
    return f"ferry-reconcile-{environment}"


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # metav1.MicroTime


def _holder() -> str:
    """Who holds a lease: the activity (workflow, activity id, attempt), or this thread outside one."""
    if activity.in_activity():
        info = activity.info()
        return f"{info.workflow_id}/{info.activity_id}#{info.attempt}@{socket.gethostname()}"[:253]
    return f"{socket.gethostname()}/{os.getpid()}/{threading.get_ident()}"


def _lease_body(lease: _Lease, acquired: str, transitions: int) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease.name, "namespace": INVENTORY_NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "ferry"},
                         **({"resourceVersion": lease.resource_version} if lease.resource_version else {})},
            "spec": {"holderIdentity": lease.holder, "leaseDurationSeconds": LEASE_SECONDS, "acquireTime": acquired,
                     "renewTime": _micro(datetime.now(UTC)), "leaseTransitions": transitions}}


def _held(lease: _Lease, why: str) -> Exception:
    return classified(ErrorType.LEASE_HELD, f"reconcile of {lease.environment}: {why}; retried once it is released "
                      f"or {LEASE_SECONDS}s after its last renewal")


def _acquire(cluster: Cluster, lease: _Lease) -> None:
    """Take the environment's lease, or raise LeaseHeld (retryable) naming its holder. Optimistic concurrency:
    of two reconciles racing for it, the server lets one write win (resourceVersion) and the other gets 409."""
    resource = cluster.resource("coordination.k8s.io/v1", "Lease")
    cluster.counter.in_lease = True
    try:
        live = cluster.get(resource, lease.name, INVENTORY_NAMESPACE)
        now = datetime.now(UTC)
        if live is None:
            body = _lease_body(lease, _micro(now), 0)
            try:
                created = cluster.call("post", resource.path(namespace=INVENTORY_NAMESPACE), body=body)
            except ApiException as err:
                if err.status == 409:
                    raise _held(lease, "another reconcile took its lease just now") from err
                if err.status != 404:
                    raise
                _ensure_namespace(cluster)
                created = cluster.call("post", resource.path(namespace=INVENTORY_NAMESPACE), body=body)
            lease.resource_version = created["metadata"]["resourceVersion"]
        else:
            spec = live.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            renewed = spec.get("renewTime") or spec.get("acquireTime")
            expires = (datetime.fromisoformat(renewed.replace("Z", "+00:00"))
                       + timedelta(seconds=spec.get("leaseDurationSeconds") or LEASE_SECONDS)) if renewed else now
            if holder and holder != lease.holder and expires > now:
                # NB: no times in the message: the environment records each distinct error once, not every try
                raise _held(lease, f"another reconcile holds its lease ({holder})")
            lease.resource_version = live["metadata"]["resourceVersion"]
            transitions = lease.transitions = int(spec.get("leaseTransitions") or 0) + (holder != lease.holder)
            try:
                taken = cluster.call("put", resource.path(name=lease.name, namespace=INVENTORY_NAMESPACE),
                                     body=_lease_body(lease, _micro(now), transitions))
            except ApiException as err:
                if err.status == 409:
                    raise _held(lease, "another reconcile took its lease just now") from err
                raise
            lease.resource_version = taken["metadata"]["resourceVersion"]
        lease.renewed = time.monotonic()
    finally:
        cluster.counter.in_lease = False


def _renew(cluster: Cluster, lease: _Lease) -> None:
    """Renew before the next request; a lease someone else took (ours expired while stalled) aborts the
    reconcile before it writes anything more."""
    resource = cluster.resource("coordination.k8s.io/v1", "Lease")
    cluster.counter.in_lease = True
    try:
        live = cluster.get(resource, lease.name, INVENTORY_NAMESPACE)
        spec = (live or {}).get("spec") or {}
        if live is None or spec.get("holderIdentity") != lease.holder:
            cluster.counter.lease = None
            raise _held(lease, f"lost its lease to {spec.get('holderIdentity') or 'nobody'} (it expired)")
        lease.resource_version = live["metadata"]["resourceVersion"]
        renewed = cluster.call("put", resource.path(name=lease.name, namespace=INVENTORY_NAMESPACE),
                               body=_lease_body(lease, spec.get("acquireTime") or _micro(datetime.now(UTC)),
                                                int(spec.get("leaseTransitions") or 0)))
        lease.resource_version = renewed["metadata"]["resourceVersion"]
        lease.renewed = time.monotonic()
    except ApiException as err:
        if err.status == 409:
            cluster.counter.lease = None
            raise _held(lease, "lost its lease while renewing it") from err
        raise
    finally:
        cluster.counter.in_lease = False


def _release(cluster: Cluster, lease: _Lease) -> None:
    """Give the lease back (holder cleared) so the next reconcile need not wait for expiry. Best effort: an
    unreleased lease expires by itself."""
    cluster.counter.lease = None
    cluster.counter.in_lease = True
    try:
        resource = cluster.resource("coordination.k8s.io/v1", "Lease")
        # NB: one PUT at the resourceVersion of our last write: a 409 means someone took it over meanwhile
        body = _lease_body(lease, _micro(datetime.now(UTC)), lease.transitions)
        del body["spec"]["holderIdentity"]
        cluster.call("put", resource.path(name=lease.name, namespace=INVENTORY_NAMESPACE), body=body)
    except (ApiException, *_UNAVAILABLE):
        pass
    finally:
        cluster.counter.in_lease = False


def _ensure_namespace(cluster: Cluster) -> None:
    ns = cluster.resource("v1", "Namespace")
    if cluster.get(ns, INVENTORY_NAMESPACE, None) is None:
        cluster.apply(ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INVENTORY_NAMESPACE}})


class ClustersFileError(ValueError):
    """The worker's clusters file cannot be read or is invalid: the worker does not start."""


def load_clusters(path: str | Path | None, default_kubeconfig: str | None) -> ClustersFile:
    """The worker's clusters file (YAML or JSON), or the implicit one: `default` = FERRY_KUBECONFIG. With a file
    that lists no `default`, FERRY_KUBECONFIG (when set) is `default`."""
    if path is None:
        return ClustersFile.implicit(default_kubeconfig)
    try:
        clusters = ClustersFile.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError, pydantic.ValidationError) as err:
        raise ClustersFileError(f"clusters file {path} (FERRY_CLUSTERS): {err}") from err
    if DEFAULT_CLUSTER not in clusters.clusters and default_kubeconfig:
        clusters.clusters[DEFAULT_CLUSTER] = ClustersFile.implicit(default_kubeconfig).clusters[DEFAULT_CLUSTER]
    return clusters


class ClusterActivities:
    """Cluster activities, registered as bound methods; holds one client per cluster of the worker's clusters
    file (FERRY_CLUSTERS; without one, `default` is the worker's kubeconfig)."""

    def __init__(self, cache: BundleCache, default_kubeconfig: str | None = None,
                 clusters: ClustersFile | None = None) -> None:
        self._cache = cache
        self._known = clusters if clusters is not None else ClustersFile.implicit(default_kubeconfig)
        self._clusters: dict[str, Cluster] = {}
        self._lock = threading.Lock()

    def cluster(self, name: str, legacy_kubeconfig: str | None = None, legacy_context: str | None = None,
                input: ReconcileInput | None = None) -> Cluster:
        """The named cluster's client. Unknown names, plugins its entry does not allow, and (with `input`) an
        environment outside the entry's `environments` are refused (non-retryable) before the kubeconfig reaches
        the kubernetes client, which would run the plugin on load."""
        if not name:
            # NB: a workflow from before clusters by name: its path is only a key into this worker's own file
            name = (self._known.by_kubeconfig(legacy_kubeconfig, legacy_context) if legacy_kubeconfig
                    else DEFAULT_CLUSTER) or ""
            if not name:
                raise classified(ErrorType.UNKNOWN_CLUSTER, f"the environment names kubeconfig {legacy_kubeconfig} "
                                 "(from before clusters by name) and no entry of the worker's clusters file has that "
                                 "path: re-apply its spec with `cluster: NAME`")
        entry = self._known.clusters.get(name)
        if entry is None:
            raise classified(ErrorType.UNKNOWN_CLUSTER, f"cluster {name!r} is not in the worker's clusters file "
                             f"(FERRY_CLUSTERS lists: {', '.join(sorted(self._known.clusters)) or 'none'})")
        if input is not None and entry.environments is not None:
            self._operator_bounds(name, entry.environments, input)
        with self._lock:
            if name not in self._clusters:
                kubeconfig = entry.kubeconfig or os.path.expanduser(
                    (os.environ.get("KUBECONFIG") or "~/.kube/config").split(os.pathsep)[0])
                try:
                    plugin = auth_plugin(yaml.safe_load(Path(kubeconfig).read_text()) or {}, entry.context)
                    if plugin is not None and plugin[0] not in entry.allow_auth:
                        raise classified(ErrorType.AUTH_PLUGIN_REFUSED, f"cluster {name!r}: its kubeconfig "
                                         f"authenticates with the {plugin[0]} plugin {plugin[1]!r}, which the worker "
                                         f"does not run unless the clusters file allows it (allow-auth: [{plugin[0]}])")
                    self._clusters[name] = Cluster(kubeconfig, entry.context)
                except (kubernetes.config.ConfigException, OSError, yaml.YAMLError, AttributeError, KeyError,
                        ValueError, TypeError) as err:
                    # NB: a configuration problem on the worker; retrying will not fix it.
                    raise classified(ErrorType.BAD_INPUT, f"cluster {name!r}: kubeconfig {kubeconfig}"
                                     f"{f' context {entry.context}' if entry.context else ''}: {err}") from err
            return self._clusters[name]

    @staticmethod
    def _operator_bounds(name: str, environments: dict[str, Any], input: ReconcileInput) -> None:
        """The clusters file's word over the spec's: when an entry lists `environments`, only they may use the
        cluster, and only inside the namespaces and cluster-kinds listed for them there."""
        bounds = environments.get(input.environment)
        if bounds is None:
            raise classified(ErrorType.OUT_OF_BOUNDS, f"environment {input.environment} may not use cluster {name!r}: "
                             "its entry in the worker's clusters file does not list it; nothing was applied")
        wider = sorted(set(input.namespaces or [input.namespace]) - set(bounds.namespaces)) + sorted(
            f"cluster-kind {k}" for k in set(input.cluster_kinds) - set(bounds.cluster_kinds))
        if wider:
            raise classified(ErrorType.OUT_OF_BOUNDS, f"environment {input.environment}'s spec reaches beyond what "
                             f"cluster {name!r}'s entry in the worker's clusters file allows it: {', '.join(wider)}; "
                             "nothing was applied")

    @contextlib.contextmanager
    def _lease(self, cluster: Cluster, input: ReconcileInput) -> Iterator[None]:
        """Held for the whole reconcile (plan, apply, prune, inventory); a dry run (ferry diff) and the
        iteration's check (check_only) write nothing and take none."""
        if input.dry_run or input.check_only:
            yield
            return
        lease = _Lease(_lease_name(input.environment), _holder(), input.environment)
        _acquire(cluster, lease)
        cluster.counter.lease = lease
        try:
            yield
        finally:
            _release(cluster, lease)

    # ------------------------------------------------------------------------------------ inventory
    def _read_inventory(self, cluster: Cluster, environment: str) -> tuple[dict[str, str], dict[str, Any] | None]:
        cm = cluster.resource("v1", "ConfigMap")
        live = cluster.get(cm, _inventory_name(environment), INVENTORY_NAMESPACE)
        if live is None:
            return {}, None
        entries = json.loads((live.get("data") or {}).get("entries", "[]"))
        return {e["id"]: e["v"] for e in entries}, live

    @staticmethod
    def _inventory_data(entries: dict[str, str], digest: str, version: str) -> dict[str, str]:
        return {"entries": json.dumps([{"id": k, "v": v} for k, v in sorted(entries.items())], separators=(",", ":")),
                "digest": digest, "version": version}

    def _inventory_differs(self, entries: dict[str, str], digest: str, version: str,
                           previous: dict[str, Any] | None) -> bool:
        return previous is None or (previous.get("data") or {}) != self._inventory_data(entries, digest, version)

    def _write_inventory(self, cluster: Cluster, environment: str, entries: dict[str, str], digest: str,
                         version: str, previous: dict[str, Any] | None) -> bool:
        if not self._inventory_differs(entries, digest, version, previous):
            return False  # a no-op reconcile writes nothing
        data = self._inventory_data(entries, digest, version)
        _ensure_namespace(cluster)
        cluster.apply(cluster.resource("v1", "ConfigMap"), {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": _inventory_name(environment), "namespace": INVENTORY_NAMESPACE,
                         "labels": {ENVIRONMENT_LABEL: environment, "app.kubernetes.io/managed-by": "ferry"}},
            "data": data})
        return True

    # ------------------------------------------------------------------------------------ reconcile
    @activity.defn(name="reconcile_environment")
    def reconcile_environment(self, input: ReconcileInput) -> ReconcileResult:
        root, revision = self._cache.ensure(input.repository, input.digest)
        with _classified(f"render {input.path} of {input.repository}@{input.digest[:19]}"):
            objects = render(root / input.path if input.path != "." else root)
        if not objects and not input.allow_empty:
            raise classified(ErrorType.RENDER_FAILED,
                             f"{input.repository}@{input.version} renders no objects at {input.path!r}; refusing to "
                             "prune the whole environment (set allow-empty: true to permit it)")
        cluster = self.cluster(input.cluster, input.kubeconfig, input.context, input=input)
        cluster.counter.requests = 0
        with _classified(f"reconcile {input.environment}"), self._lease(cluster, input):
            return self._reconcile(cluster, input, objects, revision)

    def _reconcile(self, cluster: Cluster, input: ReconcileInput, objects: list[dict[str, Any]], revision: str
                   ) -> ReconcileResult:
        selector = f"{ENVIRONMENT_LABEL}={input.environment}"
        crd_scopes = {(f"{o['spec']['group']}/{v['name']}", o["spec"]["names"]["kind"]): o["spec"].get("scope")
                      for o in objects if o.get("kind") == "CustomResourceDefinition"
                      for v in (o.get("spec") or {}).get("versions", [])}
        desired: list[dict[str, Any]] = []
        resources: dict[tuple[str, str], Any] = {}
        for obj in objects:
            key = (obj["apiVersion"], obj["kind"])
            if key not in resources:
                try:
                    resources[key] = cluster.resource(*key)
                except ResourceNotFoundError:
                    if key not in crd_scopes:
                        raise classified(
                            ErrorType.BAD_INPUT, f"{obj['kind']} ({obj['apiVersion']}) is not served by the cluster "
                            "and no CustomResourceDefinition in the artifact defines it") from None
                    resources[key] = None  # defined by a CRD applied in this run
            namespaced = resources[key].namespaced if resources[key] is not None else crd_scopes[key] == "Namespaced"
            desired.append(prepare(obj, input.environment, input.namespace, namespaced))
        ids = [ObjectId.of(d).key() for d in desired]
        dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dupes:
            raise classified(ErrorType.RENDER_FAILED, f"the artifact renders duplicate objects: {', '.join(dupes)}")
        allowed = self._confinement(input, desired)
        as_user = f"system:serviceaccount:{input.namespace}:{input.service_account}" if input.service_account else None

        inventory, inventory_obj = self._read_inventory(cluster, input.environment)
        kinds = {(d["apiVersion"], d["kind"]) for d in desired} | {
            (v, k.split("/")[1]) for k, v in inventory.items()}
        live: dict[str, dict[str, Any]] = {}
        for api_version, kind in sorted(kinds):
            resource = resources.get((api_version, kind))
            if resource is None:
                try:
                    resource = resources[(api_version, kind)] = cluster.resource(api_version, kind)
                except ResourceNotFoundError:
                    continue  # its CRD is gone or not yet applied: nothing of it is live
            for item in cluster.list(resource, selector):  # one LIST per kind, not a GET per object
                live[ObjectId.of(item).key()] = item

        # Local plan first (no request); a candidate update is confirmed by the server's own dry run, so a value
        # the server merely normalises (cpu 0.5 -> 500m) is neither drift nor a write.
        plans = [plan_object(d, live.get(i)) for d, i in zip(desired, ids, strict=True)]
        created = {(d["kind"], d["metadata"].get("namespace") or "", d["metadata"]["name"])
                   for d, p in zip(desired, plans, strict=True) if p.action == "create"}

        def deferred(obj: dict[str, Any]) -> bool:
            """What it needs arrives with this very plan (its kind, its namespace, the Role it binds): the server
            can only judge it once the definitions are applied."""
            meta = obj["metadata"]
            ref = obj.get("roleRef") or {}
            ref_namespace = (meta.get("namespace") or "") if ref.get("kind") == "Role" else ""
            return (resources[(obj["apiVersion"], obj["kind"])] is None
                    or ("Namespace", "", meta.get("namespace") or "") in created
                    or (obj["kind"].endswith("RoleBinding")
                        and (ref.get("kind"), ref_namespace, ref.get("name")) in created))

        rejected: list[str] = []
        for n, (obj, plan) in enumerate(zip(desired, plans, strict=True)):
            if plan.action not in ("create", "update") or deferred(obj):
                continue
            dry = self._dry_run(cluster, resources, obj, rejected, as_user)
            if dry is not None and plan.action == "update":
                plans[n] = confirm_update(obj, live[ids[n]], dry)
        if rejected:
            raise classified(ErrorType.BAD_INPUT, self._rejection(rejected, len(desired)))

        changes = ChangeSet(unchanged=sum(p.action == "unchanged" for p in plans))
        to_prune = stale(inventory, ids) if input.prune else []
        if input.dry_run:
            return ReconcileResult(changes=changes, health=HealthState(), revision=revision, plan=[
                {"object": str(p.id), "action": p.action, "fields": p.fields} for p in plans
                if p.action != "unchanged"] + [{"object": str(ObjectId.parse(k, inventory[k])), "action": "delete",
                                                 "fields": []} for k in to_prune])

        changed = [d for d, p in zip(desired, plans, strict=True) if p.action in ("create", "update")]
        by_id = {ObjectId.of(d).key(): p for d, p in zip(desired, plans, strict=True)}
        if input.check_only:
            # NB: the iteration's no-op check (a local activity): report what would be written, write nothing
            pending = len(changed) + sum(k in live for k in to_prune) + self._inventory_differs(
                {i: d["apiVersion"] for i, d in zip(ids, desired, strict=True)}, input.digest, input.version,
                inventory_obj)
            health = self._snapshot([live[i] for i in ids if i in live], input.digest) if not pending else HealthState()
            changes.api_requests = cluster.counter.requests
            return ReconcileResult(changes=changes, health=health, revision=revision, pending=pending)
        # Every object the server can judge now was dry-run above, before any write. Definitions (CRDs,
        # Namespaces, Roles) are applied first; what depends on them is dry-run once they are ready, before any
        # of it is written (as Flux does): a bad object of a new kind, in a new namespace or binding a new Role
        # leaves only definitions behind.
        definitions = [o for o in changed if o["kind"] in DEFINITION_KINDS]
        rest = [o for o in changed if o["kind"] not in DEFINITION_KINDS]
        waiting = [o for o in rest if deferred(o)]
        for stage in (definitions, rest):
            ordered = apply_order(stage)
            if stage is rest:
                for obj in waiting:
                    key = (obj["apiVersion"], obj["kind"])
                    if resources[key] is None:
                        resources[key] = cluster.resource(*key, wait=10.0)  # its CRD was established just now
                    self._dry_run(cluster, resources, obj, rejected, as_user)
                if rejected:
                    raise classified(ErrorType.BAD_INPUT, self._rejection(rejected, len(desired),
                                                                          changes.created + changes.updated))
            for obj in ordered:
                key = (obj["apiVersion"], obj["kind"])
                cluster.apply(resources[key], dict(obj), as_user=as_user)
                plan = by_id[ObjectId.of(obj).key()]
                (changes.created if plan.action == "create" else changes.updated).append(str(plan.id))
                if plan.action == "update" and input.drift_baseline:
                    changes.drift[str(plan.id)] = plan.fields
                if obj["kind"] in ("CustomResourceDefinition", "Namespace"):
                    self._wait_ready(cluster, resources[key], obj)

        kept: dict[str, str] = {ObjectId.of(d).key(): d["apiVersion"] for d in desired}
        for oid in delete_order(ObjectId.parse(k, inventory[k]) for k in to_prune):
            oid_key = oid.key()
            target = live.get(oid_key)
            if target is None:
                continue  # already gone
            if prune_disabled(target) or outside(oid, bool(oid.namespace), allowed, input.cluster_kinds):
                # NB: outside the environment's bounds (an inventory from before confinement, or a spec that
                # narrowed them): never deleted by this environment, and dropped from its inventory
                changes.prune_skipped.append(str(oid))
                continue
            try:
                resource = resources.get((oid.api_version, oid.kind)) or cluster.resource(oid.api_version, oid.kind)
                cluster.delete(resource, oid.name, oid.namespace or None, as_user=as_user)
                changes.deleted.append(str(oid))
            except (ApiException, *_UNAVAILABLE) as err:
                changes.prune_failed.append(f"{oid}: {err}"[:300])
                kept[oid_key] = oid.api_version  # stays in the inventory; retried next time
        self._write_inventory(cluster, input.environment, kept, input.digest, input.version, inventory_obj)
        health = self._snapshot([live[i] for i in ids if i in live and by_id[i].action == "unchanged"], input.digest)
        if changes.changed:
            health = HealthState(status="Progressing", reason=changes.summary(), digest=input.digest)
        changes.api_requests = cluster.counter.requests
        return ReconcileResult(changes=changes, health=health, revision=revision)

    @staticmethod
    def _confinement(input: ReconcileInput, desired: list[dict[str, Any]]) -> list[str]:
        """Where the environment may write; any object of the bundle outside it refuses the whole reconcile before
        anything is applied (OutOfBounds, non-retryable), naming the objects."""
        allowed = input.namespaces or [input.namespace]
        reserved = sorted(set(allowed) & set(RESERVED_NAMESPACES))
        if reserved:
            raise classified(ErrorType.OUT_OF_BOUNDS, f"{input.environment} may not write to namespace {reserved[0]}: "
                             "it is reserved for ferry's inventories and leases; nothing was applied")
        # NB: prepare() left a namespace on namespaced objects only
        refused = [why for d in desired
                   if (why := outside(ObjectId.of(d), bool(d["metadata"].get("namespace")), allowed,
                                      input.cluster_kinds))]
        if refused:
            shown = "; ".join(refused[:5]) + (f"; and {len(refused) - 5} more" if len(refused) > 5 else "")
            raise classified(ErrorType.OUT_OF_BOUNDS, f"{len(refused)} object(s) outside environment "
                             f"{input.environment}'s bounds; nothing was applied: {shown}")
        return allowed

    @staticmethod
    def _dry_run(cluster: Cluster, resources: dict[tuple[str, str], Any], obj: dict[str, Any],
                 rejected: list[str], as_user: str | None = None) -> dict[str, Any] | None:
        """The object as a server-side dry-run apply would leave it. A rejection of the object itself
        (``_rejects_object``) is collected with the server's message instead of raised, so every one is reported
        at once."""
        try:
            return cluster.apply(resources[(obj["apiVersion"], obj["kind"])], dict(obj), dry_run=True,
                                 as_user=as_user)
        except ApiException as err:
            if _rejects_object(err):
                rejected.append(f"{ObjectId.of(obj)}: {_server_message(err)}")
                return None
            raise

    @staticmethod
    def _rejection(rejected: list[str], total: int, applied: list[str] | None = None) -> str:
        shown = "; ".join(rejected[:5]) + (f"; and {len(rejected) - 5} more" if len(rejected) > 5 else "")
        done = (f"only the definitions they need were applied ({', '.join(applied[:5])})" if applied
                else "nothing was applied")
        return f"the server rejected {len(rejected)} of {total} objects in a dry run; {done}: {shown}"

    def _wait_ready(self, cluster: Cluster, resource: Any, obj: dict[str, Any], timeout: float = 30.0) -> None:
        """Namespaces and CRDs must exist (CRDs established) before what lives in them is applied."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = cluster.get(resource, obj["metadata"]["name"], None)
            if live is not None and object_status(live)[0] == "Current":
                if obj["kind"] == "CustomResourceDefinition":
                    cluster.dyn.resources.invalidate_cache()
                return
            time.sleep(0.1)
        raise classified(ErrorType.CLUSTER_UNAVAILABLE, f"{obj['kind']}/{obj['metadata']['name']} not ready "
                         f"after {timeout:.0f}s")

    @staticmethod
    def _snapshot(objects: list[dict[str, Any]], digest: str) -> HealthState:
        statuses = [object_status(o) for o in objects]
        failed = [reason for status, reason in statuses if status == "Failed"]
        if failed:
            return HealthState(status="Failed", reason="; ".join(failed)[:1000], digest=digest)
        waiting = [reason for status, reason in statuses if status == "InProgress"]
        if waiting:
            return HealthState(status="Progressing", reason="; ".join(waiting)[:1000], digest=digest)
        return HealthState(status="Healthy", reason="all objects current", digest=digest)

    # --------------------------------------------------------------------------------------- health
    @activity.defn(name="wait_healthy")
    def wait_healthy(self, input: HealthInput) -> HealthResult:
        cluster = self.cluster(input.cluster, input.kubeconfig, input.context)
        deadline = time.monotonic() + input.timeout_seconds
        selector = f"{ENVIRONMENT_LABEL}={input.environment}"
        with _classified(f"health of {input.environment}"):
            inventory, _ = self._read_inventory(cluster, input.environment)
            kinds = sorted({(v, k.split("/")[1]) for k, v in inventory.items() if k.split("/")[1] in WORKLOAD_KINDS})
            while True:
                objects = [o for api_version, kind in kinds
                           for o in cluster.list(cluster.resource(api_version, kind), selector)
                           if ObjectId.of(o).key() in inventory]
                state = self._snapshot(objects, input.digest)
                if activity.in_activity() and not activity.info().is_local:
                    activity.heartbeat(state.reason)
                if state.status in ("Healthy", "Failed"):
                    return HealthResult(health=state)
                if time.monotonic() >= deadline:
                    return HealthResult(health=HealthState(
                        status="Failed", reason=f"health timeout after {input.timeout_seconds}s: {state.reason}",
                        digest=input.digest))
                time.sleep(HEALTH_POLL_SECONDS)

