"""EnvironmentWorkflow: one per environment, forever (continue-as-new): resolve, reconcile, health, record."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import pydantic

    from ferry.durations import parse_duration
    from ferry.environment import (
        ActorRequest,
        Applied,
        EnvironmentInput,
        EnvironmentState,
        EnvironmentStatus,
        Event,
        HealthInput,
        HealthResult,
        HealthState,
        LenientPayload,
        Pin,
        PinRequest,
        PlanRequest,
        PlanResult,
        ReconcileInput,
        ReconcileResult,
        ResolveInput,
        ResolveResult,
        SpecUpdate,
        VersionRef,
    )
    from ferry.errors import ErrorType
    from ferry.versions import try_parse_tag
    from workflows import metrics, policies
    from workflows.search_attributes import FERRY_ENVIRONMENT, FERRY_PHASE, FERRY_REPOSITORY, FERRY_VERSION



def _cause_type(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else err
    return cause.type or "" if isinstance(cause, ApplicationError) else type(cause).__name__


def _cause_message(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) else err
    return str(getattr(cause, "message", cause))[:500]


@workflow.defn(name="EnvironmentWorkflow")
class EnvironmentWorkflow:
    @workflow.init
    def __init__(self, input: EnvironmentInput) -> None:
        self._state: EnvironmentState = input.state
        self._wake = False
        self._iterations_this_run = 0
        self._published: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------------- helpers
    def _now(self) -> str:
        return workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _record(self, type_: str, message: str, **fields: object) -> Event:
        event = Event(at=self._now(), type=type_, message=message, **fields)  # type: ignore[arg-type,unused-ignore]
        self._state.events = [*self._state.events, event][-policies.MAX_EVENTS_KEPT:]
        workflow.logger.info("%s: %s", type_, message)
        metrics.environment_event(self._state.spec.name, type_)
        # NB: audit reads operator events from history alone; a memo update puts each one there.
        # Behind patched(): older histories (before the audit trail) replay without these commands.
        if workflow.patched("ferry-audit-memo"):
            workflow.upsert_memo({"ferry_event": event.model_dump(mode="json")})
        return event

    def _phase(self) -> str:
        if self._state.suspended:
            return "Suspended"
        return self._state.health.status

    def _publish(self) -> None:
        applied = self._state.last_applied
        values = (self._state.spec.name, self._state.spec.repository, applied.version if applied else "",
                  self._phase())
        # NB: upsert only on change, saving one history event per no-op iteration (patched: older
        # histories upserted every iteration).
        if workflow.patched("ferry-publish-on-change") and values == self._published:
            return
        self._published = values
        workflow.upsert_search_attributes([
            FERRY_ENVIRONMENT.value_set(self._state.spec.name),
            FERRY_REPOSITORY.value_set(self._state.spec.repository),
            FERRY_VERSION.value_set(applied.version if applied else ""),
            FERRY_PHASE.value_set(self._phase()),
        ])

    # ----------------------------------------------------------------------------------------- run
    @workflow.run
    async def run(self, input: EnvironmentInput) -> None:
        self._publish()
        while True:
            self._wake = False
            if not self._state.suspended:
                await self._iterate()
            self._state.iterations += 1
            self._iterations_this_run += 1
            self._publish()
            if (self._iterations_this_run >= policies.MAX_ITERATIONS_PER_RUN
                    or workflow.info().is_continue_as_new_suggested()):
                # NB: let running signal/update handlers finish so nothing they do is lost.
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(EnvironmentInput(state=self._state))
            interval = parse_duration(self._state.spec.interval)
            self._state.next_reconcile_at = (workflow.now() + interval).strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                await workflow.wait_condition(lambda: self._wake, timeout=interval)
            except TimeoutError:
                pass

    async def _iterate(self) -> None:
        desired = await self._resolve()
        if desired is None:
            return
        spec = self._state.spec
        applied = self._state.last_applied
        baseline = applied is not None and applied.digest == desired.digest
        try:
            result: ReconcileResult = await workflow.execute_activity(
                "reconcile_environment", self._reconcile_input(desired, baseline), result_type=ReconcileResult,
                start_to_close_timeout=parse_duration(spec.timeout), retry_policy=policies.RECONCILE_RETRY)
        except ActivityError as err:
            self._reconcile_failed(err, desired)
            return
        self._state.cluster_unreachable_since, self._state.cluster_error, self._state.last_error = None, "", ""
        changes = result.changes
        if changes.drift:
            self._state.last_drift = self._record(
                "DriftCorrected", f"reverted hand edits on {len(changes.drift)} object(s)", version=desired.version,
                digest=desired.digest, objects=changes.drift)
        if changes.changed or not baseline:
            self._state.last_applied = Applied(version=desired.version, digest=desired.digest,
                                               revision=result.revision, at=self._now(), changes=changes.summary())
            self._record("Applied", f"{desired.version}: {changes.summary()}", version=desired.version,
                         digest=desired.digest, objects={"created": changes.created, "updated": changes.updated,
                                                         "deleted": changes.deleted})
            # NB: until the rollout is judged, the previous version's health would describe the wrong digest
            self._state.health = HealthState(status="Progressing", reason=f"waiting for {desired.version} to roll "
                                             "out", digest=desired.digest, at=self._now())
            health = await self._wait_healthy(desired)
        else:
            health = result.health
        self._state.health = health
        if health.status == "Healthy":
            self._known_good(desired)
        elif health.status == "Failed" and not baseline:
            self._auto_rollback(desired, health)

    def _reconcile_input(self, desired: VersionRef, baseline: bool, dry_run: bool = False) -> ReconcileInput:
        spec = self._state.spec
        return ReconcileInput(environment=spec.name, repository=spec.repository, digest=desired.digest,
                              version=desired.version, path=spec.path, namespace=spec.namespace,
                              kubeconfig=spec.cluster.kubeconfig, context=spec.cluster.context, prune=spec.prune,
                              allow_empty=spec.allow_empty, dry_run=dry_run, drift_baseline=baseline)

    def _reconcile_failed(self, err: ActivityError, desired: VersionRef) -> None:
        kind, message = _cause_type(err), _cause_message(err)
        if kind == ErrorType.REGISTRY_UNAVAILABLE:
            self._state.source_unavailable_since = self._state.source_unavailable_since or self._now()
            self._state.source_error = message
        elif kind in (ErrorType.CLUSTER_UNAVAILABLE, "TimeoutError"):
            self._state.cluster_unreachable_since = self._state.cluster_unreachable_since or self._now()
            self._state.cluster_error = message
        else:
            error = f"{kind}: {message}"
            if error != self._state.last_error:  # once per distinct error, not every interval
                self._record("ReconcileFailed", f"{desired.version}: {error}", version=desired.version,
                             digest=desired.digest)
            self._state.last_error = error

    async def _resolve(self) -> VersionRef | None:
        """The pin, or what the spec tracks. On a source outage: keep what is applied (never empty)."""
        state, spec = self._state, self._state.spec
        if state.pin is not None and not (spec.semver and state.pin.kind in ("rollback", "auto-rollback")):
            return VersionRef(version=state.pin.version, digest=state.pin.digest)
        try:
            found: ResolveResult = await workflow.execute_activity(
                "resolve_desired", ResolveInput(repository=spec.repository, version=spec.version, semver=spec.semver,
                                                prereleases=spec.prereleases, held=state.holds),
                result_type=ResolveResult, start_to_close_timeout=policies.RESOLVE_TIMEOUT,
                retry_policy=policies.QUICK_RETRY)
        except ActivityError as err:
            if _cause_type(err) == ErrorType.REGISTRY_UNAVAILABLE:
                state.source_unavailable_since = state.source_unavailable_since or self._now()
                state.source_error = _cause_message(err)
            else:
                state.last_error = f"{_cause_type(err)}: {_cause_message(err)}"
            return self._current()
        state.source_unavailable_since, state.source_error = None, ""
        if state.pin is not None:  # a rollback pin on a range: released once something newer than the holds
            candidate = found.ref
            if candidate is None or not self._newer_than_holds(candidate.version):
                return VersionRef(version=state.pin.version, digest=state.pin.digest)
            self._record("PinReleased", f"{candidate.version} is newer than the held version(s); tracking "
                         f"{spec.semver} again", version=candidate.version, digest=candidate.digest)
            state.pin = None
        return found.ref or self._current()

    def _current(self) -> VersionRef | None:
        applied = self._state.last_applied
        return VersionRef(version=applied.version, digest=applied.digest) if applied else None

    def _newer_than_holds(self, version: str) -> bool:
        candidate = try_parse_tag(version)
        held = [v for v in (try_parse_tag(h) for h in self._state.holds) if v is not None]
        return candidate is not None and all(candidate.compare(h) > 0 for h in held)

    async def _wait_healthy(self, desired: VersionRef) -> HealthState:
        spec = self._state.spec
        timeout = parse_duration(spec.health_timeout)
        try:
            result: HealthResult = await workflow.execute_activity(
                "wait_healthy", HealthInput(environment=spec.name, digest=desired.digest,
                                            kubeconfig=spec.cluster.kubeconfig, context=spec.cluster.context,
                                            timeout_seconds=int(timeout.total_seconds())),
                result_type=HealthResult, start_to_close_timeout=timeout + timedelta(minutes=1),
                heartbeat_timeout=policies.HEALTH_HEARTBEAT, retry_policy=policies.RECONCILE_RETRY)
        except ActivityError as err:
            return HealthState(status="Failed", reason=f"health check failed: {_cause_message(err)}",
                               digest=desired.digest, at=self._now())
        return result.health.model_copy(update={"at": self._now()})

    def _known_good(self, desired: VersionRef) -> None:
        state = self._state
        if state.last_known_good != desired:
            state.last_known_good = desired
            history = [r for r in state.good_history if r.digest != desired.digest]
            state.good_history = [*history, desired][-policies.MAX_GOOD_HISTORY:]
            self._record("Healthy", f"{desired.version} is healthy", version=desired.version, digest=desired.digest)

    def _auto_rollback(self, failed: VersionRef, health: HealthState) -> None:
        state = self._state
        good = state.last_known_good
        if failed.version not in state.holds:
            state.holds = [*state.holds, failed.version]
        if not state.spec.auto_rollback or good is None or good.digest == failed.digest:
            self._record("HealthFailed", f"{failed.version} failed health: {health.reason}", version=failed.version,
                         digest=failed.digest)
            return
        state.pin = Pin(version=good.version, digest=good.digest, by="ferry (auto-rollback)", kind="auto-rollback",
                        reason=f"{failed.version} failed health: {health.reason}", at=self._now())
        self._record("AutoRollback", f"{failed.version} failed health ({health.reason}); rolled back to "
                     f"{good.version}; {failed.version} is held", version=good.version, digest=good.digest,
                     by="ferry (auto-rollback)", objects={"failed": [failed.version, failed.digest]})
        self._wake = True

    # ------------------------------------------------------------------------------ signals/updates
    @workflow.signal(name="pin")
    def pin(self, payload: LenientPayload) -> None:
        """Pin to a version by digest (promotion, rollback). Refusals are recorded, never dropped."""
        try:
            request = PinRequest.model_validate(payload.root)
        except pydantic.ValidationError as err:
            self._record("PinRefused", f"malformed pin: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}")
            return
        try:
            VersionRef(version=request.version, digest=request.digest)
        except pydantic.ValidationError:
            self._record("PinRefused", f"pin of {request.version} refused: {request.digest!r} is not a digest",
                         by=request.by, request_id=request.request_id)
            return
        if request.repository and request.repository != self._state.spec.repository:
            # NB: the spec moved to another repository after the promotion/rollback resolved its digest
            self._record("PinRefused", f"pin of {request.version} refused: resolved in {request.repository}, but "
                         f"{self._state.spec.name} deploys from {self._state.spec.repository}", by=request.by,
                         request_id=request.request_id)
            return
        self._state.pin = Pin(**request.model_dump(exclude={"repository"}), at=self._now())
        if request.version in self._state.holds and request.kind == "promotion":
            self._state.holds = [h for h in self._state.holds if h != request.version]
        if request.hold and request.hold not in self._state.holds:
            self._state.holds = [*self._state.holds, request.hold]
        self._record("Pinned", f"pinned to {request.version} ({request.kind}) by {request.by}: {request.reason}",
                     version=request.version, digest=request.digest, by=request.by, request_id=request.request_id)
        self._wake = True

    @workflow.signal(name="reconcile_now")
    def reconcile_now(self, payload: LenientPayload) -> None:
        self._wake = True

    @workflow.signal(name="suspend")
    def suspend(self, payload: LenientPayload) -> None:
        actor = self._actor(payload)
        self._state.suspended = True
        self._record("Suspended", f"suspended by {actor.by}: {actor.reason}", by=actor.by)
        self._wake = True

    @workflow.signal(name="resume")
    def resume(self, payload: LenientPayload) -> None:
        actor = self._actor(payload)
        self._state.suspended = False
        self._record("Resumed", f"resumed by {actor.by}: {actor.reason}", by=actor.by)
        self._wake = True

    @staticmethod
    def _actor(payload: LenientPayload) -> ActorRequest:
        try:
            return ActorRequest.model_validate(payload.root if isinstance(payload.root, dict) else {})
        except pydantic.ValidationError:
            return ActorRequest()

    @workflow.update(name="update_spec")
    def update_spec(self, update: SpecUpdate) -> EnvironmentStatus:
        old = self._state.spec
        self._state.spec = update.spec
        if (old.repository, old.version, old.semver) != (update.spec.repository, update.spec.version,
                                                          update.spec.semver):
            self._state.pin = None  # the declared source or tracking changed: it wins over earlier pins
        self._record("SpecUpdated", f"spec updated ({update.spec.tracking})")
        self._wake = True
        return self.status()

    @update_spec.validator
    def _validate_spec(self, update: SpecUpdate) -> None:
        if update.spec.name != self._state.spec.name:
            raise ValueError(f"spec is for environment {update.spec.name!r}, not {self._state.spec.name!r}")

    @workflow.update(name="plan")
    async def plan(self, request: PlanRequest) -> PlanResult:
        """What a reconcile would do now (or for another version), without applying: `ferry diff`."""
        spec, pin = self._state.spec, self._state.pin
        # NB: read-only: resolve directly rather than through _resolve(), which records outages and releases pins.
        if request.version is None and pin is not None:
            desired: VersionRef | None = VersionRef(version=pin.version, digest=pin.digest)
        else:
            found: ResolveResult = await workflow.execute_activity(
                "resolve_desired", ResolveInput(repository=spec.repository, version=request.version or spec.version,
                                                semver=None if request.version or spec.version else spec.semver,
                                                prereleases=spec.prereleases, held=self._state.holds),
                result_type=ResolveResult, start_to_close_timeout=policies.RESOLVE_TIMEOUT,
                retry_policy=policies.QUICK_RETRY)
            desired = found.ref
        if desired is None:
            raise ApplicationError("nothing to plan: no version resolves for this environment", type="NotFound")
        result: ReconcileResult = await workflow.execute_activity(
            "reconcile_environment", self._reconcile_input(desired, False, dry_run=True), result_type=ReconcileResult,
            start_to_close_timeout=parse_duration(spec.timeout), retry_policy=policies.QUICK_RETRY)
        return PlanResult(version=desired.version, digest=desired.digest,
                          changes=[c for c in result.plan if c["action"] != "delete"],
                          prune=[c["object"] for c in result.plan if c["action"] == "delete"])

    @workflow.query(name="status")
    def status(self) -> EnvironmentStatus:
        pin = self._state.pin
        desired = VersionRef(version=pin.version, digest=pin.digest) if pin else self._current()
        return EnvironmentStatus(name=self._state.spec.name, tracking=self._state.spec.tracking, desired=desired,
                                 state=self._state)

