"""One reconcile per environment at a time: a coordination.k8s.io/v1 Lease, acquired, renewed and released."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client import ApiException
from temporalio import activity

from activities.cluster.client import _UNAVAILABLE, INVENTORY_NAMESPACE, Cluster, _ensure_namespace
from activities.errors import classified
from ferry.errors import ErrorType
from ferry.plan import MANAGED_BY, MANAGED_BY_LABEL

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
        return (
            f"{info.workflow_id}/{(info.workflow_run_id or '')[:12]}/{info.activity_id}#{info.attempt}"
            f"@{socket.gethostname()}/{token}"
        )[:253]
    return f"{socket.gethostname()}/{os.getpid()}/{threading.get_ident()}/{token}"


def _lease_body(lease: _Lease, acquired: str, transitions: int) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease.name,
            "namespace": INVENTORY_NAMESPACE,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            **({"resourceVersion": lease.resource_version} if lease.resource_version else {}),
        },
        "spec": {
            "holderIdentity": lease.holder,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": acquired,
            "renewTime": _micro(datetime.now(UTC)),
            "leaseTransitions": transitions,
        },
    }


def _held(lease: _Lease, why: str) -> Exception:
    return classified(
        ErrorType.LEASE_HELD,
        f"reconcile of {lease.environment}: {why}; retried once it is released "
        f"or {LEASE_SECONDS}s after its last renewal",
    )


def _acquire(cluster: Cluster, lease: _Lease) -> None:
    """Take the environment's lease, or raise LeaseHeld (retryable) naming its holder. Optimistic concurrency:
    of two reconciles racing for it, the server lets one write win (resourceVersion) and the other gets 409."""
    resource = cluster.resource("coordination.k8s.io/v1", "Lease")
    cluster.counter.in_lease = True
    try:
        live = cluster.get(resource, lease.name, INVENTORY_NAMESPACE)
        now = datetime.now(UTC)
        if live is None:
            _create(cluster, resource, lease, now)
        else:
            _take_over(cluster, resource, lease, live, now)
        lease.renewed = time.monotonic()
    finally:
        cluster.counter.in_lease = False


def _create(cluster: Cluster, resource: Any, lease: _Lease, now: datetime) -> None:
    """No lease yet: create it (and, on a cluster Ferry never wrote to, its namespace first)."""
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


def _take_over(cluster: Cluster, resource: Any, lease: _Lease, live: dict[str, Any], now: datetime) -> None:
    """The lease exists: write ourselves in as holder, unless another holder's term has not expired."""
    spec = live.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    expires = _expires(spec, now)
    if holder and holder != lease.holder and expires > now:
        # NB: no times in the message: the environment records each distinct error once, not every try
        raise _held(lease, f"another reconcile holds its lease ({holder})")
    lease.resource_version = live["metadata"]["resourceVersion"]
    transitions = lease.transitions = int(spec.get("leaseTransitions") or 0) + (holder != lease.holder)
    try:
        taken = cluster.call(
            "put",
            resource.path(name=lease.name, namespace=INVENTORY_NAMESPACE),
            body=_lease_body(lease, _micro(now), transitions),
        )
    except ApiException as err:
        if err.status == 409:
            raise _held(lease, "another reconcile took its lease just now") from err
        raise
    lease.resource_version = taken["metadata"]["resourceVersion"]


def _expires(spec: dict[str, Any], now: datetime) -> datetime:
    """When a lease's term ends: its last renewal (or acquisition) plus its duration; `now` when it has neither."""
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return now
    return datetime.fromisoformat(renewed.replace("Z", "+00:00")) + timedelta(
        seconds=spec.get("leaseDurationSeconds") or LEASE_SECONDS
    )


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
        renewed = cluster.call(
            "put",
            resource.path(name=lease.name, namespace=INVENTORY_NAMESPACE),
            body=_lease_body(
                lease, spec.get("acquireTime") or _micro(datetime.now(UTC)), int(spec.get("leaseTransitions") or 0)
            ),
        )
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
        # one PUT at the resourceVersion of our last write: a 409 means someone took it over meanwhile
        body = _lease_body(lease, _micro(datetime.now(UTC)), lease.transitions)
        del body["spec"]["holderIdentity"]
        cluster.call("put", resource.path(name=lease.name, namespace=INVENTORY_NAMESPACE), body=body)
    except (ApiException, *_UNAVAILABLE):
        pass
    finally:
        cluster.counter.in_lease = False


def _renew_if_due(cluster: Cluster) -> None:
    lease = cluster.counter.lease
    if lease is not None and time.monotonic() - lease.renewed > LEASE_RENEW_AFTER:
        _renew(cluster, lease)


@contextlib.contextmanager
def held(cluster: Cluster, environment: str) -> Iterator[None]:
    """The environment's lease, held (renewed before any request once due) until the block ends, then released."""
    lease = _Lease(_lease_name(environment), _holder(), environment)
    _acquire(cluster, lease)
    cluster.counter.lease = lease
    cluster.counter.before_request = lambda: _renew_if_due(cluster)
    try:
        yield
    finally:
        _release(cluster, lease)
        cluster.counter.before_request = None
