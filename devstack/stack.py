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

from devstack.gateway_api import crd_dir as gateway_crd_dir
from devstack.procs import StackError, pid_alive, port_taken, script_path, spawn, stop_pid, tcp_open, wait_healthy
from devstack.registry import Registry
from devstack.simulated_traffic import start as start_traffic
from devstack.sops import binaries as sops_binaries
from devstack.sops import identity_ready, prepare_identity
from devstack.temporal import TemporalDevServer

STACK_FILE = "devstack.json"


@dataclass
class Ports:
    temporal: int = 7233
    ui: int = 8233
    registry: int = 5001
    kube: int = 6443
    metrics: int = 9464  # the first worker's Prometheus endpoint; worker N serves on metrics + N - 1
    receiver: int = 9292  # `ferry receiver`: the registry announces pushes to it
    postgres: int = 5432  # the cluster topology's PostgreSQL
    prometheus: int = 9090  # scrapes the workers and the simulated traffic generator; rollout analysis queries it
    traffic: int = 9478  # the simulated traffic generator's /metrics (devstack/simulated_traffic.py)


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
            flag = {"temporal-ui": "--ui-port"}.get(component, f"--{component.split()[0]}-port")
            raise StackError(
                f"{component}: port 127.0.0.1:{port} is already in use; stop what holds it "
                f"(`ss -ltnp 'sport = :{port}'`) or choose another with {flag}"
            )


TOPOLOGIES = ("dev", "cluster")
CLUSTER_WORKERS = 2  # `ferry dev up --temporal cluster`'s default, and docker-compose.yml's ferry-worker replicas


def worker_names(count: int) -> list[str]:
    """devstack.json's keys for `count` workers: `worker`, `worker-2`, ..."""
    return ["worker" if i == 1 else f"worker-{i}" for i in range(1, count + 1)]


def up(
    state_dir: Path,
    ports: Ports | None = None,
    *,
    worker: bool = True,
    timeout: float = 60.0,
    temporal: str = "dev",
    workers: int | None = None,
) -> StackInfo:
    """Start every component, health-check each, write devstack.json. On any failure, stop what was
    started and raise StackError: nothing is left half-running.

    `temporal`: "dev" (the dev server, SQLite) or "cluster" (PostgreSQL, the Temporal server built from its Go
    module, the UI server; devstack/temporal_cluster.py). `workers`: how many `ferry worker` processes (default
    1 on the dev server, 2 on the cluster; none with worker=False)."""
    count = _worker_count(temporal, worker, workers)
    state_dir = state_dir.resolve()
    ports = ports or Ports()
    _preflight(state_dir, ports, temporal, count)
    state_dir.mkdir(parents=True, exist_ok=True)
    info = StackInfo(state_dir=str(state_dir))
    # the workers' age identity (kept across down/up): its recipient is what the demo and tests encrypt for
    info.components["sops"] = prepare_identity(state_dir)
    started: list[tuple[str, int]] = []
    try:
        if temporal == "cluster":
            info.components.update(_start_cluster(state_dir, ports, timeout, started))
        else:
            info.components["temporal"] = _start_dev_server(state_dir, ports, timeout, started)

        info.save(state_dir)  # the receiver reads Temporal's address from here
        _start_receiver_and_registry(info, state_dir, ports, timeout, started)

        _start_kube_and_metrics(info, state_dir, ports, count, timeout, started)
        prom = info.components["prometheus"]
        info.save(state_dir)  # the workers read their endpoints from here
        keys = Path(info.components["sops"]["identities"])
        info.components.update(_start_workers(state_dir, count, ports.metrics, timeout, started, keys, prom["url"]))
        info.save(state_dir)
        return info
    except BaseException:
        for name, pid in reversed(started):
            _stop(name, pid)
        (state_dir / STACK_FILE).unlink(missing_ok=True)
        raise


def _start_kube_and_metrics(
    info: StackInfo, state_dir: Path, ports: Ports, count: int, timeout: float, started: list[tuple[str, int]]
) -> None:
    """The control plane, then what rollouts read: Prometheus and the simulated traffic generator."""
    kube = _start_kube(state_dir, ports.kube, timeout)
    started.extend(kube["processes"].items())  # in start order; stopped in reverse: apiserver before etcd
    info.components["kube"] = kube
    info.components["prometheus"] = _start_prometheus(state_dir, ports, count, timeout, started)
    info.components["simulated_traffic"] = start_traffic(
        state_dir, Path(kube["kubeconfig"]), ports.traffic, timeout, started
    )


