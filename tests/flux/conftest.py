"""The Flux controllers (built through `make flux` when missing: never skipped) against the session's cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.flux.controllers import Flux


@pytest.fixture(scope="session")
def flux(kube_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    """source-controller and kustomize-controller out of cluster, as the cluster admin, artifacts on loopback."""
    controllers = Flux(root=tmp_path_factory.mktemp("flux"), kubeconfig=kube_server.kubeconfig).start()
    yield controllers
    controllers.stop()


@pytest.fixture
def kube_dyn(kube_api: Any) -> Any:
    import kubernetes

    return kubernetes.dynamic.DynamicClient(kube_api)
