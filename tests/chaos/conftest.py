"""The cluster topology for the fault tier (`make chaos`): PostgreSQL, the Temporal server built from its Go module
(`make temporal-server`), an own registry and an own Kubernetes control plane (this tier stops them), and `ferry
worker` processes — every one a real process on free ports that dies with the test session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devstack.kube.session import KubeServer
from devstack.procs import free_port, spawn, stop_pid, wait_healthy
from devstack.registry import Registry
from devstack.temporal_cluster import TemporalCluster, binaries_dir, built, throwaway_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalCluster]:
    """PostgreSQL and the Temporal server on it (no UI), schema set up, namespace and search attributes made."""
    # NB: `make chaos` builds the server first; a missing one is a failure, never a skip.
    assert built(), f"the Temporal server is not built in {binaries_dir()}: run `make temporal-server`"
    with throwaway_cluster(tmp_path_factory.mktemp("topology"), log_level="info") as temporal:
        yield temporal


@pytest.fixture(scope="module")
async def cluster_client(cluster: TemporalCluster) -> AsyncIterator[Client]:
    yield await Client.connect(cluster.address, data_converter=pydantic_data_converter)


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(port=free_port(), root=tmp_path_factory.mktemp("chaos-registry"), throwaway=True)
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def own_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    server = KubeServer(tmp_path_factory.mktemp("chaos-kube"), rollout_delay=0.3).start()
    yield server
    server.close()


@dataclass
class Workers:
    """`ferry worker` processes on one task queue, as `ferry dev up` runs them (each its own cache and log)."""

    root: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        ready = self.root / f"{name}.ready"
        ready.unlink(missing_ok=True)
        env = {**self.env, "FERRY_CACHE_DIR": str(self.root / "cache" / name)}
        proc = spawn([sys.executable, "-m", "cli.main", "worker", "--ready-file", str(ready)],
                     self.root / f"{name}.log", env=env, die_with_parent=True)
        self.procs[name] = proc
        wait_healthy(name, proc, ready.is_file, timeout, self.root / f"{name}.log")
        return proc

    def kill(self, name: str) -> None:
        """kill -9: no graceful shutdown, running activities and cached workflows lost with it."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_pid(proc.pid, timeout=25)
            proc.wait()


def worker_env(address: str, registry: Registry, kube: KubeServer, task_queue: str, root: Path) -> dict[str, str]:
    """A `ferry worker`'s environment: this Temporal frontend, registry and cluster, no devstack.json."""
    return {**os.environ, "FERRY_TEMPORAL_ADDRESS": address, "FERRY_TEMPORAL_NAMESPACE": "default",
            "FERRY_TASK_QUEUE": task_queue, "FERRY_REGISTRY": registry.host, "FERRY_REGISTRY_INSECURE": registry.host,
            "FERRY_KUBECONFIG": str(kube.worker_kubeconfig), "FERRY_STATE_DIR": str(root / "no-stack"),
            "FERRY_OTEL_EXPORTER": "none"}


async def eventually(check: object, timeout: float, what: str, every: float = 1.0) -> None:
    """Await `check()` (a coroutine function -> bool) until true; fail naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:.0f}s")
        await asyncio.sleep(every)
