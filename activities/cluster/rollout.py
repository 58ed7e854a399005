"""The progressive rollout's cluster activities (issue 29): the canary W, W-primary, their Services and the
HTTPRoute, built by ferry.rollout_objects and written with server-side apply as ROLLOUT_FIELD_MANAGER (forced:
Ferry owns these fields). Every activity is idempotent, heartbeats on every API request (Cluster), and first admits
only the environment's workflows (env/<name>, rollout/<name>). Errors: the workload missing or not the environment's,
an object of the rollout's names that it did not make, a W whose selector or template it cannot copy, a gateway on a
cluster without the Gateway API -> RolloutRefused (non-retryable); the API unreachable, a primary not ready in
time -> ClusterUnavailable (retryable)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes.dynamic.exceptions import ResourceNotFoundError
from temporalio import activity

from activities.cluster.client import HEALTH_POLL_SECONDS, Cluster, _classified, _only_its_own_workflow
from activities.cluster.clusters import Clients
from activities.errors import classified
from ferry.errors import ErrorType
from ferry.health import object_status
from ferry.plan import ENVIRONMENT_LABEL, environment_selector
from ferry.rollout_cluster import (
    ROLLOUT_FINISH,
    ROLLOUT_INITIALIZE,
    ROLLOUT_PREVIEW,
    ROLLOUT_PROMOTE,
    ROLLOUT_SET_WEIGHT,
    ROLLOUT_STATUS,
    CanaryStatus,
    CanaryTarget,
)
from ferry.rollout_objects import (
    GATEWAY_API,
    PRIMARY_SUFFIX,
    ROLLOUT_FIELD_MANAGER,
    canary_replicas,
    check_weight,
    declared_replicas,
    owned_by_rollout,
    primary_deployment,
    ratio_weight,
    release_service,
    route,
    route_weight,
    services,
    templates_match,
)
from ferry.spec import DEFAULT_CLUSTER, rollout_workflow_id

READY_SECONDS = 60.0  # a Deployment the rollout scaled or rewrote gets this long to be ready before traffic moves


@dataclass(frozen=True)
class _Pair:
    """One rollout's cluster and the API resources it writes."""

    cluster: Cluster
    target: CanaryTarget
    deployments: Any
    services: Any
    routes: Any | None

    @property
    def primary(self) -> str:
        return self.target.workload + PRIMARY_SUFFIX

    def what(self, name: str | None = None) -> str:
        return f"environment {self.target.environment}: {self.target.namespace}/{name or self.target.workload}"


def _refused(message: str) -> Exception:
    return classified(ErrorType.ROLLOUT_REFUSED, message)


