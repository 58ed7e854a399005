"""Helm hooks on the cluster, the way Helm v4.3.2 runs them (pkg/action/hooks.go:60-160; HELM-PLAN §4).

Contract of ``Hooks._run_hooks`` (one event, called by the reconcile around its apply, prune and inventory):
- The event's hooks in Helm's order (ferry.hooks.runs_for: weight, then name; a test hook never runs). Each is
  prepared (ferry.hooks.prepare_hook: the environment's namespace when its kind is namespaced; labels
  ``ferry.dev/hook-of: ENV`` and ``ferry.dev/hook: EVENT``, never the environment label, so a hook stays out of the
  inventory, prune, drift and health listing).
- Before anything of the event is applied: a kind the cluster does not serve is BadInput; a hook outside the
  environment's namespaces or cluster kinds (ferry.plan.outside's rule) is OutOfBounds; a live object of a hook's
  name that is another environment's hook or any environment's release object is OutOfBounds (never deleted).
- Per hook: ``before-hook-creation`` (the default) deletes the old copy and waits until it is gone; then a
  server-side apply (as the environment's service account when it has one) and a wait: a Job until its Complete
  or Failed condition, a Pod until Succeeded or Failed, any other kind not at all; each wait bounded by ``timeout``
  (HOOK_TIMEOUT, Helm's --timeout of 300 s). The waits poll the API server, and every request of a Cluster
  heartbeats the activity, renews the reconcile's lease and notices a cancellation (activities/cluster/client.py);
  outside an activity (tests) the requests just run.
- A hook that fails or times out: ``hook-failed`` deletes it, ``hook-succeeded`` deletes the ones done before it
  (each awaited, best effort as in Helm: a failed cleanup is named in the message), and HookFailed (non-retryable)
  is raised: ``<event> hook Job/ns/name failed: <reason: message>``, its one detail the hooks run (as returned).
  All succeeded: ``hook-succeeded`` deletes them in reverse order, each awaited gone. A CustomResourceDefinition
  hook is never deleted. Deletes are Background propagation, as Helm's (hooks.go:193,
  pkg/kube/client.go:1065-1073), so a Job's pods go with it.
- Returns the hooks run, ``Kind/ns/name event`` each, for the record.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from temporalio.exceptions import ApplicationError

from activities.cluster.client import _UNAVAILABLE, Cluster, _classified
from activities.errors import classified
from ferry.errors import ErrorType
from ferry.hooks import (
    FAILED,
    HOOK_EVENT_LABEL,
    HOOK_OF_LABEL,
    HOOK_POLL_SECONDS,
    HOOK_TIMEOUT,
    RUNNING,
    SUCCEEDED,
    Hook,
    deletes_before_creation,
    deletions,
    hook_state,
    runs_for,
)
from ferry.plan import ENVIRONMENT_LABEL, ObjectId, Refused, outside, prepare, shown

_AWAITED = ("Job", "Pod")
# A hook's kind may be defined by a CRD applied moments ago (crds/, before the pre-hooks as in Helm's install):
# discovery can lag its Established condition. A kind still not served after this is BadInput.
DISCOVERY_WAIT = 5.0


# ------------------------------------------------------------------ pure rules that need ferry.plan
def prepare_hook(hook: Hook, environment: str, event: str, default_namespace: str, namespaced: bool) -> dict[str, Any]:
    """The hook object as Ferry applies it: ferry.plan.prepare's rules (the default namespace on a namespaced
    kind, no server metadata, no status, stringData folded), then the hook labels instead of the environment
    label (one the chart sets itself is dropped too: a hook never joins any environment's inventory)."""
    out = prepare(hook.object, environment, default_namespace, namespaced)
    labels = {k: v for k, v in out["metadata"]["labels"].items() if k != ENVIRONMENT_LABEL}
    labels.update({HOOK_OF_LABEL: environment, HOOK_EVENT_LABEL: event})
    out["metadata"]["labels"] = labels
    return out


def hook_id(obj: Mapping[str, Any], event: str) -> str:
    """How a run hook is recorded: ``Kind/ns/name event``."""
    return f"{ObjectId.of(obj)} {event}"


def confine_hooks(
    environment: str,
    event: str,
    prepared: Sequence[Mapping[str, Any]],
    namespaces: Collection[str],
    cluster_kinds: Collection[str],
) -> None:
    """Refuse (Refused OUT_OF_BOUNDS) the event's hooks when any is outside the environment's namespaces and
    cluster kinds (ferry.plan.outside, the release objects' own rule), naming each; ``prepared`` by prepare_hook
    (a namespace on namespaced kinds only)."""
    refused = [
        why
        for d in prepared
        if (why := outside(ObjectId.of(d), bool(d["metadata"].get("namespace")), namespaces, cluster_kinds))
    ]
    # a Namespace hook is deleted and re-created like any hook: with everything in it
    refused += [f"{ObjectId.of(d)}: a Namespace is never a hook" for d in prepared if d.get("kind") == "Namespace"]
    if refused:
        raise Refused(
            ErrorType.OUT_OF_BOUNDS,
            f"{len(refused)} {event} hook(s) outside environment {environment}'s bounds; "
            f"no {event} hook was applied: {shown(refused)}",
        )


def hook_conflict(live: Mapping[str, Any] | None, environment: str) -> str:
    """Why the live object a hook of ``environment`` would replace or apply over is not that environment's hook to
    touch, or ''. Another environment's hook, any environment's release object (it carries the environment label:
    deleting it for a hook would take it from under its inventory) and an unlabelled one (an operator's) are refused
    and never deleted."""
    if live is None:
        return ""
    labels = (live.get("metadata") or {}).get("labels") or {}
    owner = labels.get(ENVIRONMENT_LABEL)
    if owner:
        return f"it is a release object of environment {owner}, not a hook"
    hook_of = labels.get(HOOK_OF_LABEL)
    if hook_of and hook_of != environment:
        return f"it is a hook of environment {hook_of}"
    if not hook_of:
        # NB: a hook is deleted and re-created (before-hook-creation, hook-succeeded): an object nobody labelled as
        # this environment's hook (an operator's Secret, a ServiceAccount) is never taken over to be deleted
        return "it exists and is not a hook of this environment (delete it, or rename the hook)"
    return ""


@dataclass
class _Staged:
    """One hook ready to run: its API resource and the object as applied."""

    hook: Hook
    resource: Any
    obj: dict[str, Any]

    @property
    def id(self) -> ObjectId:
        return ObjectId.of(self.obj)


class Hooks:
    """Run a chart's Helm hooks for one event (the reconcile activity inherits it)."""

    def _run_hooks(
        self,
        cluster: Cluster,
        hooks: Sequence[Hook],
        event: str,
        *,
        environment: str,
        namespace: str,
        namespaces: Collection[str],
        cluster_kinds: Collection[str],
        as_user: str | None = None,
        timeout: float = HOOK_TIMEOUT,
    ) -> list[str]:
        """Run ``event``'s hooks (the module's contract); the hooks run, ``Kind/ns/name event`` each."""
        chosen = runs_for(hooks, event)
        if not chosen:
            return []
        with _classified(f"{event} hooks of {environment}"):
            staged = self._stage_hooks(cluster, chosen, event, environment, namespace)
            confine_hooks(environment, event, [s.obj for s in staged], namespaces, cluster_kinds)
            self._refuse_taken(cluster, staged, event, environment)
            return self._execute(cluster, staged, event, environment, as_user, timeout)

    @staticmethod
    def _stage_hooks(
        cluster: Cluster, chosen: list[Hook], event: str, environment: str, namespace: str
    ) -> list[_Staged]:
        staged: list[_Staged] = []
        for hook in chosen:
            api_version = str(hook.object.get("apiVersion", ""))
            try:
                resource = cluster.resource(api_version, hook.kind, wait=DISCOVERY_WAIT)
            except ResourceNotFoundError:
                raise classified(
                    ErrorType.BAD_INPUT,
                    f"{event} hook {hook.kind}/{hook.name} ({hook.path}): {hook.kind} ({api_version}) is not served "
                    f"by the cluster; no {event} hook was applied",
                ) from None
            obj = prepare_hook(hook, environment, event, namespace, bool(resource.namespaced))
            staged.append(_Staged(hook, resource, obj))
        return staged

    @staticmethod
    def _refuse_taken(cluster: Cluster, staged: list[_Staged], event: str, environment: str) -> None:
        """A live object of a hook's name that is not this environment's hook to replace refuses the event."""
        taken: list[str] = []
        for s in staged:
            why = hook_conflict(cluster.get(s.resource, s.id.name, s.id.namespace or None), environment)
            if why:
                taken.append(f"{s.id}: {why}")
        if taken:
            raise classified(
                ErrorType.OUT_OF_BOUNDS,
                f"{len(taken)} {event} hook(s) of environment {environment} name objects that are not its hooks; "
                f"nothing was deleted or applied: {shown(taken)}",
            )

    def _execute(
        self, cluster: Cluster, staged: list[_Staged], event: str, environment: str, as_user: str | None, timeout: float
    ) -> list[str]:
        ran: list[str] = []
        done: list[_Staged] = []
        by_hook = {id(s.hook): s for s in staged}
        deadline = time.monotonic() + timeout  # one budget for the event's hooks, as the activity has one
        for s in staged:
            timeout = max(1.0, deadline - time.monotonic())
            if deletes_before_creation(s.hook):
                self._delete_hook(cluster, s, event, environment, as_user, timeout)
            with _classified(f"{event} hook {s.id}"):
                cluster.apply(s.resource, dict(s.obj), as_user=as_user)
            ran.append(hook_id(s.obj, event))
            state, why = self._await_hook(cluster, s, timeout)
            if state != SUCCEEDED:
                doomed = [by_hook[id(h)] for h in deletions([d.hook for d in done], s.hook)]
                failed_cleanup = self._cleanup_after_failure(cluster, doomed, event, environment, as_user, timeout)
                raise classified(ErrorType.HOOK_FAILED, f"{event} hook {s.id} failed: {why}{failed_cleanup}", ran)
            done.append(s)
        for hook in deletions([d.hook for d in done]):
            self._delete_hook(cluster, by_hook[id(hook)], event, environment, as_user, timeout)
        return ran

    @staticmethod
    def _await_hook(cluster: Cluster, s: _Staged, timeout: float) -> tuple[str, str]:
        """(SUCCEEDED | FAILED, why) of an applied hook: a Job or Pod polled until it finishes, bounded."""
        if s.hook.kind not in _AWAITED:
            return SUCCEEDED, "ready at once"
        deadline = time.monotonic() + timeout
        while True:
            live = cluster.get(s.resource, s.id.name, s.id.namespace or None)
            if live is None:
                return FAILED, "it was deleted before it finished"
            state, why = hook_state(live)
            if state != RUNNING:
                return state, why
            if time.monotonic() >= deadline:
                return FAILED, f"timed out after {timeout:g} s waiting for it to finish (Helm's --timeout): {why}"
            time.sleep(HOOK_POLL_SECONDS)

    @staticmethod
    def _delete_hook(
        cluster: Cluster, s: _Staged, event: str, environment: str, as_user: str | None, timeout: float
    ) -> None:
        """Delete the live copy of a hook (Background propagation) and wait until it is gone, bounded; one that is
        not this environment's hook (taken since the event started) is refused, never deleted."""
        live = cluster.get(s.resource, s.id.name, s.id.namespace or None)
        if live is None:
            return
        why = hook_conflict(live, environment)
        if why:
            raise classified(ErrorType.OUT_OF_BOUNDS, f"{event} hook {s.id}: {why}; it was not deleted")
        with _classified(f"delete {event} hook {s.id}"):
            cluster.delete(s.resource, s.id.name, s.id.namespace or None, as_user=as_user)
        deadline = time.monotonic() + timeout
        while cluster.get(s.resource, s.id.name, s.id.namespace or None) is not None:
            if time.monotonic() >= deadline:
                raise classified(
                    ErrorType.HOOK_FAILED,
                    f"{event} hook {s.id}: still there {timeout:g} s after its delete (a finalizer?)",
                )
            time.sleep(HOOK_POLL_SECONDS)

    def _cleanup_after_failure(
        self, cluster: Cluster, doomed: list[_Staged], event: str, environment: str, as_user: str | None, timeout: float
    ) -> str:
        """Helm's deletions after a failed hook (hook-failed, then hook-succeeded of those done, each awaited), best
        effort (Helm logs a failed one and reports the hook's failure): the failed deletes, for the message."""
        failed: list[str] = []
        for s in doomed:
            try:
                self._delete_hook(cluster, s, event, environment, as_user, timeout)
            except (ApplicationError, ApiException, *_UNAVAILABLE) as err:
                failed.append(f"{s.id}: {err}"[:200])
        return f" (and its {event} hooks' cleanup failed: {shown(failed)})" if failed else ""
