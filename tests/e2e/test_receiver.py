"""Webhooks in, end to end: the real CNCF distribution registry notifies a real `ferry receiver` process, which
signals the environment deploying from the pushed repository; the environment (interval 1h) applies the new
release within seconds. Hostile requests are refused with a status, counted, and signal nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from temporalio.testing import WorkflowEnvironment

from devstack.procs import free_port, wait_healthy
from devstack.registry import Registry
from ferry.receiver import REGISTRY_EVENTS_TYPE
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, publish, start_environment, wait_status
from tests.kit.stack import worker_on
from workflows.environment import EnvironmentWorkflow

TOKEN = secrets.token_hex(16)
HMAC_KEY = secrets.token_hex(16)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _signed(body: dict[str, Any], key: str = HMAC_KEY) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {
        "Content-Type": "application/json",
        "X-Signature": "sha256=" + hmac.new(key.encode(), raw, hashlib.sha256).hexdigest(),
    }


@pytest.fixture
def receiver(dev_env: WorkflowEnvironment, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "receiver.log"
    env = {
        **os.environ,
        "FERRY_RECEIVER_TOKEN": TOKEN,
        "FERRY_RECEIVER_HMAC_KEY": HMAC_KEY,
        "FERRY_STATE_DIR": str(tmp_path / "no-stack"),
        "FERRY_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "receiver", "--bind", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)

    try:
        wait_healthy("receiver", proc, up, 30, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_registry_push_reconciles_staging_at_once(
    dev_env: WorkflowEnvironment, kube_server: Any, receiver: str, tmp_path: Path, task_queue: str
) -> None:
    registry = Registry(
        port=free_port(), root=tmp_path / "registry", notify_url=f"{receiver}/hooks/registry", notify_token=TOKEN
    )
    registry.start()
    try:
        async with worker_on(dev_env, registry, kube_server, tmp_path, task_queue) as settings:
            suffix = uuid.uuid4().hex[:8]
            name, ns, repository = f"env-{suffix}", f"ns-{suffix}", f"{registry.host}/team/app-{suffix}"
            core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube_server.kubeconfig)))
            core.create_namespace({"metadata": {"name": ns}})
            await asyncio.to_thread(publish, settings, repository, "1.0.0", app_manifests("web"))
            spec = EnvironmentSpec.model_validate(
                {
                    "name": name,
                    "repository": repository,
                    "namespace": ns,
                    "semver": ">=1.0.0",
                    "interval": "1h",
                    "health_timeout": "20s",
                }
            )
            handle = await start_environment(dev_env.client, task_queue, spec)
            await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")

            started = time.monotonic()
            d2 = await asyncio.to_thread(
                publish, settings, repository, "1.1.0", app_manifests("web", image="nginx:1.26")
            )
            pushed = time.monotonic()
            await wait_status(
                handle,
                lambda s: s.state.last_applied is not None and s.state.last_applied.digest == d2,
                timeout=30,
                what="1.1.0 applied after the push",
            )
            latency = time.monotonic() - pushed
            print(f"\npush -> applied in {latency:.2f}s (push took {pushed - started:.2f}s; interval 1h)")
            assert latency < 15, "the push, not the 1h interval, brought 1.1.0"

            await wait_status(
                handle,
                lambda s: (
                    s.state.health.status == "Healthy" and s.state.health.digest == d2 and s.state.iterations >= 2
                ),
                timeout=30,
                what="1.1.0 healthy, iteration done",
            )
            before = (await handle.query(EnvironmentWorkflow.status)).state.iterations
            await asyncio.to_thread(_hostile, receiver, repository)
            await asyncio.sleep(1.0)
            after = (await handle.query(EnvironmentWorkflow.status)).state.iterations
            assert after == before, "no hostile request signalled the environment"

            metrics = await asyncio.to_thread(_get, f"{receiver}/metrics")
            for line in (
                'endpoint="registry",outcome="accepted"',
                'endpoint="registry",outcome="unauthorized"',
                'endpoint="registry",outcome="oversized"',
                'endpoint="generic",outcome="bad_signature"',
                'endpoint="generic",outcome="replayed"',
                'endpoint="generic",outcome="unknown_repository"',
            ):
                assert line in metrics, metrics
            await handle.terminate("test done")
    finally:
        registry.stop()


def _hostile(url: str, repository: str) -> None:
    host, _, path = repository.partition("/")
    now = datetime.now(UTC)
    event = {
        "events": [
            {
                "id": str(uuid.uuid4()),
                "timestamp": now.isoformat(),
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "repository": path,
                    "digest": "sha256:" + "0" * 64,
                    "tag": "9.9.9",
                },
                "request": {"host": host},
            }
        ]
    }
    raw = json.dumps(event).encode()
    registry = f"{url}/hooks/registry"
    # no or wrong shared secret
    assert _post(registry, raw, {"Content-Type": REGISTRY_EVENTS_TYPE})[0] == 401
    assert _post(registry, raw, {"Content-Type": REGISTRY_EVENTS_TYPE, "Authorization": "Bearer nope"})[0] == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # wrong content type, oversized, malformed, injected quotes in the repository
    assert _post(registry, raw, {**auth, "Content-Type": "text/plain"})[0] == 415
    status, answer = _post(registry, b"{" + b" " * (300 * 1024) + b"}", {**auth, "Content-Type": REGISTRY_EVENTS_TYPE})
    assert status == 413, answer
    # authenticated but refused: answered 200 and dropped (the registry retries any other answer forever, holding
    # every later push behind it), nothing signalled, counted under its outcome
    evil = json.loads(raw)
    evil["events"][0]["target"]["repository"] = "team/app' OR WorkflowType != '"
    stale = json.loads(raw)
    stale["events"][0]["timestamp"] = (now - timedelta(hours=1)).isoformat()
    odd_host = json.loads(raw)
    odd_host["events"][0]["request"]["host"] = "registry_1:5000"
    for dropped in (b"not json", json.dumps(evil).encode(), json.dumps(stale).encode(), json.dumps(odd_host).encode()):
        status, answer = _post(registry, dropped, {**auth, "Content-Type": REGISTRY_EVENTS_TYPE})
        assert status == 200 and answer.get("dropped") and "signalled" not in answer, (dropped[:60], answer)
    # generic webhook: bad signature, unknown repository (signed), and a replay of a signed request
    generic = f"{url}/hooks/generic"
    body = {
        "repository": f"{host}/team/unknown-{uuid.uuid4().hex[:6]}",
        "tag": "1.0.0",
        "id": str(uuid.uuid4()),
        "timestamp": now.isoformat(),
    }
    assert _post(generic, json.dumps(body).encode(), {"Content-Type": "application/json"})[0] == 401
    assert _post(generic, *_signed(body, "another key"))[0] == 401
    status, answer = _post(generic, *_signed(body))
    assert status == 404 and answer["unknown"] == [body["repository"]], answer
    assert _post(generic, *_signed(body))[0] == 409
    # a registry request for the environment's own repository, but only a pull: nothing to do
    pull = json.loads(raw)
    pull["events"][0]["action"] = "pull"
    status, answer = _post(registry, json.dumps(pull).encode(), {**auth, "Content-Type": REGISTRY_EVENTS_TYPE})
    assert status == 200 and answer["signalled"] == [], answer
