"""A rollout survives its worker (issue 29): `ferry worker` killed with SIGKILL in the middle of an analysis, a new
worker started, and the rollout resumes at the same step and interval, never walking a step twice, and is promoted.
Real dev server, registry, control plane with the Gateway API CRDs, Prometheus and the simulated traffic generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes

from tests.kit.environments import publish, start_environment, wait_status
from tests.kit.processes import Workers, worker_env
from tests.kit.rollouts import (
    Traffic,
    analysis,
    deployment,
    image_of,
    release,
    route_weights,
    spec,
    unique,
    wait_rollout,
)
from tests.kit.stack import settings_for

SUCCESS = {"success-rate": {"min": 99}}


async def test_a_worker_killed_mid_analysis_resumes_at_the_same_step(
    dev_env: Any,
    registry: Any,
    kube_server: Any,
    gateway_api: list[str],
    prometheus: Any,
    tmp_path: Path,
    task_queue: str,
) -> None:
    name, namespace = unique("durable"), unique("canary")
    admin = kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": namespace}})
    traffic = Traffic(kube_server.kubeconfig, namespace, tmp_path / "traffic.log")
    prometheus.add_target(traffic.target)
    address = dev_env.client.service_client.config.target_host
    env = {**worker_env(address, registry, kube_server, task_queue, tmp_path), "FERRY_PROMETHEUS_URL": prometheus.url}
    workers = Workers(tmp_path, env)
    repository = f"{registry.host}/team/{namespace}"
    settings = settings_for(registry, tmp_path)
    try:
        workers.start("first")
        publish(settings, repository, "1.0.0", release("web", "app:1.0.0"))
        steps = [{"set-weight": 20}, analysis(SUCCESS, count=8, interval="2s")]
        handle = await start_environment(dev_env.client, task_queue, spec(name, repository, namespace, steps))
        await wait_status(handle, lambda s: s.state.primary is not None, 90, "1.0.0 primary")
        publish(settings, repository, "1.1.0", release("web", "app:1.1.0"))
        before = await wait_rollout(
            dev_env.client, name, lambda s: s.phase == "Analysing" and len(s.intervals) >= 2, 120, "mid-analysis"
        )
        workers.kill("first")
        assert route_weights(admin, namespace) == {"web-primary": 80, "web-canary": 20}, "killed at 20 %"
        workers.start("second")
        done = await wait_rollout(dev_env.client, name, lambda s: s.phase == "Promoted", 180, "promoted after")
    finally:
        workers.stop_all()
        traffic.stop()
    # the same step, not walked again: one set-weight, one analysis, its intervals numbered once each, in order
    assert [s.kind for s in done.steps] == ["set-weight", "analysis", "promote"]
    numbers = [i.interval for i in done.intervals]
    assert numbers == list(range(len(numbers))) and len(numbers) == 8, numbers
    assert [i.interval for i in before.intervals] == numbers[: len(before.intervals)]
    assert image_of(deployment(admin, namespace, "web-primary")) == "app:1.1.0"