def _worker_count(temporal: str, worker: bool, workers: int | None) -> int:
    if temporal not in TOPOLOGIES:
        raise StackError(f"temporal: unknown topology {temporal!r}; choose one of {', '.join(TOPOLOGIES)}")
    count = 0 if not worker else (workers if workers is not None else (CLUSTER_WORKERS if temporal == "cluster" else 1))
    if count < 0:
        raise StackError("worker: --workers must be 0 or more")
    return count


def _preflight(state_dir: Path, ports: Ports, temporal: str, count: int) -> None:
    """Refuse before anything starts: a stack already running, a missing binary (cluster, sops, age-keygen), a
    port in use."""
    existing = StackInfo.load(state_dir)
    if existing is not None and any(pid_alive(c.get("pid", 0)) for c in existing.components.values()):
        raise StackError(f"stack: already running from {state_dir / STACK_FILE}; `ferry dev down` first")
    sops_binaries()  # fail before anything starts: `make sops`
    gateway_crd_dir()  # and `make gateway-api`
    if temporal == "cluster":
        from devstack.temporal_cluster import binary

        for name in ("server", "temporal-sql-tool", "temporal-ui-server"):
            binary(name)  # fail before anything starts
    metrics = {f"metrics ({name})" if i else "metrics": ports.metrics + i for i, name in enumerate(worker_names(count))}
    _check_ports(
        {
            "temporal": ports.temporal,
            "temporal-ui": ports.ui,
            "registry": ports.registry,
            "kube": ports.kube,
            "receiver": ports.receiver,
            "prometheus": ports.prometheus,
            "traffic": ports.traffic,
            **metrics,
            **({"postgres": ports.postgres} if temporal == "cluster" else {}),
        }
    )


def _start_dev_server(state_dir: Path, ports: Ports, timeout: float, started: list[tuple[str, int]]) -> dict[str, Any]:
    dev = TemporalDevServer(
        port=ports.temporal,
        ui_port=ports.ui,
        db_file=state_dir / "temporal.db",
        log_file=state_dir / "logs" / "temporal.log",
    )
    dev.start(timeout)
    assert dev.proc is not None
    started.append(("temporal", dev.proc.pid))
    # a database kept from an older Ferry lacks the search attributes added since (the dev server's
    # --search-attribute flags register them only in a new database): add what is missing
    import asyncio

    from devstack.temporal_cluster import ensure_namespace

    asyncio.run(ensure_namespace(dev.address, dev.namespace))
    return {
        "address": dev.address,
        "namespace": dev.namespace,
        "ui_url": dev.ui_url,
        "pid": dev.proc.pid,
        "db_file": str(dev.db_file),
        "topology": "dev",
    }


def _start_receiver_and_registry(
    info: StackInfo, state_dir: Path, ports: Ports, timeout: float, started: list[tuple[str, int]]
) -> None:
    from devstack.receiver import receiver_token, start_receiver

    token = receiver_token(state_dir)
    receiver = start_receiver(state_dir, ports.receiver, timeout)
    started.append(("receiver", receiver["pid"]))
    info.components["receiver"] = receiver
    registry = Registry(
        port=ports.registry, root=state_dir / "registry", notify_url=receiver["hook"], notify_token=token
    )
    registry.start(timeout)
    assert registry.proc is not None
    started.append(("registry", registry.proc.pid))
    info.components["registry"] = {
        "host": registry.host,
        "pid": registry.proc.pid,
        "storage": str(registry.root / "data"),
    }


