"""The reconcile activity: read, plan, dry run, apply staged, prune, write the inventory."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.client import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from temporalio import activity

from activities.bundle import render
from activities.cluster.client import (
    _UNAVAILABLE,
    Cluster,
    _classified,
    _only_its_own_workflow,
    _rejects_object,
    _server_message,
)
from activities.cluster.clusters import Clients
from activities.cluster.hooks import Hooks
from activities.cluster.inventory import Inventory
from activities.errors import classified
from activities.helm.deliver import ChartRender, render_release
from activities.secrets import Decrypted, DecryptionFailed, decrypted
from activities.secrets.hashes import named_by_hash
from activities.secrets.redacted import redacted
from ferry.errors import ErrorType
from ferry.health import object_status, snapshot
from ferry.helm_oci import HELM_CHART_MEDIA_TYPE
from ferry.hooks import CRD_KIND, HOOK_TIMEOUT, POST_INSTALL, POST_UPGRADE, PRE_INSTALL, PRE_UPGRADE, Hook, runs_for
from ferry.oci import FLUX_CONTENT_MEDIA_TYPE
from ferry.plan import (
    AWAITED_KINDS,
    ENVIRONMENT_LABEL,
    WRITES,
    Kind,
    ObjectId,
    Plan,
    check_unique,
    confine,
    crd_scopes,
    environment_selector,
    kinds_to_list,
    plan,
    prepare,
    rejection,
)
from ferry.reconcile import ChangeSet, HealthState, ReconcileInput, ReconcileResult
from ferry.rollout_objects import canary_managed


@dataclass(frozen=True)
class Release:
    """What one reconcile applies: the objects, and for a chart its render (hooks, crds/ CRDs) and the inventory
    it read to decide install or upgrade (before the lease: checked again under it)."""

    objects: list[dict[str, Any]]
    chart: ChartRender | None = None
    inventory: tuple[dict[str, str], dict[str, Any] | None] | None = None

    @property
    def key(self) -> str:
        """A chart's release identity (recorded in the inventory: its hooks ran for it); "" for manifests."""
        return self.chart.release if self.chart is not None else ""

    def hooks_due(self, inventory_obj: dict[str, Any] | None) -> tuple[Hook, ...]:
        """The chart's hooks when this is a new release (an install, or other chart, values or name than the
        inventory records); none for a drift revert or a re-render of the same release."""
        if self.chart is None or not self.chart.rendered.hooks:
            return ()
        recorded = ((inventory_obj or {}).get("data") or {}).get("release")
        return () if inventory_obj is not None and recorded == self.key else self.chart.rendered.hooks

    def tracked(self, entries: dict[str, str]) -> dict[str, str]:
        """The inventory entries to record: a chart's crds/ CRDs are left out unless its spec says prune-crds, so
        prune never deletes them (Helm never deletes them either)."""
        if self.chart is None or not self.chart.crd_names or self.chart.prune_crds:
            return entries
        return {k: v for k, v in entries.items() if not self.chart.is_crd(ObjectId.parse(k, v))}


PRE, POST = "pre", "post"


def _canary_managed(objects: list[dict[str, Any]], input: ReconcileInput) -> list[dict[str, Any]]:
    """With a rollout strategy, its workload W as the canary (ferry.rollout_objects.canary_managed: no replicas,
    the canary role label); a release without W in the environment's namespace is refused (RolloutRefused)."""
    if not input.canary_workload:
        return objects
    out = [
        canary_managed(o, input.canary_workload)
        if (o.get("metadata") or {}).get("namespace") in (None, "", input.namespace)
        else o
        for o in objects
    ]
    if all(a is b for a, b in zip(out, objects, strict=True)):
        raise classified(
            ErrorType.ROLLOUT_REFUSED,
            f"environment {input.environment}'s strategy rolls out Deployment {input.canary_workload} "
            f"(namespace {input.namespace}) and its release has no such Deployment; nothing was applied",
        )
    return out


def hook_event(phase: str, is_upgrade: bool) -> str:
    if phase == PRE:
        return PRE_UPGRADE if is_upgrade else PRE_INSTALL
    return POST_UPGRADE if is_upgrade else POST_INSTALL