class RolloutActivities(Clients):
    """The canary's and the primary's objects on the environment's cluster."""

    @activity.defn(name=ROLLOUT_INITIALIZE)
    def rollout_initialize(self, target: CanaryTarget) -> CanaryStatus:
        """Create W-primary from W when absent (replicas: W's REPLICAS_ANNOTATION; an existing primary keeps what
        it runs), the Services W-primary and W-canary, the route at weight 0 (with a gateway); once the primary is
        ready, scale W to 0 (the rollout's field manager then owns W's replicas)."""
        with self._pair(target) as pair:
            canary = self._workload(pair)
            if self._owned(pair, pair.deployments, pair.primary) is None:
                self._apply(pair, pair.deployments, primary_deployment(canary, declared_replicas(canary)))
            port = self._services(pair, canary)
            self._route(pair, canary, 0, port)
            self._pair_ready(pair, pair.primary)
            self._scale(pair, 0)
            return self._status(pair)

    @activity.defn(name=ROLLOUT_SET_WEIGHT)
    def rollout_set_weight(self, target: CanaryTarget, weight: int) -> CanaryStatus:
        """With a gateway: W scaled to the primary's replicas (0 at weight 0), ready, then the route's weights;
        without: W scaled to canary_replicas(primary, weight), the replica ratio carrying the traffic."""
        with self._pair(target) as pair:
            check_weight(weight)
            canary = self._workload(pair)
            primary = self._primary(pair)
            replicas = int((primary.get("spec") or {}).get("replicas", 1))
            if pair.routes is None:
                self._scale(pair, canary_replicas(replicas, weight))
                return self._status(pair)
            self._scale(pair, max(1, replicas) if weight else 0)
            if weight:
                self._pair_ready(pair, target.workload)
            self._route(pair, canary, weight, self._services(pair, canary))
            return self._status(pair)

    @activity.defn(name=ROLLOUT_PREVIEW)
    def rollout_preview(self, target: CanaryTarget) -> CanaryStatus:
        """Blue-green's preview: W (green) scaled to the primary's replicas and ready, every request still answered
        by the primary (weight 0) and mirrored to W-canary, so the analysis judges green on real requests."""
        with self._pair(target) as pair:
            canary = self._workload(pair)
            if pair.routes is None:
                raise _refused(f"{pair.what()}: a blue-green preview needs the strategy's gateway (its route mirrors)")
            replicas = int((self._primary(pair).get("spec") or {}).get("replicas", 1))
            self._scale(pair, max(1, replicas))
            self._pair_ready(pair, target.workload)
            self._route(pair, canary, 0, self._services(pair, canary), mirror=True)
            return self._status(pair)

    @activity.defn(name=ROLLOUT_PROMOTE)
    def rollout_promote(self, target: CanaryTarget) -> CanaryStatus:
        """Copy W's current pod template and spec into W-primary (Flagger's promotion), at the release's declared
        replicas; the primary rolls out the canary's version while the route still splits."""
        with self._pair(target) as pair:
            canary = self._workload(pair)
            self._primary(pair)
            self._apply(pair, pair.deployments, primary_deployment(canary, declared_replicas(canary)))
            return self._status(pair)

    @activity.defn(name=ROLLOUT_FINISH)
    def rollout_finish(self, target: CanaryTarget) -> CanaryStatus:
        """All traffic to the primary (route weight 0), then, once the primary is ready, W scaled to 0: the end of
        a promotion, and an abort or rollback (the primary still runs the last promoted version)."""
        with self._pair(target) as pair:
            canary = self._workload(pair)
            self._primary(pair)
            self._route(pair, canary, 0, self._services(pair, canary))
            self._pair_ready(pair, pair.primary)
            self._scale(pair, 0)
            return self._status(pair)

    @activity.defn(name=ROLLOUT_STATUS)
    def rollout_status(self, target: CanaryTarget) -> CanaryStatus:
        """The pair as it is; reads only."""
        with self._pair(target) as pair:
            self._workload(pair)
            return self._status(pair)

    # ------------------------------------------------------------------------------------------ steps

    @contextlib.contextmanager
    def _pair(self, target: CanaryTarget) -> Iterator[_Pair]:
        """The target's cluster and resources, after the workflow check and the operator's bounds; pure refusals
        (ValueError of ferry.rollout_objects) become RolloutRefused naming the workload."""
        _only_its_own_workflow(target.environment, also=rollout_workflow_id)
        self._bounds(target)
        cluster = self.cluster(target.cluster or DEFAULT_CLUSTER)
        cluster.counter.requests = 0
        what = f"rollout of {target.namespace}/{target.workload} for environment {target.environment}"
        with _classified(what):
            try:
                yield _Pair(
                    cluster,
                    target,
                    cluster.resource("apps/v1", "Deployment"),
                    cluster.resource("v1", "Service"),
                    self._routes(cluster, target),
                )
            except ValueError as err:
                raise _refused(f"{what}: {err}") from None

    def _bounds(self, target: CanaryTarget) -> None:
        """The clusters file's word: an entry listing `environments` admits only them, in their namespaces."""
        entry = self._known.clusters.get(target.cluster or DEFAULT_CLUSTER)
        if entry is None or entry.environments is None:
            return  # an unknown cluster is refused by self.cluster()
        bounds = entry.environments.get(target.environment)
        if bounds is None or target.namespace not in bounds.namespaces:
            raise classified(
                ErrorType.OUT_OF_BOUNDS,
                f"environment {target.environment} may not roll out in namespace {target.namespace} of cluster "
                f"{target.cluster or DEFAULT_CLUSTER!r}: the worker's clusters file does not allow it",
            )

    @staticmethod
    def _routes(cluster: Cluster, target: CanaryTarget) -> Any | None:
        if target.gateway is None:
            return None
        try:
            return cluster.resource(GATEWAY_API, "HTTPRoute")
        except ResourceNotFoundError:
            raise _refused(
                f"environment {target.environment}'s strategy names gateway {target.gateway.namespace}/"
                f"{target.gateway.name} and the cluster does not serve HTTPRoute ({GATEWAY_API}): install the "
                "Gateway API CRDs or remove the strategy's gateway"
            ) from None

    @staticmethod
    def _workload(pair: _Pair) -> dict[str, Any]:
        """W, which must exist and carry the environment's label (the reconcile writes it)."""
        target = pair.target
        live = pair.cluster.get(pair.deployments, target.workload, target.namespace)
        if live is None:
            raise _refused(f"{pair.what()}: Deployment does not exist (has the release been reconciled?)")
        owner = ((live.get("metadata") or {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
        if owner != target.environment:
            raise _refused(
                f"{pair.what()}: a workload Ferry does not own for this environment "
                f"(label {ENVIRONMENT_LABEL}={owner or 'absent'}); nothing was changed"
            )
        return live

    @staticmethod
    def _owned(pair: _Pair, resource: Any, name: str) -> dict[str, Any] | None:
        """The rollout's object of that name, None when absent; one it did not make is refused, never taken."""
        live = pair.cluster.get(resource, name, pair.target.namespace)
        if live is not None and not owned_by_rollout(live, pair.target.workload):
            raise _refused(f"{pair.what(name)}: {live.get('kind')} exists and is not the rollout's; nothing changed")
        return live

    def _primary(self, pair: _Pair) -> dict[str, Any]:
        live = self._owned(pair, pair.deployments, pair.primary)
        if live is None:
            raise _refused(f"{pair.what(pair.primary)}: no primary yet (rollout_initialize makes it)")
        return live

    @staticmethod
    def _apply(pair: _Pair, resource: Any, obj: dict[str, Any]) -> dict[str, Any]:
        return pair.cluster.apply(resource, obj, field_manager=ROLLOUT_FIELD_MANAGER)

    def _scale(self, pair: _Pair, replicas: int) -> None:
        """W's spec.replicas, applied alone by the rollout's field manager (the reconcile applies W without it).
        NB: only W is scaled so; the primary is always applied whole, as one partial apply by the same manager
        would drop every other field it owns."""
        target = pair.target
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": target.workload, "namespace": target.namespace},
            "spec": {"replicas": replicas},
        }
        self._apply(pair, pair.deployments, body)

    def _services(self, pair: _Pair, canary: dict[str, Any]) -> int:
        """Services W-primary and W-canary (ports from the release's Service selecting W's pods, else the
        strategy's port); returns the port the route sends to."""
        target = pair.target
        found = pair.cluster.call(
            "get",
            pair.services.path(namespace=target.namespace),
            label_selector=environment_selector(target.environment),
            limit=500,
        ).get("items", [])
        made = services(canary, release_service(found, canary), target.port)
        for svc in made:
            self._owned(pair, pair.services, svc["metadata"]["name"])
            self._apply(pair, pair.services, svc)
        return int(made[0]["spec"]["ports"][0]["port"])

    def _route(self, pair: _Pair, canary: dict[str, Any], weight: int, port: int, mirror: bool = False) -> None:
        target = pair.target
        if pair.routes is None or target.gateway is None:
            return
        self._owned(pair, pair.routes, target.workload)
        labels = {ENVIRONMENT_LABEL: target.environment}
        obj = route(target.workload, target.namespace, target.gateway, weight, target.hostnames, port, labels, mirror)
        self._apply(pair, pair.routes, obj)

    @staticmethod
    def _pair_ready(pair: _Pair, name: str) -> None:
        """Until the Deployment's controller reports every replica updated, ready and available (READY_SECONDS);
        then ClusterUnavailable (retryable: the activity runs again, idempotent)."""
        deadline = time.monotonic() + READY_SECONDS
        reason = "absent"
        while time.monotonic() < deadline:
            live = pair.cluster.get(pair.deployments, name, pair.target.namespace)
            if live is not None:
                status, reason = object_status(live)
                if status == "Current":
                    return
            time.sleep(HEALTH_POLL_SECONDS)
        raise classified(
            ErrorType.CLUSTER_UNAVAILABLE,
            f"{pair.what(name)}: not ready after {READY_SECONDS:.0f}s ({reason}); traffic was not moved",
        )

    def _status(self, pair: _Pair) -> CanaryStatus:
        target = pair.target
        canary = pair.cluster.get(pair.deployments, target.workload, target.namespace) or {}
        primary = pair.cluster.get(pair.deployments, pair.primary, target.namespace)
        live_route = pair.cluster.get(pair.routes, target.workload, target.namespace) if pair.routes else None
        if live_route is not None and not owned_by_rollout(live_route, target.workload):
            live_route = None
        c_replicas, p_replicas = _replicas(canary), _replicas(primary)
        weight = route_weight(live_route, target.workload)
        return CanaryStatus(
            weight=ratio_weight(p_replicas, c_replicas) if weight is None else weight,
            canary_image=_image(canary),
            primary_image=_image(primary),
            canary_replicas=c_replicas,
            canary_ready=int(((canary.get("status") or {}).get("readyReplicas")) or 0),
            primary_replicas=p_replicas,
            primary_ready=int((((primary or {}).get("status") or {}).get("readyReplicas")) or 0),
            primary_matches_canary=templates_match(canary, primary),
            route=live_route is not None,
        )


def _replicas(obj: dict[str, Any] | None) -> int:
    return int(((obj or {}).get("spec") or {}).get("replicas", 0) or 0)


def _image(obj: dict[str, Any] | None) -> str:
    containers = (((((obj or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []
    return str(containers[0].get("image", "")) if containers else ""
