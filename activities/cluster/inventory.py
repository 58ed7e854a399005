"""The inventory: a ConfigMap per environment in INVENTORY_NAMESPACE listing what its last reconcile applied."""

from __future__ import annotations

from typing import Any

from activities.cluster.client import INVENTORY_NAMESPACE, Cluster, _ensure_namespace
from ferry.plan import ENVIRONMENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, inventory_data, inventory_entries


def _inventory_name(environment: str) -> str:
    return f"ferry-inventory-{environment}"


class Inventory:
    """Read and write an environment's inventory ConfigMap."""

    @staticmethod
    def _read_inventory(cluster: Cluster, environment: str) -> tuple[dict[str, str], dict[str, Any] | None]:
        """The previous inventory (object key -> apiVersion) and its ConfigMap, or ({}, None)."""
        live = cluster.get(cluster.resource("v1", "ConfigMap"), _inventory_name(environment), INVENTORY_NAMESPACE)
        return (inventory_entries(live.get("data")), live) if live is not None else ({}, None)

    @staticmethod
    def _inventory_differs(
        entries: dict[str, str], digest: str, version: str, previous: dict[str, Any] | None, release: str = ""
    ) -> bool:
        return previous is None or (previous.get("data") or {}) != inventory_data(entries, digest, version, release)

    def _write_inventory(
        self,
        cluster: Cluster,
        environment: str,
        entries: dict[str, str],
        digest: str,
        version: str,
        previous: dict[str, Any] | None,
        release: str = "",
    ) -> bool:
        if not self._inventory_differs(entries, digest, version, previous, release):
            return False  # a no-op reconcile writes nothing
        _ensure_namespace(cluster)
        cluster.apply(
            cluster.resource("v1", "ConfigMap"),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": _inventory_name(environment),
                    "namespace": INVENTORY_NAMESPACE,
                    "labels": {ENVIRONMENT_LABEL: environment, MANAGED_BY_LABEL: MANAGED_BY},
                },
                "data": inventory_data(entries, digest, version, release),
            },
        )
        return True

    # ------------------------------------------------------------------------------------ reconcile
