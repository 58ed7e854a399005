"""`ferry dev up` (devstack.stack.up, what the command runs) with the Gateway API CRDs and the SIMULATED traffic
generator: recorded in devstack.json, the CRDs Established, the generator's /metrics serving, stopped by `down`
before the control plane. NB: up() is called directly, on free ports, because the CLI has no --traffic-port yet."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes

from devstack.gateway_api import VERSION
from devstack.procs import free_port, pid_alive
from devstack.stack import Ports, down, up


def test_dev_up_records_simulated_traffic_and_establishes_the_gateway_api_crds(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ports = Ports(
        temporal=free_port(),
        ui=free_port(),
        registry=free_port(),
        kube=free_port(),
        metrics=free_port(),
        receiver=free_port(),
        traffic=free_port(),
        prometheus=free_port(),
    )
    traffic: dict[str, Any] = {"pid": 0}
    try:
        up(state, ports, worker=False, timeout=120)
        info = json.loads((state / "devstack.json").read_text())
        traffic = info["simulated_traffic"]
        assert traffic["port"] == ports.traffic and traffic["url"] == f"http://127.0.0.1:{ports.traffic}/metrics"
        assert pid_alive(traffic["pid"])
        assert "simulated" in Path(f"/proc/{traffic['pid']}/cmdline").read_bytes().decode()
        body = urllib.request.urlopen(traffic["url"], timeout=5).read().decode()
        assert 'ferry_simulated_traffic_info{simulated="true"} 1' in body
        assert "simulated traffic generator" in Path(traffic["log"]).read_text()
        api = kubernetes.config.new_client_from_config(info["kube"]["kubeconfig"])
        crds = kubernetes.client.ApiextensionsV1Api(api).list_custom_resource_definition().items
        gateway = {c.metadata.name: c for c in crds if c.spec.group == "gateway.networking.k8s.io"}
        assert "httproutes.gateway.networking.k8s.io" in gateway and len(gateway) == traffic["gateway_api_crds"]
        for crd in gateway.values():
            assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
            assert crd.metadata.annotations["gateway.networking.k8s.io/bundle-version"] == VERSION
    finally:
        stopped = down(state)
    assert stopped.index("simulated_traffic") < stopped.index("kube")
    assert not pid_alive(traffic["pid"])
