"""The Kubernetes adapter, over the official client. The only module that imports kubernetes.

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

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
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
    ChangeSet,
    HealthInput,
    HealthResult,
    HealthState,
    ReconcileInput,
    ReconcileResult,
    env_workflow_id,
)
from ferry.errors import ErrorType, classify_http_status
from ferry.health import WORKLOAD_KINDS, object_status, snapshot
from ferry.plan import (
    AWAITED_KINDS,
    ENVIRONMENT_LABEL,
    FIELD_MANAGER,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    WRITES,
    Kind,
    ObjectId,
    Plan,
    Refused,
    check_unique,
    confine,
    crd_scopes,
    environment_selector,
    inventory_data,
    inventory_entries,
    inventory_ids,
    kinds_to_list,
    plan,
    prepare,
    rejection,
)

INVENTORY_NAMESPACE = "ferry-system"
REQUEST_TIMEOUT = 30.0
HEALTH_POLL_SECONDS = 1.0
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

    def __init__(self, kubeconfig: str | None, context: str | None, connections: int = 32) -> None:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=config)
        config.retries = 0
        # NB: one kept-alive connection per thread that may call at once (the worker's activity and local-activity
        # slots). The client's default is 5 per CPU: past it urllib3 discards connections, and every request beyond
        # pays a new TLS handshake (2,147 "pool is full" warnings in one 1,000-environment rollout on 2 cores)
        config.connection_pool_maxsize = connections
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
        return _decoded(self.dyn.request(method, path, body=body, _request_timeout=REQUEST_TIMEOUT, serialize=False,
                                         **params))

    def list(self, resource: Any, label_selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("get", resource.path(), label_selector=label_selector)["items"]
        for item in items:
            item.setdefault("apiVersion", resource.group_version)
            item.setdefault("kind", resource.kind)
        return items

    def apply(self, resource: Any, obj: dict[str, Any], dry_run: bool = False, as_user: str | None = None
              ) -> dict[str, Any]:
        """Server-side apply with the dynamic client's own call: field manager ferry, conflicts forced."""
        meta = obj["metadata"]
        params: dict[str, Any] = {"field_manager": FIELD_MANAGER, "_request_timeout": REQUEST_TIMEOUT}
        if dry_run:
            params["dry_run"] = "All"
        if as_user:
            params["header_params"] = {"Impersonate-User": as_user}
        result: dict[str, Any] = _decoded(self.dyn.server_side_apply(
            resource, body=obj, name=meta["name"], namespace=meta.get("namespace") if resource.namespaced else None,
            force_conflicts=True, serialize=False, **params))
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


def _decoded(response: Any) -> Any:
    """The JSON body of a raw (serialize=False) response: plain dicts, not the client's ResourceInstance."""
    data = response.data if hasattr(response, "data") else response
    return json.loads(data) if data else {}


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
    except Refused as err:
        raise classified(err.type, str(err)) from None  # pure refusals name what they refuse themselves
    except BundleError as err:
        raise classified(ErrorType.RENDER_FAILED, f"{what}: {err}") from err
    except _UNAVAILABLE as err:
        raise classified(ErrorType.CLUSTER_UNAVAILABLE, f"{what}: cluster unreachable: {err}") from err


def _only_its_own_workflow(environment: str) -> None:
    """An environment's name keys its bounds, inventory, lease and labels: only its own workflow (env/<name>) may
    act for it. Another workflow whose state claims the name (a start by anyone who may start workflows) is
    refused before anything is read or written."""
    if not activity.in_activity():
        return
    workflow_id = activity.info().workflow_id
    if workflow_id and workflow_id != env_workflow_id(environment):
        raise classified(ErrorType.OUT_OF_BOUNDS, f"workflow {workflow_id} may not act for environment "
                         f"{environment}: only {env_workflow_id(environment)} may; nothing was read or applied")


def _inventory_name(environment: str) -> str:
    return f"ferry-inventory-{environment}"


def _lease_name(environment: str) -> str:
    return f"ferry-reconcile-{environment}"


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # metav1.MicroTime


