"""The no-op check of an environment iteration, run by the workflow as one local activity: resolve (registry) and
check the cluster (read-only) in one step, so an iteration that changes nothing costs no activity round trip."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import activity

from ferry.reconcile import CheckInput, CheckResult, ReconcileInput, ReconcileResult, ResolveInput, ResolveResult


class EnvironmentCheck:
    """Composes the registry's resolve and the cluster's reconcile (check_only): no client of its own."""

    def __init__(
        self, resolve: Callable[[ResolveInput], ResolveResult], reconcile: Callable[[ReconcileInput], ReconcileResult]
    ) -> None:
        self._resolve = resolve
        self._reconcile = reconcile

    @activity.defn(name="check_environment")
    def check_environment(self, input: CheckInput) -> CheckResult:
        """Read-only. Errors are the resolve's or the reconcile's own (classified); the workflow then takes the
        full path (activities with their retry policies), which records outages as it always did."""
        found = self._resolve(input.resolve) if input.resolve is not None else None
        if found is not None and found.ref is not None and found.ref.digest != input.reconcile.digest:
            return CheckResult(found=found)  # something else to apply: the cluster is not read
        check = input.reconcile.model_copy(update={"check_only": True, "dry_run": False})
        return CheckResult(found=found, result=self._reconcile(check))
