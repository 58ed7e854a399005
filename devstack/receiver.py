"""`ferry receiver` in the local stack: started before the registry, which is configured to notify it of pushes."""

from __future__ import annotations

import os
import secrets
import sys
import urllib.request
from pathlib import Path
from typing import Any

from devstack.procs import spawn, wait_healthy


def receiver_token(state_dir: Path) -> str:
    """The registry→receiver shared secret, generated once per state dir (0600), kept across down/up."""
    path = state_dir / "receiver.token"
    if not path.is_file():
        path.write_text(secrets.token_hex(24) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def start_receiver(state_dir: Path, port: int, timeout: float) -> dict[str, Any]:
    """Start `ferry receiver` against the stack's Temporal (read from devstack.json, saved before this)."""
    log = state_dir / "logs" / "receiver.log"
    ready = state_dir / "receiver.ready"
    ready.unlink(missing_ok=True)
    url = f"http://127.0.0.1:{port}"
    proc = spawn(
        [
            sys.executable,
            "-m",
            "cli.main",
            "receiver",
            "--bind",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(state_dir),
            "--token-file",
            str(state_dir / "receiver.token"),
            "--ready-file",
            str(ready),
        ],
        log,
        env=dict(os.environ),
    )

    def up() -> bool:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return ready.is_file() and bool(response.status == 200)

    wait_healthy("receiver", proc, up, timeout, log)
    return {
        "pid": proc.pid,
        "host": f"127.0.0.1:{port}",
        "url": url,
        "hook": f"{url}/hooks/registry",
        "log": str(log),
        "metrics": f"{url}/metrics",
    }
