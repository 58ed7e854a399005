"""`ferry dev up | down | status`: the whole local stack as child processes, recorded in devstack.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.procs import StackError, pid_alive, port_taken, script_path, spawn, stop_pid, tcp_open, wait_healthy
from devstack.registry import Registry
from devstack.temporal import TemporalDevServer

STACK_FILE = "devstack.json"


@dataclass
class Ports:
    temporal: int = 7233
    ui: int = 8233
    registry: int = 5001
    kube: int = 6443
    metrics: int = 9464  # the worker's Prometheus endpoint
    receiver: int = 9292  # `ferry receiver`: the registry announces pushes to it


@dataclass
class StackInfo:
    """What devstack.json holds: every endpoint, and the PIDs `down` will stop."""

    state_dir: str
    components: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"state_dir": self.state_dir, **self.components}

    @classmethod
    def load(cls, state_dir: Path) -> StackInfo | None:
        path = state_dir / STACK_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(state_dir=data.pop("state_dir", str(state_dir)), components=data)

    def save(self, state_dir: Path) -> Path:
        path = state_dir / STACK_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


def _check_ports(ports: dict[str, int]) -> None:
    for component, port in ports.items():
        if port_taken(port):
            flag = {"temporal-ui": "--ui-port"}.get(component, f"--{component}-port")
            raise StackError(
                f"{component}: port 127.0.0.1:{port} is already in use; stop what holds it "
                f"(`ss -ltnp 'sport = :{port}'`) or choose another with {flag}"
            )


def up(state_dir: Path, ports: Ports | None = None, *, worker: bool = True, timeout: float = 60.0) -> StackInfo:
    """Start every component, health-check each, write devstack.json. On any failure, stop what was
    started and raise StackError: nothing is left half-running."""
    state_dir = state_dir.resolve()
    existing = StackInfo.load(state_dir)
    if existing is not None and any(pid_alive(c.get("pid", 0)) for c in existing.components.values()):
        raise StackError(f"stack: already running from {state_dir / STACK_FILE}; `ferry dev down` first")
    ports = ports or Ports()
    _check_ports({"temporal": ports.temporal, "temporal-ui": ports.ui, "registry": ports.registry,
                  "kube": ports.kube, "receiver": ports.receiver, **({"metrics": ports.metrics} if worker else {})})
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = state_dir / "logs"
    info = StackInfo(state_dir=str(state_dir))
    started: list[int] = []
    try:
        temporal = TemporalDevServer(port=ports.temporal, ui_port=ports.ui, db_file=state_dir / "temporal.db",
                                     log_file=logs / "temporal.log")
        temporal.start(timeout)
        assert temporal.proc is not None
        started.append(temporal.proc.pid)
        info.components["temporal"] = {"address": temporal.address, "namespace": temporal.namespace,
                                       "ui_url": temporal.ui_url, "pid": temporal.proc.pid,
                                       "db_file": str(temporal.db_file)}

        info.save(state_dir)  # the receiver reads Temporal's address from here
        from devstack.receiver import receiver_token, start_receiver

        token = receiver_token(state_dir)
        receiver = start_receiver(state_dir, ports.receiver, timeout)
        started.append(receiver["pid"])
        info.components["receiver"] = receiver
        registry = Registry(port=ports.registry, root=state_dir / "registry", notify_url=receiver["hook"],
                            notify_token=token)
        registry.start(timeout)
        assert registry.proc is not None
        started.append(registry.proc.pid)
        info.components["registry"] = {"host": registry.host, "pid": registry.proc.pid,
                                       "storage": str(registry.root / "data")}

        kube = _start_kube(state_dir, ports.kube, timeout)
        started.extend(kube["processes"].values())  # in start order; stopped in reverse: apiserver before etcd
        info.components["kube"] = kube

        info.save(state_dir)  # the worker reads its endpoints from here
        if worker:
            ready = state_dir / "worker.ready"
            ready.unlink(missing_ok=True)
            metrics = f"127.0.0.1:{ports.metrics}"
            proc = spawn([sys.executable, "-m", "cli.main", "worker", "--state-dir", str(state_dir),
                          "--ready-file", str(ready)], logs / "worker.log",
                         env={"FERRY_ALERT_PROVIDERS": str(state_dir / "alert-providers.yaml"), **os.environ,
                              "FERRY_PROMETHEUS_BIND": metrics})
            started.append(proc.pid)
            wait_healthy("worker", proc, ready.is_file, timeout, logs / "worker.log")
            info.components["worker"] = {"pid": proc.pid, "task_queue": "ferry", "log": str(logs / "worker.log"),
                                         "metrics": f"http://{metrics}/metrics"}
        info.save(state_dir)
        return info
    except BaseException:
        for pid in reversed(started):
            stop_pid(pid)
        (state_dir / STACK_FILE).unlink(missing_ok=True)
        raise


def _start_kube(state_dir: Path, port: int, timeout: float) -> dict[str, Any]:
    """The real control plane (etcd, kube-apiserver, kube-controller-manager) and the simulated
    workload-status controller, under <state>/kube."""
    from devstack.kube.controlplane import ControlPlane

    cluster = ControlPlane(root=state_dir / "kube", port=port)
    cluster.start(timeout)
    kubeconfig = state_dir / "kubeconfig"
    shutil.copyfile(cluster.kubeconfig(), kubeconfig)
    kubeconfig.chmod(0o600)
    # NB: the worker's clusters file (FERRY_CLUSTERS): environments name `default`, the worker's own
    # least-privileged identity; no auth plugin is allowed
    clusters = state_dir / "clusters.yaml"
    clusters.write_text(json.dumps({"clusters": {"default": {"kubeconfig": str(cluster.worker_kubeconfig)}}},
                                   indent=2) + "\n")
    return {"server": cluster.url, "kubeconfig": str(kubeconfig), "worker_kubeconfig": str(cluster.worker_kubeconfig),
            "clusters": str(clusters),
            "pid": cluster.procs["kube-apiserver"].pid, "processes": cluster.pids(),
            "logs": str(cluster.logs), "data": str(cluster.root / "etcd")}


def kubectl_server_version(kubeconfig: Path) -> str:
    """kubectl's own "Server Version: …" line for the cluster, proof that a real API server answers."""
    kubectl = script_path("kubectl") or shutil.which("kubectl")
    if kubectl is None:
        return "Server Version: (kubectl is missing; run `make setup`)"
    out = subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "version"], capture_output=True, text=True,
                         timeout=30)
    lines = [line for line in out.stdout.splitlines() if line.startswith("Server Version")]
    return lines[0] if lines else f"Server Version: unknown ({(out.stderr or out.stdout).strip()[:200]})"


