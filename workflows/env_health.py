"""The environment's health: waits, verdicts, known-good history, holds and automatic rollback."""

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from ferry.errors import ErrorType
    from ferry.events import EventType
    from ferry.holds import with_hold
    from ferry.known_good import AUTO_ROLLBACK_BY, auto_rollback_pin, with_known_good
    from ferry.reconcile import HealthInput, HealthResult, HealthState, VersionRef
    from ferry.times import parse_timestamp
    from workflows import activity_stubs as stubs
    from workflows import policies
    from workflows.failures import cause_message, cause_type
    from workflows.patches import ACTIVITY_CANCEL_SUSPENDS, HEALTH_OUTAGE_UNJUDGED, HEALTH_PREEMPTIBLE, HEALTH_REJUDGED
    from workflows.patches import env_patched as _patched
    from workflows.pin_protocol import EnvironmentPins


class EnvironmentHealth(EnvironmentPins):
    def _unjudged(self, desired: VersionRef) -> bool:
        """The applied release's last health wait ended without a verdict (Unknown: an outage, a worker crash, the
        deadline cutting a retry): it is judged again, from its own deadline (patched: older code never did)."""
        rollout, health = self._state.rollout, self._state.health
        return (
            rollout is not None
            and rollout.digest == desired.digest
            and health.status == "Unknown"
            and health.digest == desired.digest
            and _patched(HEALTH_REJUDGED)
        )

    async def _rejudged(self, desired: VersionRef, now: HealthState) -> HealthState:
        """Judge an unjudged release: healthy now, or waited for until its own deadline, else Failed."""
        rollout = self._state.rollout
        assert rollout is not None
        if now.status in ("Healthy", "Failed") and now.digest == desired.digest:
            return now.model_copy(update={"at": self._now()})
        if workflow.now() < parse_timestamp(rollout.deadline):
            return await self._wait_healthy(desired)
        return HealthState(
            status="Failed",
            reason=f"not healthy by its deadline {rollout.deadline} (applied "
            f"{rollout.applied_at}; the health wait was cut: {self._state.health.reason[:300]})"
            f"{': ' + now.reason[:300] if now.reason else ''}",
            digest=desired.digest,
            at=self._now(),
        )

    def _judge(self, desired: VersionRef, baseline: bool, health: HealthState) -> None:
        """Healthy: known-good, and the pin's sender is told. Failed (a new digest, or a release applied and never
        judged): roll back, and tell it."""
        pin = self._state.pin
        rollout = self._state.rollout
        if rollout is not None and rollout.digest == desired.digest and health.status in ("Healthy", "Failed"):
            self._state.rollout = None  # judged
            baseline = False
        if health.status == "Healthy":
            self._known_good(desired)
            self._answer(pin, desired, "succeeded", "applied and healthy")
        elif health.status == "Failed" and not baseline:
            self._auto_rollback(desired, health)
            rolled_back = self._state.pin is not None and self._state.pin.kind == "auto-rollback"
            self._answer(
                pin,
                desired,
                "failed",
                self._state.pin.reason if rolled_back and self._state.pin else health.reason,
                rolled_back,
            )

    async def _wait_healthy(self, desired: VersionRef) -> HealthState:
        """Wait for the rollout of `desired` to be judged. Patched: the deadline is absolute across retries
        (schedule-to-close), and a new pin to another digest (an emergency rollback) pre-empts the wait."""
        input, timeout = self._health_input(desired)
        if not _patched(HEALTH_PREEMPTIBLE):
            try:
                result = await workflow.execute_activity(
                    stubs.wait_healthy,
                    input,
                    start_to_close_timeout=timeout + policies.HEALTH_ATTEMPT_SLACK,
                    heartbeat_timeout=policies.HEALTH_HEARTBEAT,
                    retry_policy=policies.RECONCILE_RETRY,
                )
            except ActivityError as err:
                return self._health_failed(desired, err)
            return result.health.model_copy(update={"at": self._now()})
        handle = workflow.start_activity(
            stubs.wait_healthy,
            input,
            start_to_close_timeout=timeout + policies.HEALTH_ATTEMPT_SLACK,
            schedule_to_close_timeout=timeout + policies.HEALTH_GRACE,
            heartbeat_timeout=policies.HEALTH_HEARTBEAT,
            retry_policy=policies.RECONCILE_RETRY,
            summary=f"wait until {desired.version} is healthy ({self._state.spec.health_timeout})",
        )
        return await self._preemptible(desired, handle)

    def _health_input(self, desired: VersionRef) -> tuple[HealthInput, timedelta]:
        """The health wait's input and timeout: the spec's health timeout, or what is left of the rollout's own."""
        spec = self._state.spec
        timeout = spec.health_timeout.delta
        rollout = self._state.rollout
        if rollout is not None and rollout.digest == desired.digest:
            # the deadline is the release's own, not one per wait: a wait resumed after an outage gets what is left
            timeout = max(parse_timestamp(rollout.deadline) - workflow.now(), policies.MIN_HEALTH_WAIT)
        input = HealthInput(
            environment=spec.name,
            digest=desired.digest,
            cluster=spec.cluster.name or "",
            kubeconfig=spec.cluster.kubeconfig,
            context=spec.cluster.context,
            timeout_seconds=int(timeout.total_seconds()),
        )
        return input, timeout

    async def _preemptible(self, desired: VersionRef, handle: workflow.ActivityHandle[HealthResult]) -> HealthState:
        """The started health wait's verdict, or Progressing when a pin to another digest pre-empts it."""

        def repinned() -> bool:
            return self._state.pin is not None and self._state.pin.digest != desired.digest

        try:
            await workflow.wait_condition(lambda: handle.done() or repinned())
        except asyncio.CancelledError:
            if _patched(ACTIVITY_CANCEL_SUSPENDS):
                handle.cancel()  # a suspended environment waits for nothing: the poll stops with it
            raise
        if not handle.done():
            handle.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await handle
            return HealthState(
                status="Progressing",
                reason=f"health wait for {desired.version} pre-empted by a pin "
                f"to {self._state.pin.version if self._state.pin else '?'}",
                digest=desired.digest,
                at=self._now(),
            )
        try:
            judged = handle.result()
        except ActivityError as err:
            self._cancelled(err)
            return self._health_failed(desired, err)
        return judged.health.model_copy(update={"at": self._now()})

    def _health_failed(self, desired: VersionRef, err: ActivityError) -> HealthState:
        """A health check that could not ask the cluster (API server unreachable, or the activity timed out with
        its worker) judged nothing: patched, the rollout stays unjudged (Unknown) and the outage is reported, so
        an API server restart no longer rolls a good release back; the next reconcile judges it. A check that
        failed for another reason still fails the release."""
        kind, message = cause_type(err), cause_message(err)
        if kind in (ErrorType.CLUSTER_UNAVAILABLE, "TimeoutError") and _patched(HEALTH_OUTAGE_UNJUDGED):
            self._state.cluster_unreachable_since = self._state.cluster_unreachable_since or self._now()
            self._state.cluster_error = message
            return HealthState(
                status="Unknown",
                reason=f"health of {desired.version} not judged: {message}",
                digest=desired.digest,
                at=self._now(),
            )
        return HealthState(
            status="Failed", reason=f"health check failed: {message}", digest=desired.digest, at=self._now()
        )

    def _known_good(self, desired: VersionRef) -> None:
        state = self._state
        if state.last_known_good != desired:
            state.last_known_good = desired
            state.good_history = with_known_good(state.good_history, desired, limit=policies.MAX_GOOD_HISTORY)
            self._record(
                EventType.HEALTHY, f"{desired.version} is healthy", version=desired.version, digest=desired.digest
            )

    def _auto_rollback(self, failed: VersionRef, health: HealthState) -> None:
        state = self._state
        state.holds = with_hold(state.holds, failed.version, limit=policies.MAX_HOLDS)
        pin = auto_rollback_pin(state.spec, state.last_known_good, failed, health, at=self._now())
        if pin is None:
            self._record(
                EventType.HEALTH_FAILED,
                f"{failed.version} failed health: {health.reason}",
                version=failed.version,
                digest=failed.digest,
            )
            return
        state.pin = pin
        self._record(
            EventType.AUTO_ROLLBACK,
            f"{failed.version} failed health ({health.reason}); rolled back to {pin.version}; {failed.version} is held",
            version=pin.version,
            digest=pin.digest,
            by=AUTO_ROLLBACK_BY,
            objects={"failed": [failed.version, failed.digest]},
        )
        self._wake = True
