"""The pinned Gateway API CRDs (`make gateway-api`) on the real control plane: installed, Established, idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from devstack import gateway_api as bundle
from devstack.procs import StackError

HTTPROUTES = "httproutes.gateway.networking.k8s.io"


def test_the_standard_crds_are_established_and_httproute_v1_is_served(gateway_api: list[str], kube_api: Any) -> None:
    assert HTTPROUTES in gateway_api and len(gateway_api) == len(set(gateway_api)) >= 5
    ext = kubernetes.client.ApiextensionsV1Api(kube_api)
    route = ext.read_custom_resource_definition(HTTPROUTES)
    assert any(v.name == "v1" and v.served and v.storage for v in route.spec.versions)
    assert route.metadata.annotations["gateway.networking.k8s.io/bundle-version"] == bundle.VERSION
    # the bundle's admission policy is left out on purpose (Makefile, gateway-api)
    policies = kubernetes.client.AdmissionregistrationV1Api(kube_api).list_validating_admission_policy()
    assert not [p.metadata.name for p in policies.items if p.metadata.name.endswith(bundle.GROUP)]


def test_install_again_changes_nothing(gateway_api: list[str], kube_server: Any, kube_api: Any) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(kube_api)
    before = {n: ext.read_custom_resource_definition(n).metadata.resource_version for n in gateway_api}
    assert bundle.install(kube_server.kubeconfig) == gateway_api
    after = {n: ext.read_custom_resource_definition(n).metadata.resource_version for n in gateway_api}
    assert after == before


def test_a_missing_bundle_names_the_make_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(StackError, match="make gateway-api"):
        bundle.crd_dir()


def test_a_file_that_is_not_a_gateway_crd_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"{bundle.GROUP}_x.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(StackError, match="something other than"):
        bundle.crd_documents(tmp_path)
