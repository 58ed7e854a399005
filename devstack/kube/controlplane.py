"""The local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager built from Kubernetes'
own Go modules (devstack/controlplane, `make setup`), plus the simulated workload-status controller.

Start order etcd -> kube-apiserver (/readyz) -> RBAC bootstrap -> kube-controller-manager (proven by the
`default` ServiceAccount it creates) -> simulated controller; stop order is the reverse, so the API server
always stops before etcd (the other way round it waits ~30 s for etcd before exiting). Certificates, keys
and etcd's data live under ``<state>/kube``, so the cluster and its objects survive a restart.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.kube.kubeconfig import write_kubeconfig
from devstack.kube.pki import ADMIN, CONTROLLER_MANAGER, SIMULATED, WORKER, Client, Pki
from devstack.procs import StackError, free_port, port_taken, spawn, stop_pid, wait_healthy

GO_MOD = Path(__file__).resolve().parents[1] / "controlplane" / "go.mod"
WORKER_RBAC = Path(__file__).resolve().parents[2] / "examples" / "rbac" / "ferry-worker.yaml"
# Room for the benchmarks' thousands of Services (a /24 is full at 254: "failed to allocate a serviceIP").
SERVICE_CIDR = "10.96.0.0/12"
BOOTSTRAP_NAMESPACES = ("ferry-system",)
# Controllers that need no kubelet. The workload controllers (deployment, replicaset, statefulset, daemonset,
# job) are left out on purpose: without kubelets no pod ever runs, so they would report every rollout as
# unavailable; the simulated controller writes those statuses instead.
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
)
BUILD_HINT = "run `make setup` (builds it from Kubernetes' Go modules into {dir}, ~12 min the first time)"


def kube_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    if match is None:
        raise StackError(
            f"kube: no k8s.io/kubernetes requirement in {GO_MOD}; regenerate it with "
            "devstack/controlplane/gen-go-mod.sh"
        )
    return match.group(1)


def binaries_dir() -> Path:
    """Where devstack/controlplane/build.sh puts the binaries (same rule as the script)."""
    if os.environ.get("FERRY_KUBE_DIR"):
        return Path(os.environ["FERRY_KUBE_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferry" / "kube" / kube_version()


def binary(name: str) -> str:
    path = binaries_dir() / name
    if not os.access(path, os.X_OK):
        raise StackError(f"kube: {name} is not built; {BUILD_HINT.format(dir=binaries_dir())}")
    return str(path)


@dataclass
class ControlPlane:
    """One local cluster rooted at `root` (certificates, etcd data, logs, kubeconfigs)."""

    root: Path
    port: int
    rollout_delay: float = 0.5
    throwaway: bool = False  # a test session's or a benchmark's: its processes die with the process that started it
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # in start order

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def kubeconfig(self, client: Client = ADMIN) -> Path:
        return self.root / f"{client.slug}.kubeconfig"

    @property
    def worker_kubeconfig(self) -> Path:
        return self.kubeconfig(WORKER)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    # ------------------------------------------------------------------------------------------ start
    def start(self, timeout: float = 60.0) -> None:
        """Start every process and health-check each; on failure stop what was started and raise StackError."""
        etcd, apiserver, kcm = binary("etcd"), binary("kube-apiserver"), binary("kube-controller-manager")
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        client_port, peer_port = self._etcd_ports()
        try:
            self._start_etcd(etcd, client_port, peer_port, timeout)
            self._start_apiserver(apiserver, client_port, timeout)
            for client in (ADMIN, CONTROLLER_MANAGER, SIMULATED, WORKER):
                write_kubeconfig(self.kubeconfig(client), self.url, self.pki, client)
            self._bootstrap(timeout)
            self._start_controller_manager(kcm, timeout)
            self._start_simulated(timeout)
        except BaseException:
            self.stop()
            raise

    def _etcd_ports(self) -> tuple[int, int]:
        """etcd's ports, chosen once per state dir: its peer URL is part of the member data it keeps."""
        path = self.root / "etcd-ports.json"
        if path.is_file():
            ports = json.loads(path.read_text())
            client, peer = int(ports["client"]), int(ports["peer"])
        else:
            client, peer = free_port(), free_port()
            path.write_text(json.dumps({"client": client, "peer": peer}) + "\n")
        for port in (client, peer):
            if port_taken(port):
                raise StackError(
                    f"etcd: port 127.0.0.1:{port} (kept in {path}) is already in use; stop what "
                    f"holds it (`ss -ltnp 'sport = :{port}'`) or `ferry dev down` the stack using it"
                )
        return client, peer

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = spawn(argv, self.logs / f"{name}.log", env=env, die_with_parent=self.throwaway)
        self.procs[name] = proc
        return proc

    def _start_etcd(self, etcd: str, client_port: int, peer_port: int, timeout: float) -> None:
        client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        proc = self._spawn(
            "etcd",
            [
                etcd,
                "--name",
                "ferry",
                "--data-dir",
                str(self.root / "etcd"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"ferry={peer}",
                "--log-level",
                "warn",
                # a development cluster on a shared disk: no fsync per write (a crash may lose the last
                # writes; a clean `ferry dev down` loses nothing). The API semantics do not change.
                "--unsafe-no-fsync",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client}/health", timeout=1) as response:
                return bool(json.loads(response.read()).get("health") == "true")

        wait_healthy("etcd", proc, healthy, timeout, self.logs / "etcd.log")

    def _start_apiserver(self, apiserver: str, etcd_port: int, timeout: float) -> None:
        pki = self.pki
        proc = self._spawn(
            "kube-apiserver",
            [
                apiserver,
                "--etcd-servers",
                f"http://127.0.0.1:{etcd_port}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.port),
                "--tls-cert-file",
                str(pki.serving_cert),
                "--tls-private-key-file",
                str(pki.serving_key),
                "--client-ca-file",
                str(pki.ca_cert),
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--service-account-key-file",
                str(pki.sa_pub),
                "--service-account-signing-key-file",
                str(pki.sa_key),
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--authorization-mode",
                "RBAC",
                # the API server advertises 127.0.0.1, which the kubernetes Service's endpoints may not hold.
                "--endpoint-reconciler-type",
                "none",
                "--profiling=false",
                "--v=0",
            ],
        )
        context = self.ssl_context()

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2, context=context) as response:
                return bool(response.status == 200)

        wait_healthy("kube-apiserver", proc, ready, timeout, self.logs / "kube-apiserver.log")

    def ssl_context(self, client: Client = ADMIN) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.client_cert(client)), str(self.pki.client_key(client)))
        return context

    def _bootstrap(self, timeout: float) -> None:
        """The namespaces a Ferry cluster starts with and the worker's least-privilege ClusterRole + binding,
        applied server-side by the admin (idempotent)."""
        import kubernetes

        api = kubernetes.config.new_client_from_config(str(self.kubeconfig()))
        try:
            dyn = kubernetes.dynamic.DynamicClient(api)
            docs: list[dict[str, Any]] = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in BOOTSTRAP_NAMESPACES
            ]
            docs += [d for d in yaml.safe_load_all(WORKER_RBAC.read_text()) if d]
            for doc in docs:
                dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).server_side_apply(
                    body=doc, field_manager="ferry-dev-bootstrap", force_conflicts=True
                )
        finally:
            api.close()

    def _start_controller_manager(self, kcm: str, timeout: float) -> None:
        pki, kubeconfig, health_port = self.pki, str(self.kubeconfig(CONTROLLER_MANAGER)), free_port()
        proc = self._spawn(
            "kube-controller-manager",
            [
                kcm,
                "--kubeconfig",
                kubeconfig,
                "--authentication-kubeconfig",
                kubeconfig,
                "--authorization-kubeconfig",
                kubeconfig,
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(health_port),
                "--cert-dir",
                str(self.root / "kcm"),
                # each controller as its own service account with the bootstrap RBAC role Kubernetes gives it (as
                # kubeadm runs it); the controller manager's own identity may do little more than hand out tokens.
                "--use-service-account-credentials=true",
                "--controllers",
                ",".join(CONTROLLERS),
                "--root-ca-file",
                str(pki.ca_cert),
                "--service-account-private-key-file",
                str(pki.sa_key),
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--v=0",
            ],
        )
        context = self.ssl_context()
        # its /healthz is served with a self-signed certificate it makes itself; only its answer matters.
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE

        def healthy() -> bool:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{health_port}/healthz", timeout=2, context=insecure
            ) as response:
                if response.read() != b"ok":
                    return False
            # ... and the serviceaccount controller's work: it reaches the API server with its own credentials
            url = f"{self.url}/api/v1/namespaces/{BOOTSTRAP_NAMESPACES[0]}/serviceaccounts/default"
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)

        wait_healthy("kube-controller-manager", proc, healthy, timeout, self.logs / "kube-controller-manager.log")

    def _start_simulated(self, timeout: float) -> None:
        ready = self.root / "simulated-controller.ready"
        ready.unlink(missing_ok=True)
        proc = self._spawn(
            "simulated-controller",
            [
                sys.executable,
                "-m",
                "devstack.kube.controller",
                "--kubeconfig",
                str(self.kubeconfig(SIMULATED)),
                "--rollout-delay",
                str(self.rollout_delay),
                "--ready-file",
                str(ready),
            ],
        )
        wait_healthy("simulated-controller", proc, ready.is_file, timeout, self.logs / "simulated-controller.log")

    # ------------------------------------------------------------------------------------------ faults
    def stop_apiserver(self) -> None:
        """An API server outage (fault tests): SIGTERM kube-apiserver, leaving etcd and the controllers up."""
        proc = self.procs["kube-apiserver"]
        stop_pid(proc.pid, timeout=20)
        proc.wait()

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Bring the API server back on the same port and etcd after `stop_apiserver`, keeping the stop order."""
        order = list(self.procs)
        etcd_port = int(json.loads((self.root / "etcd-ports.json").read_text())["client"])  # etcd is up: kept port
        self._start_apiserver(binary("kube-apiserver"), etcd_port, timeout)
        self.procs = {name: self.procs[name] for name in order}

    # ------------------------------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Reverse start order: the API server stops before etcd."""
        for name in reversed(list(self.procs)):
            stop_pid(self.procs[name].pid, timeout=20)
            self.procs[name].wait()
        self.procs.clear()


def stop_processes(pids: dict[str, int]) -> list[str]:
    """Stop a control plane recorded in devstack.json (name -> pid, in start order), in reverse order."""
    from devstack.procs import pid_alive

    stopped = []
    for name, pid in reversed(list(pids.items())):
        if pid_alive(pid):
            stop_pid(pid, timeout=20)
            stopped.append(name)
    return stopped
