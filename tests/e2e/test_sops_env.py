"""A SOPS-encrypted Secret through a real `ferry worker` process (its logs, its console traces and its Prometheus
endpoint captured), `ferry release` and `ferry env apply`, on the dev server and the real control plane: staging and
production decrypt it on the worker; drift on it is reverted; a tampered release is refused on the record with the
previous one kept; and then every history, memo and search attribute of the run, every log and trace line of the
worker and its metrics are searched for the plaintext and the age private key, and hold neither."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from temporalio.testing import WorkflowEnvironment

from activities.secrets.encrypt import encrypt, new_identity
from devstack.registry import Registry
from tests.e2e.test_release import history_text
from tests.kit.environments import publish_dir, wait_status
from tests.kit.stack import settings_for, terminate_running

PASSWORD = "Zq8-orders-db-pa55word-e2e"
SECRET = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: orders-db
type: Opaque
stringData:
  password: {PASSWORD}
"""
CONFIG = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: orders}\ndata: {mode: e2e}\n"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """`python -m cli worker` with the stack's settings in its environment; stdout and stderr go to one file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log, self.metrics = log, f"http://{env['FERRY_PROMETHEUS_BIND']}/metrics"
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"], env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
async def sops_worker(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path, task_queue: str
) -> AsyncIterator[tuple[WorkerProcess, Any, Path]]:
    settings = settings_for(registry, tmp_path)
    settings.temporal.task_queue = task_queue
    settings.temporal.address = dev_env.client.service_client.config.target_host
    identity = tmp_path / "age" / "worker.key"
    new_identity(identity)
    env = {
        **os.environ,
        "FERRY_TEMPORAL_ADDRESS": settings.temporal.address,
        "FERRY_TASK_QUEUE": task_queue,
        "FERRY_STATE_DIR": str(tmp_path / "worker-state"),
        "FERRY_REGISTRY": registry.host,
        "FERRY_REGISTRY_INSECURE": registry.host,
        "FERRY_KUBECONFIG": str(kube_server.worker_kubeconfig),
        "FERRY_CACHE_DIR": str(tmp_path / "worker-cache"),
        "FERRY_SOPS_AGE_KEYS": str(identity),
        "FERRY_PROMETHEUS_BIND": f"127.0.0.1:{_port()}",
        "FERRY_OTEL_EXPORTER": "console",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        yield worker, settings, identity
    finally:
        await terminate_running(dev_env.client, task_queue)
        worker.stop()


async def _cli(settings: Any, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FERRY_TEMPORAL_ADDRESS": settings.temporal.address,
        "FERRY_TASK_QUEUE": settings.temporal.task_queue,
        "FERRY_STATE_DIR": str(tmp / "no-stack"),
        "FERRY_REGISTRY": settings.registry.default,
        "FERRY_REGISTRY_INSECURE": settings.registry.default,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_an_encrypted_secret_reaches_staging_and_production_and_its_value_is_nowhere_else(
    sops_worker: tuple[WorkerProcess, Any, Path], dev_env: WorkflowEnvironment, kube_server: Any, tmp_path: Path
) -> None:
    worker, settings, identity = sops_worker
    lines = identity.read_text().splitlines()
    recipient = next(line.removeprefix("# public key: ") for line in lines if line.startswith("# public key: "))
    private_key = next(line for line in lines if line.startswith("AGE-SECRET-KEY-"))
    suffix = uuid.uuid4().hex[:8]
    staging, production = f"st-{suffix}", f"pr-{suffix}"
    repository = f"{settings.registry.default}/team/orders-{suffix}"
    admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    core = CoreV1Api(admin)
    for ns in (staging, production):
        core.create_namespace({"metadata": {"name": ns}})
    repo = tmp_path / "config-repo"
    repo.mkdir()
    (repo / "config.yaml").write_text(CONFIG)
    (repo / "orders-db.enc.yaml").write_text(SECRET)
    (repo / "orders-db.enc.yaml").write_bytes(encrypt(repo / "orders-db.enc.yaml", [recipient]))
    released = await _cli(settings, tmp_path, "release", str(repo), "--repository", repository, "--version", "1.0.0")
    assert released.returncode == 0, released.stderr
    specs = tmp_path / "envs.yaml"
    specs.write_text(
        "environments:\n"
        + "".join(
            f"  - {{name: {name}, repository: {repository}, namespace: {name}, {track}, interval: 2s, "
            "decryption: {provider: sops}}\n"
            for name, track in ((staging, 'semver: ">=1.0.0"'), (production, "version: 1.0.0"))
        )
    )
    applied = await _cli(settings, tmp_path, "env", "apply", "-f", str(specs), "--as", "carol")
    assert applied.returncode == 0, applied.stderr
    client = dev_env.client
    handles = {name: client.get_workflow_handle(f"env/{name}") for name in (staging, production)}
    for name, handle in handles.items():
        await wait_status(handle, lambda s: s.state.last_applied is not None, timeout=90, what=f"{name} applied")
        stored = core.read_namespaced_secret("orders-db", name).data["password"]
        assert base64.b64decode(stored).decode() == PASSWORD

    # drift on the Secret: put back at the next iteration, recorded by its field path
    core.patch_namespaced_secret("orders-db", staging, {"stringData": {"password": "typed-in-by-hand"}})
    drifted = await wait_status(
        handles[staging],
        lambda s: any(e.type == "DriftCorrected" for e in s.state.events),
        timeout=60,
        what="the drift corrected",
    )
    corrected = next(e for e in drifted.state.events if e.type == "DriftCorrected")
    drift = corrected.objects[f"Secret/{staging}/orders-db"]
    assert len(drift) == 1 and drift[0].startswith(".data.password=hmac-sha256:"), drift
    assert base64.b64decode(core.read_namespaced_secret("orders-db", staging).data["password"]).decode() == PASSWORD

    # a tampered release: refused on the record, staging keeps what it runs
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "config.yaml").write_text(CONFIG)
    text = (repo / "orders-db.enc.yaml").read_text()
    at = text.index("password: ENC[AES256_GCM,data:") + len("password: ENC[AES256_GCM,data:")
    (tampered / "orders-db.enc.yaml").write_text(text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :])
    publish_dir(settings, repository, "1.1.0", tampered)
    refused = await wait_status(
        handles[staging],
        lambda s: any(e.type == "ReconcileFailed" and "DecryptionFailed" in e.message for e in s.state.events),
        timeout=60,
        what="the tampered release refused",
    )
    assert refused.state.last_applied is not None and refused.state.last_applied.version == "1.0.0"
    failed = next(e for e in refused.state.events if e.type == "ReconcileFailed")
    assert "orders-db.enc.yaml" in failed.message
    assert base64.b64decode(core.read_namespaced_secret("orders-db", staging).data["password"]).decode() == PASSWORD

    # the search: every history, memo and search attribute of the run, the worker's log and traces, its metrics
    haystack: list[str] = []
    async for listed in client.list_workflows(f"TaskQueue = '{settings.temporal.task_queue}'"):
        handle = client.get_workflow_handle(listed.id, run_id=listed.run_id)
        haystack.append(history_text(await handle.fetch_history()))
        described = await handle.describe()
        haystack.append(json.dumps(await described.memo(), default=str))
        haystack.append(json.dumps({k: [str(v) for v in vs] for k, vs in described.search_attributes.items()}))
    assert len(haystack) >= 6, "both environments' workflows (and the releases) were searched"
    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(worker.metrics, timeout=10).read().decode())
    assert "ferry_" in metrics or "temporal_" in metrics
    haystack.append(metrics)
    log = worker.log.read_text(errors="replace")
    assert '"trace_id"' in log and "reconcile_environment" in log, log[-2000:]  # the console traces are in it
    assert f"decrypt for 1 recipient(s): {recipient}" in log  # the worker says what it can decrypt for
    haystack.append(log)
    everything = "\n".join(haystack)
    # the search sees what it must: the decoded payloads (the refusal), the Secret's name, the metrics
    assert "DecryptionFailed" in everything and "Secret/" + staging + "/orders-db" in everything
    for needle in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(), private_key, "AGE-SECRET-KEY"):
        assert needle not in everything, f"{needle[:12]}… found"