def down(state_dir: Path) -> list[str]:
    """Stop exactly the processes devstack.json names (worker first), then forget them."""
    state_dir = state_dir.resolve()
    info = StackInfo.load(state_dir)
    if info is None:
        return []
    stopped: list[str] = []
    for name in ("worker", "kube", "registry", "receiver", "temporal"):
        component = info.components.get(name)
        if component and component.get("processes"):
            from devstack.kube.controlplane import stop_processes

            if stop_processes(component["processes"]):
                stopped.append(name)
        elif component and component.get("pid"):
            if pid_alive(component["pid"]):
                stop_pid(component["pid"])
                stopped.append(name)
    (state_dir / STACK_FILE).unlink(missing_ok=True)
    (state_dir / "worker.ready").unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each component as up or down, with its endpoint."""
    info = StackInfo.load(state_dir.resolve())
    if info is None:
        return {}
    report: dict[str, dict[str, Any]] = {}
    for name, component in info.components.items():
        alive = pid_alive(int(component.get("pid", 0))) if component.get("pid") else False
        endpoint = component.get("address") or component.get("host") or component.get("server")
        if alive and endpoint and ":" in str(endpoint):
            port = int(str(endpoint).rsplit(":", 1)[1].split("/")[0])
            alive = tcp_open(port)
        report[name] = {"up": alive, **component}
    return report
