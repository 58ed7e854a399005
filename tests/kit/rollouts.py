"""Progressive rollouts on the real stack: the simulated traffic generator as a process, releases of a canary
workload, strategies, and reads of a rollout's status and of the cluster's pair and route."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kubernetes
from temporalio.client import Client
from temporalio.service import RPCError

from ferry.names import Query
from ferry.progressive import RolloutStatus
from ferry.spec import EnvironmentSpec, rollout_workflow_id
from tests.kit.environments import app_manifests

ROUTE_API = "gateway.networking.k8s.io/v1"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Traffic:
    """`python -m devstack.simulated_traffic` watching one namespace, on a free port; its log in `log`."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        ready = log.with_suffix(".ready")
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack.simulated_traffic",
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                str(self.port),
                "--namespace",
                namespace,
                "--ready-file",
                str(ready),
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the simulated traffic generator did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


def release(name: str, image: str, annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The workload the strategy manages: 2 replicas and its Service; `annotations` on its pod template (the
    simulated traffic generator's ferry.dev/simulated-error-rate and -latency-ms)."""
    docs = app_manifests(name, image=image, replicas=2, configmap=False)
    if annotations:
        docs[0]["spec"]["template"]["metadata"]["annotations"] = annotations
    return docs


def spec(name: str, repository: str, namespace: str, steps: list[dict[str, Any]], **extra: Any) -> EnvironmentSpec:
    canary = {"workload": "web", "gateway": {"name": "public", "namespace": namespace}, "steps": steps}
    return EnvironmentSpec.model_validate(
        {
            "name": name,
            "repository": repository,
            "namespace": namespace,
            "semver": ">=1.0.0",
            "interval": "2s",
            "health-timeout": "60s",
            "strategy": {"canary": canary},
            **extra,
        }
    )


def analysis(*checks: dict[str, Any], count: int = 2, interval: str = "3s", **extra: Any) -> dict[str, Any]:
    return {"analysis": {"interval": interval, "count": count, "checks": list(checks), **extra}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def rollout_status(client: Client, env: str) -> RolloutStatus | None:
    try:
        status: RolloutStatus = await client.get_workflow_handle(rollout_workflow_id(env)).query(
            Query.STATUS, result_type=RolloutStatus
        )
    except RPCError:
        return None
    return status


async def wait_rollout(
    client: Client,
    env: str,
    predicate: Callable[[RolloutStatus], bool],
    timeout: float = 90,
    what: str = "the rollout's condition",
) -> RolloutStatus:
    deadline = time.monotonic() + timeout
    status: RolloutStatus | None = None
    while time.monotonic() < deadline:
        status = await rollout_status(client, env)
        if status is not None and predicate(status):
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"{what} not reached in {timeout}s; last: {status.model_dump_json(indent=1) if status else None}"
    )


def route_weights(admin: Any, namespace: str, name: str = "web") -> dict[str, int]:
    dyn = kubernetes.dynamic.DynamicClient(admin)
    route = dyn.resources.get(api_version=ROUTE_API, kind="HTTPRoute").get(name=name, namespace=namespace)
    return {b["name"]: int(b.get("weight", 1)) for b in route.to_dict()["spec"]["rules"][0]["backendRefs"]}


def deployment(admin: Any, namespace: str, name: str) -> dict[str, Any]:
    apps = kubernetes.client.AppsV1Api(admin)
    return admin.sanitize_for_serialization(apps.read_namespaced_deployment(name, namespace))  # type: ignore[no-any-return]


def image_of(deployment_obj: dict[str, Any]) -> str:
    return str(deployment_obj["spec"]["template"]["spec"]["containers"][0]["image"])


class World:
    """One test's stack: a namespace, the traffic generator watching it (scraped by the session's Prometheus), and
    a worker on the test's task queue that asks that Prometheus."""

    def __init__(self, client: Client, settings: Any, admin: Any, namespace: str, repository: str) -> None:
        self.client, self.settings, self.admin = client, settings, admin
        self.namespace, self.repository = namespace, repository


@contextlib.asynccontextmanager
async def rollout_world(
    dev_env: Any, registry: Any, kube_server: Any, prometheus: Any, tmp: Path, task_queue: str
) -> AsyncIterator[World]:
    from tests.kit.stack import worker_on

    namespace = unique("canary")
    admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    traffic = Traffic(kube_server.kubeconfig, namespace, tmp / "traffic.log")
    prometheus.add_target(traffic.target)
    try:
        async with worker_on(dev_env, registry, kube_server, tmp, task_queue, prometheus_url=prometheus.url) as s:
            yield World(dev_env.client, s, admin, namespace, f"{registry.host}/team/{namespace}")
    finally:
        traffic.stop()
