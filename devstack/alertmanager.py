"""Prometheus Alertmanager (Debian's prometheus-alertmanager, 0.25) on loopback, for the tests and the local stack:
a real receiver for Ferry's Alertmanager provider, read back through its v2 API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack.procs import StackError, spawn, wait_healthy

INSTALL_HINT = (
    "install Debian's prometheus-alertmanager (`sudo apt-get install prometheus-alertmanager`, or `make setup`)"
)


@dataclass
class Alertmanager:
    port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Alertmanager:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise StackError(f"alertmanager: the binary is missing; {INSTALL_HINT}")
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "alertmanager.yml"
        # one route to a receiver that sends nothing: the test reads alerts back from the API
        config.write_text(
            yaml.safe_dump({"route": {"receiver": "ferry", "group_wait": "1s"}, "receivers": [{"name": "ferry"}]})
        )
        log = self.root / "alertmanager.log"
        self.proc = spawn(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            log,
        )
        wait_healthy("alertmanager", self.proc, self.ready, timeout, log)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (active, silenced, inhibited, unprocessed; resolved ones are not listed)."""
        query = "&".join(f"filter={k}%3D%22{v}%22" for k, v in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as response:
            result: list[dict[str, Any]] = json.loads(response.read())
            return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
