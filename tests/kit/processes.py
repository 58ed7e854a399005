"""Ferry processes for the fault tier and bench/: `ferry worker` processes on one task queue, their environment,
their CPU time, and waiting for a condition while faults happen."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from devstack.kube.session import KubeServer
from devstack.procs import spawn, stop_pid, wait_healthy
from devstack.registry import Registry
from ferry.spec import EnvironmentSpec


@dataclass
class Workers:
    """`ferry worker` processes on one task queue, as `ferry dev up` runs them (each its own cache and log)."""

    root: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`env`: this worker's own variables over the shared ones (e.g. a build's FERRY_BUILD_ID)."""
        ready = self.root / f"{name}.ready"
        ready.unlink(missing_ok=True)
        env = {**self.env, "FERRY_CACHE_DIR": str(self.root / "cache" / name), **(env or {})}
        proc = spawn(
            [sys.executable, "-m", "cli.main", "worker", "--ready-file", str(ready)],
            self.root / f"{name}.log",
            env=env,
            die_with_parent=True,
        )
        self.procs[name] = proc
        wait_healthy(name, proc, ready.is_file, timeout, self.root / f"{name}.log")
        return proc

    def kill(self, name: str) -> None:
        """kill -9: no graceful shutdown, running activities and cached workflows lost with it."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def stop(self, name: str) -> None:
        """SIGTERM, as a Deployment's rolling update or `docker compose stop` does: running activities finish."""
        proc = self.procs[name]
        stop_pid(proc.pid, timeout=25)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_pid(proc.pid, timeout=25)
            proc.wait()


def build_env(deployment: str, build: str) -> dict[str, str]:
    """A worker of one build under Worker Versioning (what docker-compose.yml's FERRY_BUILD_ID sets)."""
    return {"FERRY_DEPLOYMENT_NAME": deployment, "FERRY_BUILD_ID": build}


def worker_env(address: str, registry: Registry, kube: KubeServer, task_queue: str, root: Path) -> dict[str, str]:
    """A `ferry worker`'s environment: this Temporal frontend, registry and cluster, no devstack.json."""
    return {
        **os.environ,
        "FERRY_TEMPORAL_ADDRESS": address,
        "FERRY_TEMPORAL_NAMESPACE": "default",
        "FERRY_TASK_QUEUE": task_queue,
        "FERRY_REGISTRY": registry.host,
        "FERRY_REGISTRY_INSECURE": registry.host,
        "FERRY_KUBECONFIG": str(kube.worker_kubeconfig),
        "FERRY_STATE_DIR": str(root / "no-stack"),
        "FERRY_OTEL_EXPORTER": "none",
    }


async def start_fleet(
    client: Client, task_queue: str, specs: list[EnvironmentSpec], at_once: int = 20
) -> list[WorkflowHandle[Any, Any]]:
    """Start many environments, `at_once` starts in flight (a fleet's start does not flood the frontend)."""
    from tests.kit.environments import start_environment

    gate = asyncio.Semaphore(at_once)

    async def start(spec: EnvironmentSpec) -> WorkflowHandle[Any, Any]:
        async with gate:
            return await start_environment(client, task_queue, spec)

    return list(await asyncio.gather(*(start(spec) for spec in specs)))


async def eventually(check: object, timeout: float, what: str, every: float = 1.0) -> None:
    """Await `check()` (a coroutine function -> bool) until true; fail naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:.0f}s")
        await asyncio.sleep(every)


def rss_mib(pid: int) -> float:
    """A process's resident memory now (VmRSS), in MiB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(kib / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants that are alive now (PostgreSQL's backends)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, children = 0.0, {pid}
    stats = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats.append((int(entry.name), int(fields[1]), int(fields[11]) + int(fields[12])))
    grew = True
    while grew:
        grew = False
        for p, parent, _ in stats:
            if parent in children and p not in children:
                children.add(p)
                grew = True
    for p, _, cpu in stats:
        if p in children:
            total += cpu / ticks
    return total
