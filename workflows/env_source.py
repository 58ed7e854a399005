"""What the environment applies: the no-op check, resolve, tag binding and signature verification."""

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from ferry.errors import ErrorType
    from ferry.events import EventType
    from ferry.helm_spec import HelmSource
    from ferry.holds import newer_than_holds, pin_on_range, tracks
    from ferry.pins import approved_by_publisher, bind_tag, tag_moved
    from ferry.reconcile import CheckInput, CheckResult, ReconcileInput, ResolveInput, ResolveResult, VersionRef
    from ferry.spec import EnvironmentSpec
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.env_health import EnvironmentHealth
    from workflows.failures import cause_message, cause_type
    from workflows.patches import PIN_DURING_RESOLVE
    from workflows.patches import env_patched as _patched
    from workflows.reads import verify_release


class EnvironmentSource(EnvironmentHealth):
    async def _verified(self, desired: VersionRef) -> bool:
        """An environment with `verify` applies only artifacts signed by one of its publishers' keys; the verified
        publisher is remembered per digest (segregation of duties uses it) and re-checked against pins' approvals."""
        state, spec = self._state, self._state.spec
        assert spec.verify is not None
        if desired.digest not in state.verified:
            try:
                result = await verify_release(spec.repository, desired.digest, spec.verify)
            except ActivityError as err:
                self._cancelled(err)
                if cause_type(err) != "VerificationFailed":
                    state.source_unavailable_since = state.source_unavailable_since or self._now()
                    state.source_error = cause_message(err)
                    return False
                return self._refuse_artifact(desired, cause_message(err))
            verified = {**state.verified, desired.digest: result.publisher}
            state.verified = dict(list(verified.items())[-policies.MAX_VERIFIED_KEPT :])
        publisher = state.verified[desired.digest]
        if approved_by_publisher(state.pin, desired.digest, publisher):
            return self._refuse_artifact(desired, f"approved by {publisher}, who published it (verified signature)")
        if state.blocked.startswith("VerificationFailed"):
            state.blocked = ""
        return True

    def _refuse_artifact(self, desired: VersionRef, reason: str) -> bool:
        blocked = f"VerificationFailed: {desired.version} ({desired.digest}): {reason}"
        if self._state.blocked != blocked:
            self._state.blocked = blocked
            pin = self._state.pin
            event = self._record(
                EventType.VERIFICATION_FAILED,
                f"{desired.version} not applied: {reason}",
                version=desired.version,
                digest=desired.digest,
                request_id=pin.request_id if pin and pin.digest == desired.digest else "",
            )
            self._answer(pin, desired, "refused", event.message)
        return False

    def _reconcile_input(
        self, desired: VersionRef, baseline: bool, dry_run: bool = False, spec: EnvironmentSpec | None = None
    ) -> ReconcileInput:
        spec = spec or self._state.spec
        return ReconcileInput(
            environment=spec.name,
            repository=spec.repository,
            digest=desired.digest,
            version=desired.version,
            path=spec.path,
            namespace=spec.namespace,
            cluster=spec.cluster.name or "",
            kubeconfig=spec.cluster.kubeconfig,
            context=spec.cluster.context,
            namespaces=spec.writable_namespaces,
            cluster_kinds=spec.cluster_kinds,
            service_account=spec.service_account,
            prune=spec.prune,
            allow_empty=spec.allow_empty,
            dry_run=dry_run,
            drift_baseline=baseline,
            helm=HelmSource.of(spec.helm, spec.name, spec.path, spec.namespace, spec.service_account)
            if spec.helm is not None
            else None,
            decryption=spec.decryption.provider if spec.decryption is not None else None,
            canary_workload=spec.strategy.workload if spec.strategy is not None else "",
        )

    def _reconcile_failed(self, err: ActivityError, desired: VersionRef) -> None:
        kind, message = cause_type(err), cause_message(err)
        if kind == ErrorType.REGISTRY_UNAVAILABLE:
            self._state.source_unavailable_since = self._state.source_unavailable_since or self._now()
            self._state.source_error = message
        elif kind in (ErrorType.CLUSTER_UNAVAILABLE, "TimeoutError"):
            self._state.cluster_unreachable_since = self._state.cluster_unreachable_since or self._now()
            self._state.cluster_error = message
        else:
            error = f"{kind}: {message}"
            if error != self._state.last_error:  # once per distinct error, not every interval
                self._record(
                    EventType.RECONCILE_FAILED,
                    f"{desired.version}: {error}",
                    version=desired.version,
                    digest=desired.digest,
                )
            self._state.last_error = error

    def _tracks(self) -> bool:
        """Whether this iteration resolves what the spec tracks (no pin, or a rollback pin on a range)."""
        return tracks(self._state.spec, self._state.pin)

    def _resolve_input(self) -> ResolveInput:
        spec = self._state.spec
        return ResolveInput(
            repository=spec.repository,
            version=spec.version,
            semver=spec.semver,
            prereleases=spec.prereleases,
            held=self._state.holds,
        )

    async def _check(self) -> CheckResult | None:
        """The iteration's no-op check as one local activity (a marker in history, no activity round trip):
        resolve when the spec tracks, and when that is still the applied digest, read the cluster without writing.
        Only when something is applied and no pin to another digest waits. Any failure (an outage, a bad
        artifact) returns None: the iteration then takes the full path, whose activities retry and record as
        before, so an outage costs a little more and a healthy no-op costs one marker."""
        state, applied = self._state, self._state.last_applied
        if applied is None or (state.pin is not None and not self._tracks() and state.pin.digest != applied.digest):
            return None
        try:
            checked = await workflow.execute_local_activity(
                stubs.check_environment,
                CheckInput(
                    resolve=self._resolve_input() if self._tracks() else None,
                    reconcile=self._reconcile_input(
                        VersionRef(version=applied.version, digest=applied.digest), baseline=True
                    ),
                ),
                start_to_close_timeout=policies.CHECK_TIMEOUT,
                retry_policy=policies.CHECK_RETRY,
                summary="check",
            )
        except FailureError as err:
            # NB: a failed local activity raises its cause (ApplicationError, TimeoutError), not an ActivityError
            if isinstance(err, CancelledError):
                raise
            workflow.logger.info(
                "no-op check failed (%s: %s); full reconcile path", cause_type(err), cause_message(err)
            )
            return None
        return checked

    async def _resolve(self, found: ResolveResult | None = None) -> VersionRef | None:
        """The pin, or what the spec tracks (`found`: already resolved by the check). On a source outage: keep
        what is applied (never empty)."""
        state, spec = self._state, self._state.spec
        if not self._tracks():
            assert state.pin is not None
            return VersionRef(version=state.pin.version, digest=state.pin.digest)
        if found is None:
            try:
                found = await workflow.execute_activity(
                    stubs.resolve_desired,
                    self._resolve_input(),
                    start_to_close_timeout=policies.RESOLVE_TIMEOUT,
                    retry_policy=policies.QUICK_RETRY,
                    summary=f"resolve {spec.tracking}",
                )
            except ActivityError as err:
                self._cancelled(err)
                if cause_type(err) == ErrorType.REGISTRY_UNAVAILABLE:
                    state.source_unavailable_since = state.source_unavailable_since or self._now()
                    state.source_error = cause_message(err)
                else:
                    state.last_error = f"{cause_type(err)}: {cause_message(err)}"
                return self._current()
        state.source_unavailable_since, state.source_error = None, ""
        if found.ref is not None and not self._tag_bound(found.ref):
            return self._current()
        if state.pin is not None and not pin_on_range(spec, state.pin) and _patched(PIN_DURING_RESOLVE):
            # a pin that arrived while resolving wins: releasing it here would let a promotion see its own pin
            # "released" and report superseded
            return VersionRef(version=state.pin.version, digest=state.pin.digest)
        if state.pin is not None:  # a rollback pin on a range: released once something newer than the holds
            candidate = found.ref
            if candidate is None or not newer_than_holds(candidate.version, state.holds):
                return VersionRef(version=state.pin.version, digest=state.pin.digest)
            self._record(
                EventType.PIN_RELEASED,
                f"{candidate.version} is newer than the held version(s); tracking {spec.semver} again",
                version=candidate.version,
                digest=candidate.digest,
            )
            self._answer(state.pin, None, "superseded", f"the pin was released: {candidate.version} is newer")
            state.pin = None
        return found.ref or self._current()

    def _tag_bound(self, ref: VersionRef) -> bool:
        """Bind a tag to the digest it first resolved to; a tag that later points elsewhere is refused (TagMoved,
        once per new digest) and the environment keeps running what it runs."""
        state = self._state
        blocked = tag_moved(state.tags, ref.version, ref.digest)
        if not blocked:
            state.tags = bind_tag(state.tags, ref.version, ref.digest, limit=policies.MAX_TAG_BINDINGS)
            return True
        if state.blocked != blocked:
            state.blocked = blocked
            self._record(
                EventType.TAG_MOVED,
                blocked,
                version=ref.version,
                digest=ref.digest,
                objects={"digests": [state.tags[ref.version], ref.digest]},
            )
        return False
