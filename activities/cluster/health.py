"""The health activity: poll the workloads of the inventory until healthy, failed or timed out."""

from __future__ import annotations

import time

from temporalio import activity

from activities.cluster.client import HEALTH_POLL_SECONDS, _classified, _only_its_own_workflow
from activities.cluster.clusters import Clients
from activities.cluster.inventory import Inventory
from ferry.health import WORKLOAD_KINDS, snapshot
from ferry.plan import ObjectId, environment_selector, inventory_ids
from ferry.reconcile import HealthInput, HealthResult, HealthState


class Health(Clients, Inventory):
    """The wait_healthy activity."""

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
                objects = [
                    o
                    for api_version, kind in kinds
                    for o in cluster.list(cluster.resource(api_version, kind), selector)
                    if ObjectId.of(o).key() in inventory
                ]
                state = snapshot(objects, input.digest)
                if activity.in_activity() and not activity.info().is_local:
                    activity.heartbeat(state.reason)
                if state.status in ("Healthy", "Failed"):
                    return HealthResult(health=state)
                if time.monotonic() >= deadline:
                    return HealthResult(
                        health=HealthState(
                            status="Failed",
                            reason=f"health timeout after {input.timeout_seconds}s: {state.reason}",
                            digest=input.digest,
                        )
                    )
                time.sleep(HEALTH_POLL_SECONDS)
