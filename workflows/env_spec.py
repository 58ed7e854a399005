"""The environment's spec: update_spec, approve_spec, reject_spec and plan."""

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from ferry.approvals import DecisionContext, judge
    from ferry.environment import LenientPayload, PendingSpec, SpecUpdate, SpecUpdateResult, people_check
    from ferry.errors import ErrorType
    from ferry.events import EventType
    from ferry.names import Update
    from ferry.reconcile import PlanRequest, PlanResult, ResolveInput, VersionRef
    from ferry.spec import (
        EnvironmentSpec,
        env_workflow_id,
        pending_plan_spec,
        protected_changes,
        spec_diff,
        spec_digest,
    )
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.env_source import EnvironmentSource
    from workflows.patches import GATE_HARDENED, PROTECTED_SPEC
    from workflows.patches import env_patched as _patched


class SpecUpdates(EnvironmentSource):
    @workflow.update(
        name=Update.UPDATE_SPEC,
        description="Replace the spec (`ferry env apply`). For an approval-"
        "required environment a change to approval, verify, repository, path, cluster, namespace(s), "
        "cluster-kinds, service-account, version/semver or prune waits for a signed approval "
        "(approve_spec); every change is recorded with its sender and a field-level diff",
    )
    def update_spec(self, update: SpecUpdate | None = None) -> SpecUpdateResult:
        assert update is not None  # the validator rejects a missing spec
        old = self._state.spec
        changes = spec_diff(old, update.spec)
        by = update.by or "unknown"
        strict = old.approval.required and _patched(GATE_HARDENED)
        protected = protected_changes(changes, safety_net=strict)
        if old.approval.required and protected and _patched(PROTECTED_SPEC):
            # its own id: two changes of as many fields in one iteration must not share one
            pending_id = (
                f"spec-{workflow.uuid4().hex[:12]}"
                if strict
                else f"spec-{workflow.info().run_id[:8]}-{self._state.iterations}-{len(changes)}"
            )
            pending = PendingSpec(
                id=pending_id, spec=update.spec, digest=spec_digest(update.spec), by=by, at=self._now(), changes=changes
            )
            self._state.pending_spec = pending
            self._record(
                EventType.SPEC_CHANGE_PENDING,
                f"spec change by {by} waits for approval ({pending.id}): {'; '.join(protected)}"[:1000],
                by=by,
                objects={"changes": changes},
            )
            return SpecUpdateResult(applied=False, changes=changes, pending_id=pending.id, spec_digest=spec_digest(old))
        self._apply_spec(update.spec, by, changes)
        return SpecUpdateResult(applied=True, changes=changes, spec_digest=spec_digest(update.spec))

    def _apply_spec(self, spec: EnvironmentSpec, by: str, changes: list[str], approved_by: str = "") -> None:
        old = self._state.spec
        self._state.spec = spec
        if (old.repository, old.version, old.semver) != (spec.repository, spec.version, spec.semver):
            self._answer(
                self._state.pin,
                None,
                "superseded",
                "the pin was released: the spec changed what this environment deploys",
            )
            self._state.pin = None  # the declared source or tracking changed: it wins over earlier pins
        if old.verify != spec.verify:
            self._state.verified = {}  # verified under other keys: verify again
        approval = f", approved by {approved_by}" if approved_by else ""
        self._record(
            EventType.SPEC_UPDATED,
            f"spec updated by {by}{approval} ({spec.tracking}): {'; '.join(changes) or 'no field changed'}"[:1000],
            by=by,
            objects={"changes": changes},
        )
        self._keep_record()
        self._wake = True

    @update_spec.validator
    def _validate_spec(self, update: SpecUpdate | None = None) -> None:
        if update is None:
            raise ValueError('update_spec needs a payload: {"spec": {...}, "by": "..."} (ferry env apply sends it)')
        if update.spec.name != self._state.spec.name:
            raise ValueError(f"spec is for environment {update.spec.name!r}, not {self._state.spec.name!r}")
        # the rules for what people type (no kubeconfig path, namespaces, reserved names) hold for a raw
        # Update too, not only for `ferry env apply`: checked again here (a rejected Update leaves no history)
        people_check(update.spec)

    @workflow.update(
        name=Update.APPROVE_SPEC,
        description="Approve the pending protected spec change: a signed "
        'statement as for a promotion, with version "spec", digest = the pending spec digest, promotion '
        '= "env/<name>", run = the pending change id (`ferry env approve ENV --key KEY`)',
    )
    def approve_spec(self, payload: LenientPayload | None = None) -> SpecUpdateResult:
        return self._decide_spec("approve", payload or LenientPayload(None))

    @workflow.update(name=Update.REJECT_SPEC, description="Reject the pending protected spec change (same payload)")
    def reject_spec(self, payload: LenientPayload | None = None) -> SpecUpdateResult:
        return self._decide_spec("reject", payload or LenientPayload(None))

    @approve_spec.validator
    def _validate_approve_spec(self, payload: LenientPayload | None = None) -> None:
        if self._state.pending_spec is None:
            raise ValueError(f"{self._state.spec.name} has no spec change pending approval")

    @reject_spec.validator
    def _validate_reject_spec(self, payload: LenientPayload | None = None) -> None:
        self._validate_approve_spec(payload)

    def _decide_spec(self, action: str, payload: LenientPayload) -> SpecUpdateResult:
        """Judged by the approval rules of the spec in force (never the pending one); the requester may not
        approve their own change. Refusals are recorded and fail the update."""
        pending, spec = self._state.pending_spec, self._state.spec
        assert pending is not None
        ctx = DecisionContext(
            environment=spec.name,
            version="spec",
            digest=pending.digest,
            publisher=pending.by,
            promotion=env_workflow_id(spec.name),
            run=pending.id,
            publisher_may_not="requested this spec change and may not approve it",
        )
        verdict = judge(spec.approval, ctx, payload.root, action, workflow.now(), _patched(GATE_HARDENED))
        refusal = verdict.refusal
        who = f"{verdict.approver} ({verdict.fingerprint})" if verdict.verified else f"{verdict.approver} (claimed)"
        if refusal:
            self._record(
                EventType.SPEC_DECISION_REFUSED,
                f"{action} of {pending.id} by {verdict.approver or '?'} refused: {refusal}"[:1000],
                by=verdict.approver,
            )
            raise ApplicationError(refusal, type=ErrorType.DECISION_REFUSED, non_retryable=True)
        self._state.pending_spec = None
        if action == "reject":
            self._record(
                EventType.SPEC_CHANGE_REJECTED,
                f"spec change {pending.id} by {pending.by} rejected by {who}",
                by=verdict.approver,
            )
            return SpecUpdateResult(applied=False, changes=pending.changes, spec_digest=spec_digest(spec))
        self._apply_spec(pending.spec, pending.by, pending.changes, approved_by=who)
        return SpecUpdateResult(applied=True, changes=pending.changes, spec_digest=pending.digest)

    @workflow.update(
        name=Update.PLAN,
        description="What a reconcile would change now, without applying (`ferry diff`): "
        '{} or {"version": "1.2.0"}, {"pending": true} for the spec change awaiting approval (a chart\'s new '
        "values, rendered); at most 200 changes listed, the rest counted",
    )
    async def plan(self, request: PlanRequest | None = None) -> PlanResult:
        """What a reconcile would do now (or for another version, or with the pending spec change): `ferry diff`."""
        request = request or PlanRequest()
        pending = self._state.pending_spec if request.pending else None
        planned = pending_plan_spec(self._state.spec, pending.spec) if pending else self._state.spec
        if isinstance(planned, str):  # NB: the validator refused it already; a replay of an older run never gets here
            raise ApplicationError(planned, type="BadInput")
        spec, pin = planned, self._state.pin
        # read-only: resolve directly rather than through _resolve(), which records outages and releases pins.
        if request.version is None and pin is not None:
            desired: VersionRef | None = VersionRef(version=pin.version, digest=pin.digest)
        else:
            found = await workflow.execute_activity(
                stubs.resolve_desired,
                ResolveInput(
                    repository=spec.repository,
                    version=request.version or spec.version,
                    semver=None if request.version or spec.version else spec.semver,
                    prereleases=spec.prereleases,
                    held=self._state.holds,
                ),
                start_to_close_timeout=policies.RESOLVE_TIMEOUT,
                retry_policy=policies.QUICK_RETRY,
            )
            desired = found.ref
        if desired is None:
            raise ApplicationError("nothing to plan: no version resolves for this environment", type="NotFound")
        result = await workflow.execute_activity(
            stubs.reconcile_environment,
            self._reconcile_input(desired, False, dry_run=True, spec=spec),
            start_to_close_timeout=spec.timeout.delta,
            retry_policy=policies.QUICK_RETRY,
        )
        return PlanResult(
            version=desired.version,
            digest=desired.digest,
            changes=[c for c in result.plan if c.action != "delete"],
            prune=[c.object for c in result.plan if c.action == "delete"],
            more=max(result.plan_total - len(result.plan), 0),
        )

    @plan.validator
    def _validate_plan(self, request: PlanRequest | None = None) -> None:
        """No input plans what the environment runs or tracks; anything but {} or {"version": "..."} was already
        refused when it was decoded (a rejected Update leaves no history)."""
        if request is not None and request.pending:
            if self._state.pending_spec is None:
                raise ApplicationError("no spec change is pending approval: nothing to plan with it", type="NotFound")
            planned = pending_plan_spec(self._state.spec, self._state.pending_spec.spec)
            if isinstance(planned, str):
                raise ApplicationError(planned, type="BadInput")
