"""One cluster's connection: an ApiClient with no urllib3 retries, a request timeout, discovery, a per-thread
request counter and hook (heartbeat, cancellation, lease renewal), and the classification of its errors."""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from temporalio import activity
from temporalio.exceptions import CancelledError

from activities.bundle import BundleError
from activities.cluster.capabilities import CapabilitiesCache
from activities.errors import classified
from activities.helm.lookup import ClusterAccess
from ferry.errors import ErrorType, classify_http_status
from ferry.helm_render import Capabilities
from ferry.plan import FIELD_MANAGER, Refused
from ferry.spec import env_workflow_id

INVENTORY_NAMESPACE = "ferry-system"
REQUEST_TIMEOUT = 30.0
HEALTH_POLL_SECONDS = 1.0
_TYPED_PATCH_ERROR = "failed to create typed patch object"
_UNAVAILABLE = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)


class _Counter(threading.local):
    requests = 0
    lease: Any = None  # the lease this thread's reconcile holds (lease._Lease)
    before_request: Callable[[], None] | None = None  # renews that lease when due
    in_lease = False  # the lease's own requests do not renew it


class _ApiClient(kubernetes.client.ApiClient):
    """Every HTTP request of the generated client (typed APIs and the dynamic client alike) is one ``call_api``,
    its public request method: the hook runs before each one."""

    before_request: Callable[[], None]

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        self.before_request()
        return super().call_api(*args, **kwargs)