def _holder() -> str:
    """Who holds a lease: the activity (workflow, run, activity id, attempt) or this thread outside one, plus a
    token of its own: activity ids are per run, so a new run (or a reset) on the same host would otherwise share
    an old attempt's identity and both would write."""
    token = uuid.uuid4().hex[:12]
    if activity.in_activity():
        info = activity.info()
        return (f"{info.workflow_id}/{(info.workflow_run_id or '')[:12]}/{info.activity_id}#{info.attempt}"
                f"@{socket.gethostname()}/{token}")[:253]
    return f"{socket.gethostname()}/{os.getpid()}/{threading.get_ident()}/{token}"


def _lease_body(lease: _Lease, acquired: str, transitions: int) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": lease.name, "namespace": INVENTORY_NAMESPACE,
                         "labels": {MANAGED_BY_LABEL: MANAGED_BY},
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


class ClusterActivities:
    """Cluster activities, registered as bound methods; holds one client per cluster of the worker's clusters
    file (FERRY_CLUSTERS; without one, `default` is the worker's kubeconfig)."""

    def __init__(self, cache: BundleCache, default_kubeconfig: str | None = None,
                 clusters: ClustersFile | None = None, connections: int = 32) -> None:
        self._cache, self._connections = cache, connections
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
                    self._clusters[name] = Cluster(kubeconfig, entry.context, self._connections)
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
        if bounds.service_account and input.service_account != bounds.service_account:
            raise classified(ErrorType.OUT_OF_BOUNDS, f"environment {input.environment} must apply as service "
                             f"account {bounds.service_account} on cluster {name!r} (the worker's clusters file says "
                             f"so); its spec says {input.service_account or 'none'}; nothing was applied")
        wider = sorted({input.namespace, *(input.namespaces or [])} - set(bounds.namespaces)) + sorted(
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
    @staticmethod
    def _read_inventory(cluster: Cluster, environment: str) -> tuple[dict[str, str], dict[str, Any] | None]:
        """The previous inventory (object key -> apiVersion) and its ConfigMap, or ({}, None)."""
        live = cluster.get(cluster.resource("v1", "ConfigMap"), _inventory_name(environment), INVENTORY_NAMESPACE)
        return (inventory_entries(live.get("data")), live) if live is not None else ({}, None)

    @staticmethod
    def _inventory_differs(entries: dict[str, str], digest: str, version: str, previous: dict[str, Any] | None
                           ) -> bool:
        return previous is None or (previous.get("data") or {}) != inventory_data(entries, digest, version)

    def _write_inventory(self, cluster: Cluster, environment: str, entries: dict[str, str], digest: str,
                         version: str, previous: dict[str, Any] | None) -> bool:
        if not self._inventory_differs(entries, digest, version, previous):
            return False  # a no-op reconcile writes nothing
        _ensure_namespace(cluster)
        cluster.apply(cluster.resource("v1", "ConfigMap"), {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": _inventory_name(environment), "namespace": INVENTORY_NAMESPACE,
                         "labels": {ENVIRONMENT_LABEL: environment, MANAGED_BY_LABEL: MANAGED_BY}},
            "data": inventory_data(entries, digest, version)})
        return True

    # ------------------------------------------------------------------------------------ reconcile
    @activity.defn(name="reconcile_environment")
    def reconcile_environment(self, input: ReconcileInput) -> ReconcileResult:
        _only_its_own_workflow(input.environment)
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
        """read -> plan -> dry run -> apply staged -> prune -> write inventory -> snapshot (fluxcd/pkg ssa's verbs).
        Every refusal (bounds, duplicates, another environment's objects, the server's dry runs of what it can
        judge now) comes before the first write."""
        resources, namespaced = self._discover(cluster, objects)
        desired = [prepare(o, input.environment, input.namespace, namespaced[(o["apiVersion"], o["kind"])])
                   for o in objects]
        check_unique(desired)
        allowed = confine(input.environment, input.namespace, input.namespaces, input.cluster_kinds, desired)
        as_user = f"system:serviceaccount:{input.namespace}:{input.service_account}" if input.service_account else None
        inventory, inventory_obj = self._read_inventory(cluster, input.environment)
        live = self._list_live(cluster, input.environment, resources, kinds_to_list(desired, inventory))
        planned = plan(desired, live, inventory, prune=input.prune, namespaces=allowed,
                       cluster_kinds=input.cluster_kinds, unserved={k for k, r in resources.items() if r is None})
        if not input.check_only:
            self._refuse_foreign(cluster, resources, planned, input.environment)
        self._validate(cluster, resources, planned, as_user)
        if input.dry_run:
            return ReconcileResult(changes=ChangeSet(unchanged=planned.unchanged), health=HealthState(),
                                   revision=revision, plan=planned.entries())
        if input.check_only:
            return self._check(cluster, input, planned, inventory_obj, revision)
        changes = ChangeSet(unchanged=planned.unchanged)
        self._apply_staged(cluster, resources, planned, changes, input.drift_baseline, as_user)
        kept = self._prune(cluster, resources, planned, changes, as_user)
        self._write_inventory(cluster, input.environment, kept, input.digest, input.version, inventory_obj)
        changes.api_requests = cluster.counter.requests
        return ReconcileResult(changes=changes, revision=revision,
                               health=planned.rollout_health(kept, changes.summary(), input.digest))

    @staticmethod
    def _discover(cluster: Cluster, objects: list[dict[str, Any]]) -> tuple[dict[Kind, Any], dict[Kind, bool]]:
        """The API resource of every kind the artifact has (None for one the cluster does not serve yet but a CRD
        of the artifact defines: applied in this run), and whether the kind is namespaced. Any other unserved
        kind refuses the reconcile (BadInput)."""
        scopes = crd_scopes(objects)
        resources: dict[Kind, Any] = {}
        for key in dict.fromkeys((o["apiVersion"], o["kind"]) for o in objects):
            try:
                resources[key] = cluster.resource(*key)
            except ResourceNotFoundError:
                if key not in scopes:
                    raise classified(ErrorType.BAD_INPUT, f"{key[1]} ({key[0]}) is not served by the cluster and no "
                                     "CustomResourceDefinition in the artifact defines it") from None
                resources[key] = None
        namespaced = {k: r.namespaced if r is not None else scopes[k] == "Namespaced" for k, r in resources.items()}
        return resources, namespaced

    @staticmethod
    def _list_live(cluster: Cluster, environment: str, resources: dict[Kind, Any], kinds: list[Kind]
                   ) -> dict[str, dict[str, Any]]:
        """The environment's labelled objects by key: one LIST per kind, not a GET per object. A kind not served
        (yet) has none; one served by now is remembered in `resources`."""
        live: dict[str, dict[str, Any]] = {}
        for kind in kinds:
            resource = resources.get(kind)
            if resource is None:
                try:
                    resource = resources[kind] = cluster.resource(*kind)
                except ResourceNotFoundError:
                    continue  # its CRD is gone or not yet applied: nothing of it is live
            for item in cluster.list(resource, environment_selector(environment)):
                live[ObjectId.of(item).key()] = item
        return live

    @staticmethod
    def _refuse_foreign(cluster: Cluster, resources: dict[Kind, Any], planned: Plan, environment: str) -> None:
        """A create is an object not among this environment's labelled ones; one that exists under another
        environment's label is that environment's, never taken over (an unlabelled one is adopted): OutOfBounds."""
        rejected: list[str] = []
        for obj, change in planned.writes():
            resource = resources[(obj["apiVersion"], obj["kind"])]
            if change.action != "create" or resource is None:
                continue
            found = cluster.get(resource, obj["metadata"]["name"], obj["metadata"].get("namespace") or None)
            owner = ((found or {}).get("metadata", {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
            if owner and owner != environment:
                rejected.append(f"{change.id}: belongs to environment {owner}")
        if rejected:
            raise classified(ErrorType.OUT_OF_BOUNDS, f"{len(rejected)} object(s) of the artifact belong to another "
                             f"environment; nothing was applied: {'; '.join(rejected[:5])}")

    def _validate(self, cluster: Cluster, resources: dict[Kind, Any], planned: Plan, as_user: str | None) -> None:
        """Dry-run every write the server can judge now, before any write; a candidate update is confirmed by
        the server's answer, so a value it merely normalises (cpu 0.5 -> 500m) is neither drift nor a write. Every
        object the server rejects is named at once (BadInput)."""
        rejected: list[str] = []
        for n, (obj, change) in enumerate(zip(planned.desired, planned.changes, strict=True)):
            if change.action not in WRITES or planned.deferred(obj):
                continue
            dry = self._dry_run(cluster, resources, obj, rejected, as_user)
            if dry is not None and change.action == "update":
                planned.confirm(n, dry)
        if rejected:
            raise classified(ErrorType.BAD_INPUT, rejection(rejected, len(planned.desired)))

    def _check(self, cluster: Cluster, input: ReconcileInput, planned: Plan, inventory_obj: dict[str, Any] | None,
               revision: str) -> ReconcileResult:
        """The iteration's no-op check (a local activity): report what a reconcile would write, write nothing;
        health is a verdict only when nothing is pending."""
        pending = len(planned.writes()) + len(planned.prune) + self._inventory_differs(
            planned.inventory(), input.digest, input.version, inventory_obj)
        health = snapshot(planned.live_objects(), input.digest) if not pending else HealthState()
        changes = ChangeSet(unchanged=planned.unchanged, api_requests=cluster.counter.requests)
        return ReconcileResult(changes=changes, health=health, revision=revision, pending=pending)

    def _apply_staged(self, cluster: Cluster, resources: dict[Kind, Any], planned: Plan, changes: ChangeSet,
                      drift_baseline: bool, as_user: str | None) -> None:
        """Apply stage by stage (definitions, then the rest); what the rest defers to the definitions is dry-run
        once they are ready, before any of it is written. CRDs and Namespaces are awaited as they are applied."""
        for stage in planned.stages():
            rejected: list[str] = []
            for obj in stage.deferred:
                key = (obj["apiVersion"], obj["kind"])
                if resources[key] is None:
                    resources[key] = cluster.resource(*key, wait=10.0)  # its CRD was established just now
                self._dry_run(cluster, resources, obj, rejected, as_user)
            if rejected:
                raise classified(ErrorType.BAD_INPUT, rejection(rejected, len(planned.desired),
                                                                changes.created + changes.updated))
            for obj, change in stage.writes:
                resource = resources[(obj["apiVersion"], obj["kind"])]
                cluster.apply(resource, dict(obj), as_user=as_user)
                (changes.created if change.action == "create" else changes.updated).append(str(change.id))
                if change.action == "update" and drift_baseline:
                    changes.drift[str(change.id)] = change.fields
                if obj["kind"] in AWAITED_KINDS:
                    self._wait_ready(cluster, resource, obj)

    @staticmethod
    def _prune(cluster: Cluster, resources: dict[Kind, Any], planned: Plan, changes: ChangeSet,
               as_user: str | None) -> dict[str, str]:
        """Delete the stale objects the plan prunes (in delete order) and report the ones it skips (annotated, or
        outside the environment's bounds: dropped from its inventory). The next inventory: the desired objects
        and every failed delete (retried next time)."""
        kept = planned.inventory()
        for change in planned.prune:
            oid = change.id
            if change.action == "skip":
                changes.prune_skipped.append(str(oid))
                continue
            try:
                resource = resources.get((oid.api_version, oid.kind)) or cluster.resource(oid.api_version, oid.kind)
                cluster.delete(resource, oid.name, oid.namespace or None, as_user=as_user)
                changes.deleted.append(str(oid))
            except (ApiException, *_UNAVAILABLE) as err:
                changes.prune_failed.append(f"{oid}: {err}"[:300])
                kept[oid.key()] = oid.api_version
        return kept

    @staticmethod
    def _dry_run(cluster: Cluster, resources: dict[Kind, Any], obj: dict[str, Any],
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

    # --------------------------------------------------------------------------------------- health
    @activity.defn(name="wait_healthy")
    def wait_healthy(self, input: HealthInput) -> HealthResult:
        _only_its_own_workflow(input.environment)
        cluster = self.cluster(input.cluster, input.kubeconfig, input.context)
        deadline = time.monotonic() + input.timeout_seconds
        selector = environment_selector(input.environment)
        with _classified(f"health of {input.environment}"):
            inventory, _ = self._read_inventory(cluster, input.environment)
            kinds = sorted({(o.api_version, o.kind) for o in inventory_ids(inventory) if o.kind in WORKLOAD_KINDS})
            while True:
                objects = [o for api_version, kind in kinds
                           for o in cluster.list(cluster.resource(api_version, kind), selector)
                           if ObjectId.of(o).key() in inventory]
                state = snapshot(objects, input.digest)
                if activity.in_activity() and not activity.info().is_local:
                    activity.heartbeat(state.reason)
                if state.status in ("Healthy", "Failed"):
                    return HealthResult(health=state)
                if time.monotonic() >= deadline:
                    return HealthResult(health=HealthState(
                        status="Failed", reason=f"health timeout after {input.timeout_seconds}s: {state.reason}",
                        digest=input.digest))
                time.sleep(HEALTH_POLL_SECONDS)