def hook_timeout(margin: float = 30.0) -> float:
    """Helm's --timeout per hook (HOOK_TIMEOUT), within what is left of this activity's start-to-close."""
    if not activity.in_activity():
        return HOOK_TIMEOUT
    info = activity.info()
    if info.start_to_close_timeout is None:
        return HOOK_TIMEOUT
    elapsed = (datetime.now(UTC) - info.started_time).total_seconds()
    return max(1.0, min(HOOK_TIMEOUT, info.start_to_close_timeout.total_seconds() - elapsed - margin))


class Reconcile(Clients, Inventory, Hooks):
    """The reconcile_environment activity and its steps."""

    @activity.defn(name="reconcile_environment")
    def reconcile_environment(self, input: ReconcileInput) -> ReconcileResult:
        _only_its_own_workflow(input.environment)
        oci_chart = input.helm is not None and not input.helm.chart  # the artifact is itself an OCI chart
        media_type = HELM_CHART_MEDIA_TYPE if oci_chart else FLUX_CONTENT_MEDIA_TYPE
        root, revision = self._cache.ensure(input.repository, input.digest, media_type)
        cluster = self.cluster(input.cluster, input.kubeconfig, input.context, input=input)
        cluster.counter.requests = 0
        what = f"{input.helm.chart or 'the chart'}" if input.helm else input.path
        with self._decrypted(root, input) as secrets, redacted(secrets.redactor if secrets else None):
            with _classified(f"render {what} of {input.repository}@{input.digest[:19]}"):
                release = self._render(cluster, input, secrets.root if secrets else root, cacheable=secrets is None)
            if not release.objects and not input.allow_empty:
                raise classified(
                    ErrorType.RENDER_FAILED,
                    f"{input.repository}@{input.version} renders no objects at {what!r}; refusing to "
                    "prune the whole environment (set allow-empty: true to permit it)",
                )
            with _classified(f"reconcile {input.environment}"), self._lease(cluster, input):
                result = self._reconcile(cluster, input, release, revision)
            return named_by_hash(result, release.objects, input.namespace, secrets, self._cache.directory)

    @contextlib.contextmanager
    def _decrypted(self, root: Path, input: ReconcileInput) -> Iterator[Decrypted | None]:
        """The release with its SOPS files decrypted in a private copy (activities.secrets), or None when it has
        none; DecryptionFailed (non-retryable: the previous release keeps running) for every refusal."""
        try:
            with decrypted(root, input.decryption == "sops", self.age_keys_for(input), input.environment) as found:
                yield found
        except DecryptionFailed as err:
            raise classified(ErrorType.DECRYPTION_FAILED, f"{input.environment}: {err}; nothing was applied") from None

    def _render(self, cluster: Cluster, input: ReconcileInput, root: Path, cacheable: bool = True) -> Release:
        """The release's objects: its path's manifests, or its chart rendered for this cluster (activities.helm).
        A decrypted release is never ``cacheable``: its render holds plaintext."""
        if input.helm is None:
            return Release(render(root / input.path if input.path != "." else root, root))
        with _classified(f"read {input.environment}'s capabilities"):
            capabilities = cluster.capabilities()
            inventory = self._read_inventory(cluster, input.environment)
        is_upgrade = inventory[1] is not None
        access = cluster.helm_access(input.helm.lookup_as) if input.helm.lookup_as else None
        chart = render_release(
            root,
            input.digest,
            input.helm,
            input.namespace,
            capabilities,
            is_upgrade,
            self._cache.directory,
            access,
            cacheable=cacheable,
        )
        return Release(chart.objects, chart, inventory)

    def _reconcile(self, cluster: Cluster, input: ReconcileInput, release: Release, revision: str) -> ReconcileResult:
        """read -> plan -> dry run -> apply staged -> prune -> write inventory -> snapshot (fluxcd/pkg ssa's verbs).
        Every refusal (bounds, duplicates, another environment's objects, the server's dry runs of what it can
        judge now) comes before the first write. A chart's hooks run around the writes (pre-* before the first,
        post-* after the inventory)."""
        objects = _canary_managed(self._without_shared_crds(cluster, release, input.environment), input)
        resources, namespaced = self._discover(cluster, objects)
        desired = [
            prepare(o, input.environment, input.namespace, namespaced[(o["apiVersion"], o["kind"])]) for o in objects
        ]
        check_unique(desired)
        allowed = confine(input.environment, input.namespace, input.namespaces, input.cluster_kinds, desired)
        as_user = f"system:serviceaccount:{input.namespace}:{input.service_account}" if input.service_account else None
        # NB: read again under the lease (a chart was rendered before it): what another reconcile wrote meanwhile
        inventory, inventory_obj = self._read_inventory(cluster, input.environment)
        if release.inventory is not None and (release.inventory[1] is None) != (inventory_obj is None):
            raise classified(
                ErrorType.LEASE_HELD,
                f"{input.environment}: another reconcile wrote its inventory while this one rendered; retrying",
            )
        live = self._list_live(cluster, input.environment, resources, kinds_to_list(desired, inventory))
        planned = plan(
            desired,
            live,
            inventory,
            prune=input.prune,
            namespaces=allowed,
            cluster_kinds=input.cluster_kinds,
            unserved={k for k, r in resources.items() if r is None},
        )
        if not input.check_only:
            self._refuse_foreign(cluster, resources, planned, input.environment)
        self._validate(cluster, resources, planned, as_user)
        if input.dry_run:
            return ReconcileResult(
                changes=ChangeSet(unchanged=planned.unchanged),
                health=HealthState(),
                revision=revision,
                plan=planned.entries(),
            )
        if input.check_only:
            return self._check(cluster, input, planned, inventory_obj, revision, release)
        return self._write(cluster, input, release, planned, resources, allowed, as_user, inventory_obj, revision)

    def _write(
        self,
        cluster: Cluster,
        input: ReconcileInput,
        release: Release,
        planned: Plan,
        resources: dict[Kind, Any],
        allowed: Collection[str],
        as_user: str | None,
        inventory_obj: dict[str, Any] | None,
        revision: str,
    ) -> ReconcileResult:
        """pre-hooks (after the definitions) -> apply staged -> prune -> write inventory -> post-hooks."""
        changes = ChangeSet(unchanged=planned.unchanged)
        hooks = release.hooks_due(inventory_obj)

        def run_hooks(phase: str) -> None:
            event = hook_event(phase, is_upgrade=inventory_obj is not None)
            changes.hooks += self._run_hooks(
                cluster,
                hooks,
                event,
                environment=input.environment,
                namespace=input.namespace,
                namespaces=allowed,
                cluster_kinds=input.cluster_kinds,
                as_user=as_user,
                timeout=hook_timeout(),
            )

        self._apply_staged(
            cluster, resources, planned, changes, input.drift_baseline, as_user, between=lambda: run_hooks(PRE)
        )
        kept = release.tracked(self._prune(cluster, resources, planned, changes, as_user))
        post = bool(runs_for(hooks, hook_event(POST, is_upgrade=inventory_obj is not None)))
        # NB: the release is recorded as done only once its post-hooks succeeded: a failed one runs again
        recorded = ((inventory_obj or {}).get("data") or {}).get("release", "")
        key = recorded if post else release.key
        self._write_inventory(cluster, input.environment, kept, input.digest, input.version, inventory_obj, key)
        run_hooks(POST)
        if post:
            self._write_inventory(cluster, input.environment, kept, input.digest, input.version, None, release.key)
        changes.api_requests = cluster.counter.requests
        return ReconcileResult(
            changes=changes, revision=revision, health=planned.rollout_health(kept, changes.summary(), input.digest)
        )

    @staticmethod
    def _without_shared_crds(cluster: Cluster, release: Release, environment: str) -> list[dict[str, Any]]:
        """A chart's crds/ CRD that another environment applied is left to it (two releases of one chart share
        their CRDs; Helm skips crds/ that exist): applied only by the first, never refused as another's object."""
        chart = release.chart
        if chart is None or not chart.crd_names:
            return release.objects
        resource = cluster.resource("apiextensions.k8s.io/v1", CRD_KIND)
        shared: set[str] = set()
        for name in sorted(chart.crd_names):
            live = cluster.get(resource, name, None)
            owner = ((live or {}).get("metadata", {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
            if owner and owner != environment:
                shared.add(name)
        return [o for o in release.objects if not (o.get("kind") == CRD_KIND and o["metadata"].get("name") in shared)]

    @staticmethod
    def _discover(cluster: Cluster, objects: list[dict[str, Any]]) -> tuple[dict[Kind, Any], dict[Kind, bool]]:
        """The API resource of every kind the artifact has (None for one the cluster does not serve yet but a CRD
        of the artifact defines: applied in this run), and whether the kind is namespaced. Any other unserved
        kind refuses the reconcile (BadInput)."""
        scopes = crd_scopes(objects)
        resources: dict[Kind, Any] = {}
        for key in dict.fromkeys((o["apiVersion"], o["kind"]) for o in objects):
            try:
                resources[key] = cluster.resource(*key)
            except ResourceNotFoundError:
                if key not in scopes:
                    raise classified(
                        ErrorType.BAD_INPUT,
                        f"{key[1]} ({key[0]}) is not served by the cluster and no "
                        "CustomResourceDefinition in the artifact defines it",
                    ) from None
                resources[key] = None
        namespaced = {k: r.namespaced if r is not None else scopes[k] == "Namespaced" for k, r in resources.items()}
        return resources, namespaced

    @staticmethod
    def _list_live(
        cluster: Cluster, environment: str, resources: dict[Kind, Any], kinds: list[Kind]
    ) -> dict[str, dict[str, Any]]:
        """The environment's labelled objects by key: one LIST per kind, not a GET per object. A kind not served
        (yet) has none; one served by now is remembered in `resources`."""
        live: dict[str, dict[str, Any]] = {}
        for kind in kinds:
            resource = resources.get(kind)
            if resource is None:
                try:
                    resource = resources[kind] = cluster.resource(*kind)
                except ResourceNotFoundError:
                    continue  # its CRD is gone or not yet applied: nothing of it is live
            for item in cluster.list(resource, environment_selector(environment)):
                live[ObjectId.of(item).key()] = item
        return live

    @staticmethod
    def _refuse_foreign(cluster: Cluster, resources: dict[Kind, Any], planned: Plan, environment: str) -> None:
        """A create is an object not among this environment's labelled ones; one that exists under another
        environment's label is that environment's, never taken over (an unlabelled one is adopted): OutOfBounds."""
        rejected: list[str] = []
        for obj, change in planned.writes():
            resource = resources[(obj["apiVersion"], obj["kind"])]
            if change.action != "create" or resource is None:
                continue
            found = cluster.get(resource, obj["metadata"]["name"], obj["metadata"].get("namespace") or None)
            owner = ((found or {}).get("metadata", {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
            if owner and owner != environment:
                rejected.append(f"{change.id}: belongs to environment {owner}")
        if rejected:
            raise classified(
                ErrorType.OUT_OF_BOUNDS,
                f"{len(rejected)} object(s) of the artifact belong to another "
                f"environment; nothing was applied: {'; '.join(rejected[:5])}",
            )

    def _validate(self, cluster: Cluster, resources: dict[Kind, Any], planned: Plan, as_user: str | None) -> None:
        """Dry-run every write the server can judge now, before any write; a candidate update is confirmed by
        the server's answer, so a value it merely normalises (cpu 0.5 -> 500m) is neither drift nor a write. Every
        object the server rejects is named at once (BadInput)."""
        rejected: list[str] = []
        for n, (obj, change) in enumerate(zip(planned.desired, planned.changes, strict=True)):
            if change.action not in WRITES or planned.deferred(obj):
                continue
            dry = self._dry_run(cluster, resources, obj, rejected, as_user)
            if dry is not None and change.action == "update":
                planned.confirm(n, dry)
        if rejected:
            raise classified(ErrorType.BAD_INPUT, rejection(rejected, len(planned.desired)))

    def _check(
        self,
        cluster: Cluster,
        input: ReconcileInput,
        planned: Plan,
        inventory_obj: dict[str, Any] | None,
        revision: str,
        release: Release,
    ) -> ReconcileResult:
        """The iteration's no-op check (a local activity): report what a reconcile would write, write nothing;
        health is a verdict only when nothing is pending."""
        pending = (
            len(planned.writes())
            + len(planned.prune)
            + self._inventory_differs(
                release.tracked(planned.inventory()), input.digest, input.version, inventory_obj, release.key
            )
        )
        health = snapshot(planned.live_objects(), input.digest) if not pending else HealthState()
        changes = ChangeSet(unchanged=planned.unchanged, api_requests=cluster.counter.requests)
        return ReconcileResult(changes=changes, health=health, revision=revision, pending=pending)

    def _apply_staged(
        self,
        cluster: Cluster,
        resources: dict[Kind, Any],
        planned: Plan,
        changes: ChangeSet,
        drift_baseline: bool,
        as_user: str | None,
        between: Callable[[], None] | None = None,
    ) -> None:
        """Apply stage by stage (definitions, then the rest); what the rest defers to the definitions is dry-run
        once they are ready, before any of it is written. CRDs and Namespaces are awaited as they are applied.
        ``between`` runs once the definitions are in (a chart's pre-hooks: Helm installs crds/ before them)."""
        for n, stage in enumerate(planned.stages()):
            if n == 1 and between is not None:
                between()
            rejected: list[str] = []
            for obj in stage.deferred:
                key = (obj["apiVersion"], obj["kind"])
                if resources[key] is None:
                    resources[key] = cluster.resource(*key, wait=10.0)  # its CRD was established just now
                self._dry_run(cluster, resources, obj, rejected, as_user)
            if rejected:
                raise classified(
                    ErrorType.BAD_INPUT, rejection(rejected, len(planned.desired), changes.created + changes.updated)
                )
            for obj, change in stage.writes:
                resource = resources[(obj["apiVersion"], obj["kind"])]
                cluster.apply(resource, dict(obj), as_user=as_user)
                (changes.created if change.action == "create" else changes.updated).append(str(change.id))
                if change.action == "update" and drift_baseline:
                    changes.drift[str(change.id)] = change.fields
                if obj["kind"] in AWAITED_KINDS:
                    self._wait_ready(cluster, resource, obj)

    @staticmethod
    def _prune(
        cluster: Cluster, resources: dict[Kind, Any], planned: Plan, changes: ChangeSet, as_user: str | None
    ) -> dict[str, str]:
        """Delete the stale objects the plan prunes (in delete order) and report the ones it skips (annotated, or
        outside the environment's bounds: dropped from its inventory). The next inventory: the desired objects
        and every failed delete (retried next time)."""
        kept = planned.inventory()
        for change in planned.prune:
            oid = change.id
            if change.action == "skip":
                changes.prune_skipped.append(str(oid))
                continue
            try:
                resource = resources.get((oid.api_version, oid.kind)) or cluster.resource(oid.api_version, oid.kind)
                cluster.delete(resource, oid.name, oid.namespace or None, as_user=as_user)
                changes.deleted.append(str(oid))
            except (ApiException, *_UNAVAILABLE) as err:
                changes.prune_failed.append(f"{oid}: {err}"[:300])
                kept[oid.key()] = oid.api_version
        return kept

    @staticmethod
    def _dry_run(
        cluster: Cluster,
        resources: dict[Kind, Any],
        obj: dict[str, Any],
        rejected: list[str],
        as_user: str | None = None,
    ) -> dict[str, Any] | None:
        """The object as a server-side dry-run apply would leave it. A rejection of the object itself
        (``_rejects_object``) is collected with the server's message instead of raised, so every one is reported
        at once."""
        try:
            return cluster.apply(resources[(obj["apiVersion"], obj["kind"])], dict(obj), dry_run=True, as_user=as_user)
        except ApiException as err:
            if _rejects_object(err):
                rejected.append(f"{ObjectId.of(obj)}: {_server_message(err)}")
                return None
            raise

    def _wait_ready(self, cluster: Cluster, resource: Any, obj: dict[str, Any], timeout: float = 30.0) -> None:
        """Namespaces and CRDs must exist (CRDs established) before what lives in them is applied."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = cluster.get(resource, obj["metadata"]["name"], None)
            if live is not None and object_status(live)[0] == "Current":
                if obj["kind"] == "CustomResourceDefinition":
                    cluster.dyn.resources.invalidate_cache()
                return
            time.sleep(0.1)
        raise classified(
            ErrorType.CLUSTER_UNAVAILABLE, f"{obj['kind']}/{obj['metadata']['name']} not ready after {timeout:.0f}s"
        )

    # --------------------------------------------------------------------------------------- health
