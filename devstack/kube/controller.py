"""SIMULATED workload controller — no container runs anywhere.

It stands in for kube-controller-manager + kubelet so health checks have something to wait for:
Deployments, StatefulSets and DaemonSets reach a rolled-out status, and Jobs complete, `rollout_delay`
seconds after each spec change. Convention to make a rollout FAIL (Progressing=False, reason
ProgressDeadlineExceeded; Jobs: Failed=True, reason BackoffLimitExceeded):
  - any container image whose tag contains "broken" (e.g. ghcr.io/acme/app:1.2.0-broken), or
  - the pod-template annotation  emulator.ferry.dev/rollout: fail
CustomResourceDefinitions become Established=True and NamesAccepted=True at once.
"""

from __future__ import annotations

import heapq
import threading
import time
from typing import Any

from devstack.kube.resources import ResourceType
from devstack.kube.store import ApiError, Store, now

FAIL_ANNOTATION = "emulator.ferry.dev/rollout"
MANAGER = "kube-controller-manager (simulated)"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def rollout_fails(obj: dict[str, Any]) -> bool:
    template = (obj.get("spec") or {}).get("template") or {}
    if ((template.get("metadata") or {}).get("annotations") or {}).get(FAIL_ANNOTATION) == "fail":
        return True
    containers = (template.get("spec") or {}).get("containers") or []
    return any("broken" in str(c.get("image", "")).rsplit("/", 1)[-1].partition(":")[2] for c in containers)


def _condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": now(), "lastTransitionTime": now()}


class SimulatedController:
    def __init__(self, store: Store, rollout_delay: float = 0.5) -> None:
        self.store = store
        self.rollout_delay = rollout_delay
        self._queue: list[tuple[float, int, tuple[str, str, str, str], int]] = []
        self._seq = 0
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="simulated-controller", daemon=True)
        self._rolled: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}  # key -> (uid, generation) rolled out
        store.listeners.append(self._on_event)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def _on_event(self, event: str, rt: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (rt.group, rt.plural, meta.get("namespace", ""), meta["name"])
        if event == "DELETED":
            self._rolled.pop(key, None)
            return
        if rt.kind == "CustomResourceDefinition" and not _established(obj):
            self._schedule(rt, obj, 0.0)
        elif rt.kind in WORKLOADS and self._rolled.get(key) != (meta.get("uid"), meta.get("generation")):
            # NB: once per spec change (generation), like the real controllers; a Job's status has no
            # observedGeneration, so the controller's own status writes must not start another rollout.
            # Called under the store lock; the status write happens on the controller thread.
            self._rolled[key] = (meta.get("uid"), meta.get("generation"))
            self._schedule(rt, obj, 0.0, progressing=True)
            self._schedule(rt, obj, self.rollout_delay * (2 if rollout_fails(obj) else 1))

    def _schedule(self, rt: ResourceType, obj: dict[str, Any], delay: float, progressing: bool = False) -> None:
        meta = obj["metadata"]
        key = (rt.group, rt.plural, meta.get("namespace", ""), meta["name"])
        with self._cv:
            self._seq += 1
            generation = int(meta.get("generation", 1))
            heapq.heappush(self._queue, (time.monotonic() + delay, self._seq, key,
                                         -generation if progressing else generation))
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._cv.wait(timeout=(self._queue[0][0] - time.monotonic()) if self._queue else None)
                if self._stop:
                    return
                _, _, key, generation = heapq.heappop(self._queue)
            try:
                self._reconcile(key, abs(generation), progressing=generation < 0)
            except ApiError:
                pass  # deleted or replaced meanwhile; the next event reschedules

    def _reconcile(self, key: tuple[str, str, str, str], generation: int, progressing: bool) -> None:
        group, plural, namespace, name = key
        with self.store.lock:
            rt = next((t for t in self.store.catalogue.types.values() if t.key == (group, plural)), None)
            if rt is None:
                return
            obj = self.store.get(rt, namespace, name)
            if rt.kind == "CustomResourceDefinition":
                status = {"conditions": [_condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                                         _condition("Established", "True", "InitialNamesAccepted",
                                                    "the initial names have been accepted")],
                          "acceptedNames": (obj.get("spec") or {}).get("names", {}),
                          "storedVersions": [v["name"] for v in (obj.get("spec") or {}).get("versions", [])
                                             if v.get("storage")]}
            else:
                if obj["metadata"].get("generation") != generation:
                    return  # superseded by a newer spec; its own entries are queued
                status = self._workload_status(rt.kind, obj, progressing)
            obj["status"] = status
            self.store.update(rt, namespace, name, obj, MANAGER, subresource="status")

    @staticmethod
    def _workload_status(kind: str, obj: dict[str, Any], progressing: bool) -> dict[str, Any]:
        spec = obj.get("spec") or {}
        gen = obj["metadata"].get("generation", 1)
        replicas = int(spec.get("replicas", 1)) if kind != "DaemonSet" else 1
        fails = rollout_fails(obj)
        if kind == "Job":
            if progressing:
                return {"active": 1, "startTime": now()}
            if fails:
                return {"failed": int(spec.get("backoffLimit", 6)) + 1, "startTime": now(), "conditions": [
                    _condition("Failed", "True", "BackoffLimitExceeded",
                               "Job has reached the specified backoff limit")]}
            return {"succeeded": int(spec.get("completions", 1)), "startTime": now(), "completionTime": now(),
                    "conditions": [_condition("Complete", "True", "", "")]}
        if kind == "DaemonSet":
            ready = 0 if (progressing or fails) else 1
            return {"observedGeneration": gen, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                    "updatedNumberScheduled": 1 - (1 if progressing else 0), "numberReady": ready,
                    "numberAvailable": ready, "numberMisscheduled": 0}
        if kind == "StatefulSet":
            ready = 0 if (progressing or fails) else replicas
            return {"observedGeneration": gen, "replicas": replicas, "readyReplicas": ready,
                    "currentReplicas": ready, "updatedReplicas": ready, "availableReplicas": ready,
                    "currentRevision": f"{obj['metadata']['name']}-{gen}",
                    "updateRevision": f"{obj['metadata']['name']}-{gen}"}
        if progressing:
            return {"observedGeneration": gen, "replicas": replicas, "updatedReplicas": 0, "conditions": [
                _condition("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet is progressing.")]}
        if fails:
            return {"observedGeneration": gen, "replicas": replicas, "updatedReplicas": replicas,
                    "unavailableReplicas": replicas, "conditions": [
                        _condition("Available", "False", "MinimumReplicasUnavailable",
                                   "Deployment does not have minimum availability."),
                        _condition("Progressing", "False", "ProgressDeadlineExceeded",
                                   f'ReplicaSet "{obj["metadata"]["name"]}" has timed out progressing.')]}
        return {"observedGeneration": gen, "replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": replicas, "availableReplicas": replicas, "conditions": [
                    _condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                    _condition("Progressing", "True", "NewReplicaSetAvailable",
                               f'ReplicaSet "{obj["metadata"]["name"]}" has successfully progressed.')]}


def _established(crd: dict[str, Any]) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions", []))
