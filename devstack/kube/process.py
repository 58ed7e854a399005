"""Start the emulator as a child process for `ferry dev up`."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

from devstack.kube.kubeconfig import CONTEXT, write_kubeconfig
from devstack.procs import spawn, wait_healthy


def start_emulator_process(state_dir: Path, port: int, logs: Path, timeout: float) -> dict[str, Any]:
    log = logs / "kube.log"
    proc = spawn([sys.executable, "-m", "devstack.kube", "--port", str(port), "--state",
                  str(state_dir / "kube-state.json")], log)
    server = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{server}/readyz", timeout=1) as response:
            return bool(response.status == 200)

    try:
        wait_healthy("kube", proc, ready, timeout, log)
    except BaseException:
        proc.kill()
        raise
    kubeconfig = write_kubeconfig(state_dir / "kubeconfig", server)
    return {"server": server, "kubeconfig": str(kubeconfig), "context": CONTEXT, "pid": proc.pid,
            "state_file": str(state_dir / "kube-state.json")}
