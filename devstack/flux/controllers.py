"""Flux's source-controller and kustomize-controller, run out of cluster against the local API server.

Built by devstack/flux/build.sh (`make flux`, opt-in) into ``~/.cache/ferry/flux/<version>/``; their CRDs come from
the modules' ``config/crd/bases`` in the Go module cache (the build downloads them). source-controller's artifact
server and storage are on loopback and a directory of the caller's; kustomize-controller fetches artifacts from the
URL source-controller advertises (127.0.0.1). Both run as the cluster admin (no in-cluster service account here),
with leader election off and RUNTIME_NAMESPACE ``flux-system``.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.procs import StackError, free_port, spawn, stop_pid, wait_healthy

HERE = Path(__file__).resolve().parent
GO_MOD = HERE / "go.mod"
BUILD = HERE / "build.sh"
CONTROLLERS = ("source-controller", "kustomize-controller")
NAMESPACE = "flux-system"
FIELD_MANAGER = "kustomize-controller"  # the field manager kustomize-controller applies with


def flux_version() -> str:
    match = re.search(r"^\s*github\.com/fluxcd/source-controller (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    if match is None:
        raise StackError(f"flux: no source-controller requirement in {GO_MOD}; run devstack/flux/gen-go-mod.sh")
    return match.group(1)


def binaries_dir() -> Path:
    """Where devstack/flux/build.sh puts the binaries (same rule as the script)."""
    if os.environ.get("FERRY_FLUX_DIR"):
        return Path(os.environ["FERRY_FLUX_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferry" / "flux" / flux_version()


def ensure_built() -> Path:
    """Run the build (a no-op when built; ~10 min cold on 2 cores) and return the binaries' directory."""
    result = subprocess.run([str(BUILD)], check=False)
    if result.returncode != 0:
        raise StackError(f"flux: `make flux` failed (exit {result.returncode}); see its output above")
    return binaries_dir()


def crd_files() -> list[Path]:
    """The CRDs of both controllers at the pinned version, from the Go module cache."""
    cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    version = flux_version()
    files: list[Path] = []
    for name in CONTROLLERS:
        bases = Path(cache) / "github.com" / "fluxcd" / f"{name}@{version}" / "config" / "crd" / "bases"
        files += sorted(bases.glob("*.yaml"))
    if not files:
        raise StackError(f"flux: no CRDs under {cache}/github.com/fluxcd/*@{version}; run `make flux`")
    return files


def install_crds(kubeconfig: Path) -> None:
    """Server-side apply Flux's CRDs and the flux-system namespace as the admin (idempotent), and wait until the
    CRDs are Established."""
    import time

    import kubernetes

    api = kubernetes.config.new_client_from_config(str(kubeconfig))
    try:
        dyn = kubernetes.dynamic.DynamicClient(api)
        docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
        for path in crd_files():
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).server_side_apply(
                body=doc, field_manager="ferry-dev-flux", force_conflicts=True
            )
        crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
        deadline = time.monotonic() + 30
        for doc in docs[1:]:
            while True:
                conditions = crds.get(name=doc["metadata"]["name"]).to_dict().get("status", {}).get("conditions", [])
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                if time.monotonic() > deadline:
                    raise StackError(f"flux: CRD {doc['metadata']['name']} not Established in 30 s")
                time.sleep(0.1)
    finally:
        api.close()


@dataclass
class Flux:
    """Both controllers against the cluster of ``kubeconfig`` (an admin's); state and logs under ``root``."""

    root: Path
    kubeconfig: Path
    concurrent: int = 4  # kustomize-controller's --concurrent (its default); source-controller gets the same
    throwaway: bool = True
    storage_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def start(self, timeout: float = 60.0) -> Flux:
        """Install the CRDs, start both controllers and wait for their /readyz; on failure stop them and raise."""
        bins = ensure_built()
        install_crds(self.kubeconfig)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "RUNTIME_NAMESPACE": NAMESPACE}
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        loopback = f"127.0.0.1:{self.storage_port}"
        extra = {
            "source-controller": [
                "--storage-path",
                str(storage),
                "--storage-addr",
                loopback,
                "--storage-adv-addr",
                loopback,
            ],
            "kustomize-controller": ["--no-remote-bases=true"],
        }
        try:
            for name in CONTROLLERS:
                health, metrics = free_port(), free_port()
                self.metrics_ports[name] = metrics
                proc = spawn(
                    [
                        str(bins / name),
                        "--health-addr",
                        f"127.0.0.1:{health}",
                        "--metrics-addr",
                        f"127.0.0.1:{metrics}",
                        "--enable-leader-election=false",
                        "--watch-all-namespaces=true",
                        "--concurrent",
                        str(self.concurrent),
                        "--log-level",
                        "info",
                        "--log-encoding",
                        "json",
                        *extra[name],
                    ],
                    self.logs / f"{name}.log",
                    env=env,
                    die_with_parent=self.throwaway,
                )
                self.procs[name] = proc
                wait_healthy(name, proc, _ready(health), timeout, self.logs / f"{name}.log")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            stop_pid(self.procs[name].pid, timeout=20)
            self.procs[name].wait()
        self.procs.clear()


def _ready(port: int) -> Any:
    def check() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)

    return check
