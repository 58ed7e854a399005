"""SIMULATED workload-status controller (no kubelet) — no container runs anywhere.

No kubelet can run on these machines, so no pod ever starts and the real workload controllers would report
every rollout as unavailable; kube-controller-manager runs without them. This small process stands in for
them: it watches Deployments, StatefulSets, DaemonSets and Jobs on the real API server through the official
client and, after each spec change (uid, generation), writes a Progressing status at once and a rolled-out
(or failed) status `rollout_delay` seconds later, under the field manager ``simulated (no kubelet)``.
A rollout FAILS (Progressing=False, reason ProgressDeadlineExceeded; Jobs: Failed=True, reason
BackoffLimitExceeded) when
  - any container image's tag contains "broken" (e.g. ghcr.io/acme/app:1.2.0-broken), or
  - the pod template is annotated  emulator.ferry.dev/rollout: fail
A rollout whose pod template is annotated  emulator.ferry.dev/rollout: hang  stays Progressing (a rollout that
never finishes, for tests of what may interrupt a health wait).

    python -m devstack.kube.controller --kubeconfig FILE [--rollout-delay S] [--ready-file FILE]
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import ApiException
from kubernetes.dynamic import DynamicClient

FAIL_ANNOTATION = "emulator.ferry.dev/rollout"
MANAGER = "simulated (no kubelet)"
# kind -> (API path prefix, plural)
WORKLOADS = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "Job": ("/apis/batch/v1", "jobs"),
}
Key = tuple[str, str, str]  # kind, namespace, name
log = logging.getLogger("simulated-controller")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rollout_fails(obj: dict[str, Any]) -> bool:
    template = (obj.get("spec") or {}).get("template") or {}
    if ((template.get("metadata") or {}).get("annotations") or {}).get(FAIL_ANNOTATION) == "fail":
        return True
    containers = (template.get("spec") or {}).get("containers") or []
    return any("broken" in str(c.get("image", "")).rsplit("/", 1)[-1].partition(":")[2] for c in containers)


def rollout_hangs(obj: dict[str, Any]) -> bool:
    template = (obj.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(FAIL_ANNOTATION) == "hang"


def _condition(type_: str, status: str, reason: str, message: str, update_time: bool = True) -> dict[str, Any]:
    cond = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now()}
    if update_time:
        cond["lastUpdateTime"] = now()
    return cond


def settled(kind: str, obj: dict[str, Any]) -> bool:
    """Its status already answers its current spec (e.g. written before this process restarted)."""
    status = obj.get("status") or {}
    if kind == "Job":
        return any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
    progressing = [c for c in status.get("conditions") or [] if c.get("type") == "Progressing"]
    done = kind != "Deployment" or (progressing and progressing[0].get("reason") != "ReplicaSetUpdated")
    return bool(done) and status.get("observedGeneration") == obj["metadata"].get("generation")


def workload_status(kind: str, obj: dict[str, Any], progressing: bool) -> dict[str, Any]:
    """The status the real controller of `kind` would write: rolling out (`progressing`), failed or rolled out."""
    fails = rollout_fails(obj)
    if kind == "Job":
        return _job_status(obj, progressing, fails)
    if kind == "DaemonSet":
        return _daemonset_status(obj, progressing, fails)
    if kind == "StatefulSet":
        return _statefulset_status(obj, progressing, fails)
    return _deployment_status(obj, progressing, fails)


def _replicas(obj: dict[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def _generation(obj: dict[str, Any]) -> Any:
    return obj["metadata"].get("generation", 1)


def _job_conditions(target: str, final: str, reason: str, message: str) -> list[dict[str, Any]]:
    # NB: the API server validates Job status transitions: the target condition (FailureTarget,
    # SuccessCriteriaMet) precedes the final one (Failed, Complete).
    return [
        _condition(target, "True", reason, message, update_time=False),
        _condition(final, "True", reason, message, update_time=False),
    ]


def _job_status(obj: dict[str, Any], progressing: bool, fails: bool) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    started = (obj.get("status") or {}).get("startTime") or now()
    if progressing:
        return {"active": 1, "startTime": started}
    if fails:
        return {
            "failed": int(spec.get("backoffLimit", 6)) + 1,
            "startTime": started,
            "conditions": _job_conditions(
                "FailureTarget", "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            ),
        }
    # completionTime comes with Complete.
    return {
        "succeeded": int(spec.get("completions", 1)),
        "startTime": started,
        "completionTime": now(),
        "conditions": _job_conditions(
            "SuccessCriteriaMet", "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
        ),
    }


def _daemonset_status(obj: dict[str, Any], progressing: bool, fails: bool) -> dict[str, Any]:
    ready = 0 if (progressing or fails) else 1
    return {
        "observedGeneration": _generation(obj),
        "desiredNumberScheduled": 1,
        "currentNumberScheduled": 1,
        "updatedNumberScheduled": 0 if progressing else 1,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberMisscheduled": 0,
    }


def _statefulset_status(obj: dict[str, Any], progressing: bool, fails: bool) -> dict[str, Any]:
    gen = _generation(obj)
    replicas = _replicas(obj)
    ready = 0 if (progressing or fails) else replicas
    return {
        "observedGeneration": gen,
        "replicas": replicas,
        "readyReplicas": ready,
        "currentReplicas": ready,
        "updatedReplicas": ready,
        "availableReplicas": ready,
        "currentRevision": f"{obj['metadata']['name']}-{gen}",
        "updateRevision": f"{obj['metadata']['name']}-{gen}",
    }


def _deployment_status(obj: dict[str, Any], progressing: bool, fails: bool) -> dict[str, Any]:
    gen = _generation(obj)
    replicas = _replicas(obj)
    if progressing:
        return {
            "observedGeneration": gen,
            "replicas": replicas,
            "updatedReplicas": 0,
            "conditions": [_condition("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet is progressing.")],
        }
    if fails:
        return {
            "observedGeneration": gen,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "unavailableReplicas": replicas,
            "conditions": [
                _condition(
                    "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
                ),
                _condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{obj["metadata"]["name"]}" has timed out progressing.',
                ),
            ],
        }
    return {
        "observedGeneration": gen,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            _condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
            _condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{obj["metadata"]["name"]}" has successfully progressed.',
            ),
        ],
    }


class SimulatedController:
    """One watch thread per workload kind feeds a timer queue; one thread writes the statuses."""

    def __init__(self, api: kubernetes.client.ApiClient, rollout_delay: float = 0.5) -> None:
        self.api = api
        self.dyn = DynamicClient(api)
        self.rollout_delay = rollout_delay
        self.stop = threading.Event()
        self._queue: list[tuple[float, int, Key, int, bool]] = []
        self._seq = 0
        self._cv = threading.Condition()
        self._rolled: dict[Key, tuple[Any, Any]] = {}  # key -> (uid, generation) rolled out or being rolled

    def _request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.dyn.request(method, path, body=body, serialize=False, _request_timeout=30, **params)
        return json.loads(response.data)

    def run(self, ready: Callable[[], None] | None = None) -> None:
        for kind in WORKLOADS:
            self._request("get", self._path(kind), limit=1)  # reachable and allowed, before saying ready
        threads = [
            threading.Thread(target=self._watch, args=(kind,), name=f"watch-{kind}", daemon=True) for kind in WORKLOADS
        ]
        threads.append(threading.Thread(target=self._writer, name="writer", daemon=True))
        for thread in threads:
            thread.start()
        if ready:
            ready()
        self.stop.wait()
        with self._cv:
            self._cv.notify_all()

    @staticmethod
    def _path(kind: str, namespace: str = "", name: str = "") -> str:
        prefix, plural = WORKLOADS[kind]
        if not namespace:
            return f"{prefix}/{plural}"
        return f"{prefix}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    def _watch(self, kind: str) -> None:
        resource_version = ""
        while not self.stop.is_set():
            try:
                if not resource_version:
                    listed = self._request("get", self._path(kind))
                    resource_version = listed["metadata"]["resourceVersion"]
                    for item in listed["items"]:
                        self._on_event(kind, "ADDED", item)
                # DynamicClient.request reads a watch to its end; the bare transport streams it line by line.
                request = self.api.param_serialize(
                    "GET",
                    self._path(kind),
                    query_params=[
                        ("watch", "true"),
                        ("resourceVersion", resource_version),
                        ("allowWatchBookmarks", "true"),
                        ("timeoutSeconds", "60"),
                    ],
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                )
                response = self.api.call_api(*request, _request_timeout=(5, 90)).response
                try:
                    for line in response:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            resource_version = ""  # 410 Gone: list again
                            break
                        resource_version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self._on_event(kind, event["type"], event["object"])
                finally:
                    response.release_conn()
            except Exception as err:  # a watch must outlive any one failure
                if not self.stop.is_set():
                    log.warning("watch %s: %s; retrying", kind, err)
                    resource_version = ""
                    time.sleep(1)

    def _on_event(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        if event == "DELETED":
            self._rolled.pop(key, None)
            return
        identity = (meta.get("uid"), meta.get("generation"))
        if self._rolled.get(key) == identity:
            return
        # once per spec change (uid, generation), like the real controllers; a Job's status has no
        # observedGeneration, so this controller's own status writes must not start another rollout.
        self._rolled[key] = identity
        if settled(kind, obj):
            return
        gen = int(meta.get("generation", 1))
        self._schedule(key, gen, 0.0, progressing=True)
        if rollout_hangs(obj):
            return  # stays Progressing until its spec changes
        self._schedule(key, gen, self.rollout_delay * (2 if rollout_fails(obj) else 1), progressing=False)

    def _schedule(self, key: Key, generation: int, delay: float, progressing: bool) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._queue, (time.monotonic() + delay, self._seq, key, generation, progressing))
            self._cv.notify_all()

    def _writer(self) -> None:
        while not self.stop.is_set():
            with self._cv:
                while not self.stop.is_set() and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._cv.wait(timeout=(self._queue[0][0] - time.monotonic()) if self._queue else 1.0)
                if self.stop.is_set():
                    return
                _, _, key, generation, progressing = heapq.heappop(self._queue)
            try:
                self._write(key, generation, progressing)
            except Exception as err:  # one object's failure must not stop the others
                log.warning("status of %s/%s/%s: %s", *key, err)

    def _write(self, key: Key, generation: int, progressing: bool) -> None:
        kind, namespace, name = key
        path = self._path(kind, namespace, name)
        for _ in range(5):
            try:
                obj = self._request("get", path)
            except ApiException as err:
                if err.status == 404:
                    return  # deleted meanwhile
                raise
            if int(obj["metadata"].get("generation", 1)) != generation:
                return  # superseded by a newer spec; its own entries are queued
            obj["status"] = workload_status(kind, obj, progressing)
            try:
                self._request("put", f"{path}/status", body=obj, field_manager=MANAGER)
                return
            except ApiException as err:
                if err.status != 409:
                    raise  # 409: changed between GET and PUT; read it again


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.kube.controller")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--rollout-delay", type=float, default=0.5, help="simulated rollout time, seconds")
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    api = kubernetes.config.new_client_from_config(args.kubeconfig)
    controller = SimulatedController(api, args.rollout_delay)
    signal.signal(signal.SIGTERM, lambda *_: controller.stop.set())
    signal.signal(signal.SIGINT, lambda *_: controller.stop.set())

    def ready() -> None:
        log.info("simulated workload-status controller (no kubelet) watching %s", ", ".join(WORKLOADS))
        if args.ready_file:
            args.ready_file.write_text("ready\n")

    controller.run(ready)


if __name__ == "__main__":
    main()
