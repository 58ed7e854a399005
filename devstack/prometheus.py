"""Prometheus (Debian's prometheus, 2.42) on loopback, for the local stack and the tests: it scrapes the workers'
metrics endpoints and the simulated traffic generator, and the analysis activity queries it (activities/analysis/).

One job, `ferry`, whose targets are a file_sd file: `set_targets` rewrites it (atomically) and Prometheus rereads
it within FILE_SD_REFRESH, so a target can be added without a restart and a target that is not up yet (the traffic
generator) is only a down target. Kept small and local: loopback only, one day of retention, no remote write or
read, no admin or lifecycle API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack.procs import StackError, spawn, stop_pid, wait_healthy

INSTALL_HINT = "install Debian's prometheus (`make system-deps`, or `sudo apt-get install prometheus`)"
JOB = "ferry"
SCRAPE_INTERVAL = "1s"
FILE_SD_REFRESH = "1s"  # besides its file watch, Prometheus rereads the targets file this often
RETENTION = "1d"
QUERY_TIMEOUT = "30s"  # Prometheus's own cap on one query (a query's `timeout` parameter may only lower it)
TRAFFIC_PORT = 9478  # the simulated traffic generator's default metrics port (Ports.traffic)
READY_TIMEOUT = 30.0


def binary() -> Path:
    """The prometheus binary on PATH, or a StackError naming how to install it."""
    found = shutil.which("prometheus")
    if found is None:
        raise StackError(f"prometheus: the prometheus binary is missing; {INSTALL_HINT}")
    return Path(found)


def _root(state_dir: Path) -> Path:
    return state_dir / "prometheus"


def targets_file(state_dir: Path) -> Path:
    return _root(state_dir) / "targets.json"


def set_targets(state_dir: Path, targets: list[str]) -> Path:
    """Replace the job's targets (host:port each) in the file_sd file, atomically: Prometheus never reads half."""
    path = targets_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in targets:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit() or "/" in target:
            raise StackError(f"prometheus: scrape target {target[:80]!r} is not host:port")
    tmp = path.with_name(path.name + ".tmp")  # not matched by the file_sd pattern
    tmp.write_text(json.dumps([{"targets": list(targets), "labels": {}}], indent=2) + "\n")
    os.replace(tmp, path)
    return path


def write_config(state_dir: Path, targets: list[str], scrape_interval: str = SCRAPE_INTERVAL) -> Path:
    """prometheus.yml: one job `ferry` whose targets are the file_sd file (written here with `targets`)."""
    root = _root(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    set_targets(state_dir, targets)
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "file_sd_configs": [{"files": [str(targets_file(state_dir))], "refresh_interval": FILE_SD_REFRESH}],
            }
        ],
    }
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class PrometheusProcess:
    port: int
    pid: int
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self) -> dict[str, Any]:
        """devstack.json's `prometheus` entry."""
        return {"url": self.url, "pid": self.pid, "port": self.port, "log": str(self.log)}

    def set_targets(self, targets: list[str]) -> None:
        set_targets(self.state_dir, targets)

    def add_target(self, target: str) -> None:
        current = json.loads(targets_file(self.state_dir).read_text())[0]["targets"]
        if target not in current:
            set_targets(self.state_dir, [*current, target])

    def ready(self) -> bool:
        return ready(self.url)

    def stop(self) -> None:
        stop(self)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start(
    state_dir: Path,
    port: int,
    targets: list[str],
    scrape_interval: str = SCRAPE_INTERVAL,
    *,
    timeout: float = READY_TIMEOUT,
    die_with_parent: bool = False,
) -> PrometheusProcess:
    """Start Prometheus on 127.0.0.1:`port` scraping `targets`, data and log under <state>/prometheus; wait (at
    most `timeout`) for /-/ready. `die_with_parent`: for a test session's, never for `ferry dev up`'s."""
    exe = binary()
    config = write_config(state_dir, targets, scrape_interval)
    root = _root(state_dir)
    log = root / "prometheus.log"
    argv = [
        str(exe),
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--query.timeout={QUERY_TIMEOUT}",
        "--query.max-concurrency=4",
        "--log.level=warn",
    ]
    proc = spawn(argv, log, die_with_parent=die_with_parent)
    process = PrometheusProcess(port=port, pid=proc.pid, state_dir=state_dir, log=log, proc=proc)
    try:
        wait_healthy("prometheus", proc, process.ready, timeout, log)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: PrometheusProcess) -> None:
    stop_pid(process.pid, timeout=20)
    if process.proc is not None:
        process.proc.wait()


def stack_targets(metrics_ports: list[int], traffic_port: int) -> list[str]:
    """`ferry dev up`'s scrape targets: every worker's metrics endpoint and the simulated traffic generator's."""
    return [f"127.0.0.1:{p}" for p in metrics_ports] + [f"127.0.0.1:{traffic_port}"]