def _start_cluster(
    state_dir: Path, ports: Ports, timeout: float, started: list[tuple[str, int]]
) -> dict[str, dict[str, Any]]:
    """PostgreSQL, the schema, the Temporal server, the namespace and search attributes, the UI server."""
    from devstack.postgres import Postgres
    from devstack.temporal_cluster import SERVER_VERSION, UI_VERSION, TemporalCluster

    postgres = Postgres(root=state_dir / "postgresql", port=ports.postgres)
    postgres.start(timeout)
    assert postgres.proc is not None
    started.append(("postgresql", postgres.proc.pid))
    cluster = TemporalCluster(root=state_dir / "temporal", port=ports.temporal, ui_port=ports.ui, postgres=postgres)
    cluster.start(timeout)
    pids = cluster.pids()
    started.extend(pids.items())
    return {
        "postgresql": {
            "address": postgres.address,
            "pid": postgres.proc.pid,
            "data": str(postgres.data),
            "log": str(postgres.log_file),
        },
        "temporal": {
            "address": cluster.address,
            "namespace": cluster.namespace,
            "ui_url": cluster.ui_url,
            "pid": pids["temporal-server"],
            "topology": "cluster",
            "version": SERVER_VERSION,
            "config": str(cluster.config_file),
            "log": str(cluster.logs / "temporal-server.log"),
        },
        "temporal-ui": {
            "address": f"127.0.0.1:{ports.ui}",
            "url": cluster.ui_url,
            "pid": pids["temporal-ui"],
            "version": UI_VERSION,
            "log": str(cluster.logs / "temporal-ui.log"),
        },
    }


def _start_prometheus(
    state_dir: Path, ports: Ports, count: int, timeout: float, started: list[tuple[str, int]]
) -> dict[str, Any]:
    """Prometheus scraping every worker and the simulated traffic generator (a down target until it runs)."""
    from devstack import prometheus

    traffic = ports.traffic
    targets = prometheus.stack_targets([ports.metrics + i for i in range(count)], traffic)
    process = prometheus.start(state_dir, ports.prometheus, targets, timeout=timeout)
    started.append(("prometheus", process.pid))
    return process.record()


def _start_workers(
    state_dir: Path,
    count: int,
    metrics_port: int,
    timeout: float,
    started: list[tuple[str, int]],
    identities: Path,
    prometheus_url: str,
) -> dict[str, dict[str, Any]]:
    """`count` ferry workers on task queue `ferry`, started together, each with its own metrics port and (with
    more than one) its own artifact cache: the cache is safe across threads of one worker, not across
    processes, as it would not be across machines. Every worker decrypts with the stack's age identity
    (FERRY_SOPS_AGE_KEYS, set over the caller's: devstack.json names that identity's recipient)."""
    logs = state_dir / "logs"
    procs = {}
    for i, name in enumerate(worker_names(count)):
        ready = state_dir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        env = {
            "FERRY_ALERT_PROVIDERS": str(state_dir / "alert-providers.yaml"),
            **os.environ,
            "FERRY_PROMETHEUS_BIND": f"127.0.0.1:{metrics_port + i}",
            "FERRY_SOPS_AGE_KEYS": str(identities),
            "FERRY_PROMETHEUS_URL": prometheus_url,
        }
        if count > 1:
            env["FERRY_CACHE_DIR"] = str(state_dir / "cache" / name)
        proc = spawn(
            [sys.executable, "-m", "cli.main", "worker", "--state-dir", str(state_dir), "--ready-file", str(ready)],
            logs / f"{name}.log",
            env=env,
        )
        started.append((name, proc.pid))
        procs[name] = (proc, ready)
    components = {}
    for i, (name, (proc, ready)) in enumerate(procs.items()):
        wait_healthy(name, proc, ready.is_file, timeout, logs / f"{name}.log")
        components[name] = {
            "pid": proc.pid,
            "task_queue": "ferry",
            "log": str(logs / f"{name}.log"),
            "metrics": f"http://127.0.0.1:{metrics_port + i}/metrics",
        }
    return components


def _stop(name: str, pid: int) -> None:
    if name == "postgresql":
        from devstack.postgres import stop_postgres

        stop_postgres(pid)
    else:
        stop_pid(pid, timeout=20)


