"""A throwaway cluster for tests and benchmarks: the real control plane on free ports under a temporary
directory, and the fault proxy in front of it for the worker's traffic."""

from __future__ import annotations

from pathlib import Path

from devstack.kube.controlplane import ControlPlane
from devstack.kube.faultproxy import FaultProxy
from devstack.kube.kubeconfig import write_kubeconfig
from devstack.kube.pki import WORKER
from devstack.procs import free_port


class KubeServer:
    """``kubeconfig``: the admin (system:masters), straight to the API server — what tests use to look.
    ``worker_kubeconfig``: user ferry-worker (bound to examples/rbac/ferry-worker.yaml only), through the
    fault proxy — what the worker under test uses, so ``inject_faults`` is an outage for the worker."""

    def __init__(self, root: Path, rollout_delay: float = 0.3) -> None:
        # throwaway: a killed test session must not leave its cluster running (4 processes, ~400 MB).
        self.cluster = ControlPlane(root=root, port=free_port(), rollout_delay=rollout_delay, throwaway=True)
        self.proxy: FaultProxy | None = None

    def start(self, timeout: float = 120.0) -> KubeServer:
        self.cluster.start(timeout)
        self.proxy = FaultProxy(self.cluster.port).start()
        write_kubeconfig(self.worker_kubeconfig, self.proxy.url, self.cluster.pki, WORKER)
        return self

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.cluster.stop()

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig()

    @property
    def worker_kubeconfig(self) -> Path:
        return self.cluster.root / "ferry-worker-via-proxy.kubeconfig"

    def inject_faults(self, count: int, mode: str = "error") -> None:
        assert self.proxy is not None
        self.proxy.inject_faults(count, mode)

    @property
    def hang_seconds(self) -> float:
        assert self.proxy is not None
        return self.proxy.hang_seconds

    @hang_seconds.setter
    def hang_seconds(self, value: float) -> None:
        assert self.proxy is not None
        self.proxy.hang_seconds = value

    def allow_worker(self, api_group: str) -> None:
        """Grant the worker the custom resources of `api_group`, as a cluster admin would for a CRD its
        bundles ship (the commented example in examples/rbac/ferry-worker.yaml)."""
        import kubernetes

        api = kubernetes.config.new_client_from_config(str(self.kubeconfig))
        try:
            dyn = kubernetes.dynamic.DynamicClient(api)
            name = f"ferry-worker-{api_group}"
            dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole").create(
                body={
                    "metadata": {"name": name},
                    "rules": [
                        {
                            "apiGroups": [api_group],
                            "resources": ["*"],
                            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                        }
                    ],
                }
            )
            dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding").create(
                body={
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": WORKER.name}],
                }
            )
        finally:
            api.close()
