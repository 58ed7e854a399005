"""`ferry dev up | status | down` as a user runs it: real processes, nothing left behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.kube.controlplane import kube_version
from devstack.procs import free_port, pid_alive, script_path

FERRY = [sys.executable, "-m", "cli.main"]


def _ferry(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FERRY, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _ports() -> list[str]:
    return [
        "--temporal-port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        "--registry-port",
        str(free_port()),
        "--kube-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--receiver-port",
        str(free_port()),
        "--prometheus-port",
        str(free_port()),
        "--traffic-port",
        str(free_port()),
    ]


def test_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = _ferry("dev", "up", "--state-dir", str(state), "--json", *_ports())
    assert up.returncode == 0, up.stderr
    info = json.loads((state / "devstack.json").read_text())
    assert info == json.loads(up.stdout)
    pids = [c["pid"] for k, c in info.items() if isinstance(c, dict) and "pid" in c]
    assert {"temporal", "registry", "kube", "worker", "receiver", "prometheus"} <= set(info)
    import yaml

    # the registry announces pushes to the receiver, with the shared secret the receiver checks
    config = yaml.safe_load((state / "registry" / "config.yml").read_text())
    endpoint = config["notifications"]["endpoints"][0]
    assert endpoint["url"] == info["receiver"]["hook"]
    assert endpoint["headers"]["Authorization"] == [f"Bearer {(state / 'receiver.token').read_text().strip()}"]
    import kubernetes

    api = kubernetes.config.new_client_from_config(info["kube"]["kubeconfig"])
    core = kubernetes.client.CoreV1Api(api)
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "ferry-system"} <= names
    # the worker's clusters file: environments name `default`, the worker's own identity, no plugin allowed
    clusters = json.loads(Path(info["kube"]["clusters"]).read_text())
    assert clusters == {"clusters": {"default": {"kubeconfig": info["kube"]["worker_kubeconfig"]}}}
    assert set(info["kube"]["processes"]) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "simulated-controller",
    }
    kubectl = [script_path("kubectl") or "kubectl", "--kubeconfig", info["kube"]["kubeconfig"]]
    version = subprocess.run([*kubectl, "version"], capture_output=True, text=True, timeout=60)
    assert f"Server Version: {kube_version()}" in version.stdout, version.stderr
    openapi = subprocess.run([*kubectl, "get", "--raw", "/openapi/v3"], capture_output=True, text=True, timeout=60)
    assert "apis/apps/v1" in json.loads(openapi.stdout)["paths"]
    core.create_namespaced_config_map("default", {"metadata": {"name": "survivor"}, "data": {"k": "v"}})
    assert info["temporal"]["ui_url"].startswith("http://127.0.0.1:")
    assert all(pid_alive(pid) for pid in pids)
    import urllib.request

    with urllib.request.urlopen(info["worker"]["metrics"], timeout=10) as scraped:  # the worker's Prometheus endpoint
        assert "temporal_" in scraped.read().decode()
    _prometheus_scrapes_the_worker(info)

    status = _ferry("dev", "status", "--state-dir", str(state), "--json")
    assert status.returncode == 0, status.stdout
    assert all(c["up"] for c in json.loads(status.stdout).values())

    # the stack survives a restart of Temporal: the SQLite file is under the state dir
    assert Path(info["temporal"]["db_file"]).is_file()

    down = _ferry("dev", "down", "--state-dir", str(state))
    assert down.returncode == 0
    assert not any(pid_alive(pid) for pid in pids)
    assert not (state / "devstack.json").exists()
    after = _ferry("dev", "status", "--state-dir", str(state))
    assert after.returncode == 1 and "not started" in after.stdout

    # the cluster's state survives down/up: etcd's data and the certificates are under the state dir
    again = _ferry("dev", "up", "--state-dir", str(state), "--no-worker", *_ports())
    try:
        assert again.returncode == 0, again.stderr
        assert f"Server Version: {kube_version()}" in again.stdout
        kubeconfig = json.loads((state / "devstack.json").read_text())["kube"]["kubeconfig"]
        survivor = kubernetes.client.CoreV1Api(
            kubernetes.config.new_client_from_config(kubeconfig)
        ).read_namespaced_config_map("survivor", "default")
        assert survivor.data == {"k": "v"}
    finally:
        assert _ferry("dev", "down", "--state-dir", str(state)).returncode == 0


def _prometheus_scrapes_the_worker(info: dict[str, Any]) -> None:
    """Prometheus answers /-/ready, scrapes the worker (and the traffic generator's port, a down target without
    it), and the worker was told where it is (FERRY_PROMETHEUS_URL)."""
    import urllib.request

    prom = info["prometheus"]
    assert set(prom) >= {"url", "pid", "port"} and prom["url"] == f"http://127.0.0.1:{prom['port']}"
    with urllib.request.urlopen(f"{prom['url']}/-/ready", timeout=10) as ready:
        assert ready.status == 200
    worker = info["worker"]["metrics"].removeprefix("http://").removesuffix("/metrics")
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{prom['url']}/api/v1/targets", timeout=10) as answer:
            targets = {t["labels"]["instance"]: t["health"] for t in json.load(answer)["data"]["activeTargets"]}
        if targets.get(worker) == "up" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert targets.get(worker) == "up", targets
    assert len(targets) == 2, targets  # and the simulated traffic generator's port (Ports.traffic)
    environ = Path(f"/proc/{info['worker']['pid']}/environ").read_bytes().split(b"\0")
    assert f"FERRY_PROMETHEUS_URL={prom['url']}".encode() in environ


def test_missing_control_plane_is_one_clear_line_and_nothing_half_running(tmp_path: Path) -> None:
    env = {**os.environ, "FERRY_KUBE_DIR": str(tmp_path / "not-built")}
    result = _ferry("dev", "up", "--state-dir", str(tmp_path / "state"), *_ports(), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: kube: etcd is not built; run `make setup`"), lines
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "state") not in out  # Temporal and the registry were stopped again


def test_taken_port_names_component_and_starts_nothing(tmp_path: Path) -> None:
    ports = _ports()
    taken = int(ports[ports.index("--registry-port") + 1])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        result = _ferry("dev", "up", "--state-dir", str(tmp_path), *ports)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: registry: port 127.0.0.1:")
    assert "--registry-port" in lines[0]
    assert not (tmp_path / "devstack.json").exists()


def test_missing_registry_binary_is_one_clear_line_and_nothing_half_running(tmp_path: Path) -> None:
    # PATH without docker-registry; the temporal binary is found next to the interpreter.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    result = _ferry("dev", "up", "--state-dir", str(tmp_path), *_ports(), env=env)
    assert result.returncode == 1
    assert "registry: the docker-registry binary is missing" in result.stderr
    assert "apt-get install docker-registry" in result.stderr
    # Temporal had started first; it must have been stopped again.
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "temporal.db") not in out


@pytest.mark.parametrize("cmd", [["dev", "status"], ["dev", "down"]])
def test_commands_without_stack(tmp_path: Path, cmd: list[str]) -> None:
    result = _ferry(*cmd, "--state-dir", str(tmp_path))
    assert "not started" in result.stdout or "nothing was running" in result.stdout