def _start_kube(state_dir: Path, port: int, timeout: float) -> dict[str, Any]:
    """The real control plane (etcd, kube-apiserver, kube-controller-manager) and the simulated
    workload-status controller, under <state>/kube."""
    from devstack.kube.controlplane import ControlPlane

    cluster = ControlPlane(root=state_dir / "kube", port=port)
    cluster.start(timeout)
    kubeconfig = state_dir / "kubeconfig"
    shutil.copyfile(cluster.kubeconfig(), kubeconfig)
    kubeconfig.chmod(0o600)
    # the worker's clusters file (FERRY_CLUSTERS): environments name `default`, the worker's own
    # least-privileged identity; no auth plugin is allowed
    clusters = state_dir / "clusters.yaml"
    clusters.write_text(
        json.dumps({"clusters": {"default": {"kubeconfig": str(cluster.worker_kubeconfig)}}}, indent=2) + "\n"
    )
    return {
        "server": cluster.url,
        "kubeconfig": str(kubeconfig),
        "worker_kubeconfig": str(cluster.worker_kubeconfig),
        "clusters": str(clusters),
        "pid": cluster.procs["kube-apiserver"].pid,
        "processes": cluster.pids(),
        "logs": str(cluster.logs),
        "data": str(cluster.root / "etcd"),
    }


def kubectl_server_version(kubeconfig: Path) -> str:
    """kubectl's own "Server Version: …" line for the cluster, proof that a real API server answers."""
    kubectl = script_path("kubectl") or shutil.which("kubectl")
    if kubectl is None:
        return "Server Version: (kubectl is missing; run `make setup`)"
    out = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "version"], capture_output=True, text=True, timeout=30
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("Server Version")]
    return lines[0] if lines else f"Server Version: unknown ({(out.stderr or out.stdout).strip()[:200]})"


# Stop order: workers, then what they use (Prometheus and the simulated traffic generator before the control plane it
# lists); the UI before the server, the server before its database.
STOP_ORDER = (
    "prometheus",
    "simulated_traffic",
    "kube",
    "registry",
    "receiver",
    "temporal-ui",
    "temporal",
    "postgresql",
)


def down(state_dir: Path) -> list[str]:
    """Stop exactly the processes devstack.json names (workers first), then forget them."""
    state_dir = state_dir.resolve()
    info = StackInfo.load(state_dir)
    if info is None:
        return []
    stopped: list[str] = []
    names = [n for n in info.components if n.startswith("worker")]
    names += [n for n in STOP_ORDER if n in info.components]
    names += [n for n in info.components if n not in names]
    for name in names:
        component = info.components[name]
        if component.get("processes"):
            from devstack.kube.controlplane import stop_processes

            if stop_processes(component["processes"]):
                stopped.append(name)
        elif component.get("pid"):
            if pid_alive(component["pid"]):
                _stop(name, component["pid"])
                stopped.append(name)
    (state_dir / STACK_FILE).unlink(missing_ok=True)
    for ready in state_dir.glob("worker*.ready"):
        ready.unlink(missing_ok=True)
    return stopped


def describe_topology(components: dict[str, Any]) -> str:
    """`ferry dev up`'s lines for what the dev-server stack does not have (PostgreSQL, the UI server, more
    workers: "" on the dev server with one worker), and Prometheus."""
    lines = []
    if "postgresql" in components:
        pg = components["postgresql"]
        temporal = components.get("temporal", {})
        lines.append(
            f"postgres  {pg['address']}  data {pg['data']}  (Temporal {temporal.get('version')} on it, "
            f"pid {temporal.get('pid')})"
        )
    if "temporal-ui" in components:
        ui = components["temporal-ui"]
        lines.append(f"ui        {ui['url']}  (Temporal UI server {ui.get('version')}, pid {ui['pid']})")
    if "prometheus" in components:
        lines.append(f"prometheus {components['prometheus']['url']}  (scrapes the workers and the traffic generator)")
    for name, w in components.items():
        if name.startswith("worker-"):
            lines.append(f"{name:<9} pid {w['pid']}  task queue {w['task_queue']}  metrics {w.get('metrics', '-')}")
    return "\n".join(lines)


def status(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each component as up or down, with its endpoint."""
    info = StackInfo.load(state_dir.resolve())
    if info is None:
        return {}
    report: dict[str, dict[str, Any]] = {}
    for name, component in info.components.items():
        if name == "sops":  # no process: the identity file and the binaries
            report[name] = {"up": identity_ready(component), **component}
            continue
        alive = pid_alive(int(component.get("pid", 0))) if component.get("pid") else False
        endpoint = component.get("address") or component.get("host") or component.get("server")
        if alive and endpoint and ":" in str(endpoint):
            port = int(str(endpoint).rsplit(":", 1)[1].split("/")[0])
            alive = tcp_open(port)
        report[name] = {"up": alive, **component}
    return report