class Cluster:
    """One cluster: an ApiClient (no urllib3 retries), discovery, and a per-thread request counter."""

    def __init__(self, kubeconfig: str | None, context: str | None, connections: int = 32) -> None:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=config)
        config.retries = 0
        # one kept-alive connection per thread that may call at once (the worker's activity and local-activity
        # slots). The client's default is 5 per CPU: past it urllib3 discards connections, and every request beyond
        # pays a new TLS handshake (2,147 "pool is full" warnings in one 1,000-environment rollout on 2 cores)
        config.connection_pool_maxsize = connections
        self.api = _ApiClient(config)
        self.api.before_request = self._before_request
        self.counter = _Counter()
        self._dyn: DynamicClient | None = None
        self._lock = threading.Lock()
        self._capabilities = CapabilitiesCache()

    def _before_request(self) -> None:
        self.counter.requests += 1
        if activity.in_activity() and not activity.info().is_local:
            # one heartbeat per API request (the SDK throttles them): a crashed worker is noticed within
            # the heartbeat timeout, and a cancellation (a new pin, a cancelled workflow) stops the reconcile
            # between two requests instead of after the whole plan
            activity.heartbeat(self.counter.requests)
            if activity.is_cancelled():
                raise CancelledError("reconcile cancelled")
        if self.counter.before_request is not None and not self.counter.in_lease:
            self.counter.before_request()

    @property
    def dyn(self) -> DynamicClient:
        with self._lock:
            if self._dyn is None:
                # NB: the client's default discovery cache is /tmp/osrcp-md5(host).json, shared by every process
                # and every cluster ever served at that address: a cluster rebuilt on the same host:port was seen
                # with the old one's kinds (404 on a kind it no longer serves). Each client discovers for itself.
                self._dyn = DynamicClient(self.api, cache_file=discovery_cache_file())
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

    def capabilities(self) -> Capabilities:
        """The cluster's version and served API versions, as `helm template` takes them (cached a minute)."""
        return self._capabilities.get(self.dyn, REQUEST_TIMEOUT)

    def helm_access(self, as_user: str) -> ClusterAccess:
        """This cluster's API server and the worker's credentials for it, to lend helm for a read-only `lookup`
        impersonating ``as_user`` (activities.helm.lookup)."""
        config = self.api.configuration
        token = str((config.api_key or {}).get("authorization") or "").removeprefix("Bearer ").strip() or None
        return ClusterAccess(
            server=config.host,
            as_user=as_user,
            ca_file=config.ssl_ca_cert,
            cert_file=config.cert_file,
            key_file=config.key_file,
            token=token,
            insecure=not config.verify_ssl,
        )

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        return _decoded(
            self.dyn.request(method, path, body=body, _request_timeout=REQUEST_TIMEOUT, serialize=False, **params)
        )

    def list(self, resource: Any, label_selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("get", resource.path(), label_selector=label_selector)["items"]
        for item in items:
            item.setdefault("apiVersion", resource.group_version)
            item.setdefault("kind", resource.kind)
        return items

    def apply(
        self,
        resource: Any,
        obj: dict[str, Any],
        dry_run: bool = False,
        as_user: str | None = None,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """Server-side apply with the dynamic client's own call: field manager ferry (unless told), conflicts
        forced."""
        meta = obj["metadata"]
        params: dict[str, Any] = {"field_manager": field_manager, "_request_timeout": REQUEST_TIMEOUT}
        if dry_run:
            params["dry_run"] = "All"
        if as_user:
            params["header_params"] = {"Impersonate-User": as_user}
        result: dict[str, Any] = _decoded(
            self.dyn.server_side_apply(
                resource,
                body=obj,
                name=meta["name"],
                namespace=meta.get("namespace") if resource.namespaced else None,
                force_conflicts=True,
                serialize=False,
                **params,
            )
        )
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
            self.call(
                "delete",
                resource.path(name=name, namespace=namespace or None),
                propagation_policy="Background",
                **({"header_params": {"Impersonate-User": as_user}} if as_user else {}),
            )
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
            # the server names the identity it refused (the worker's, or the impersonated service account)
            raise classified(
                ErrorType.FORBIDDEN, f"{what}: forbidden by the cluster's RBAC: {body or err.reason}"
            ) from err
        kind = classify_http_status(err.status or 0, unavailable=ErrorType.CLUSTER_UNAVAILABLE)
        raise classified(kind, f"{what}: HTTP {err.status}: {body or err.reason}") from err
    except Refused as err:
        raise classified(err.type, str(err)) from None  # pure refusals name what they refuse themselves
    except BundleError as err:
        raise classified(ErrorType.RENDER_FAILED, f"{what}: {err}") from err
    except _UNAVAILABLE as err:
        raise classified(ErrorType.CLUSTER_UNAVAILABLE, f"{what}: cluster unreachable: {err}") from err


_DISCOVERY_DIR: list[Path] = []


def discovery_cache_file() -> str:
    """A discovery cache of this process's own (a 0700 directory made once per process), one file per client."""
    if not _DISCOVERY_DIR:
        _DISCOVERY_DIR.append(Path(tempfile.mkdtemp(prefix="ferry-discovery-")))
    return str(_DISCOVERY_DIR[0] / f"{uuid.uuid4().hex}.json")


def _only_its_own_workflow(environment: str, also: Callable[[str], str] | None = None) -> None:
    """An environment's name keys its bounds, inventory, lease and labels: only its own workflow (env/<name>), and
    with `also` the one that function names for it (its rollout/<name>), may act for it. Another workflow whose
    state claims the name (a start by anyone who may start workflows) is refused before anything is read or
    written."""
    if not activity.in_activity():
        return
    workflow_id = activity.info().workflow_id
    allowed = [env_workflow_id(environment), *([also(environment)] if also is not None else [])]
    if workflow_id and workflow_id not in allowed:
        raise classified(
            ErrorType.OUT_OF_BOUNDS,
            f"workflow {workflow_id} may not act for environment "
            f"{environment}: only {' or '.join(allowed)} may; nothing was read or applied",
        )


def _ensure_namespace(cluster: Cluster) -> None:
    ns = cluster.resource("v1", "Namespace")
    if cluster.get(ns, INVENTORY_NAMESPACE, None) is None:
        cluster.apply(ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INVENTORY_NAMESPACE}})
