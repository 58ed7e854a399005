"""The cluster topology for the fault tier (`make chaos`): PostgreSQL, the Temporal server built from its Go module
(`make temporal-server`), an own registry and an own Kubernetes control plane (this tier stops them), and `ferry
worker` processes (tests/kit/processes.py) — every one a real process on free ports that dies with the test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devstack.kube.session import KubeServer
from devstack.procs import free_port
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
