"""Typed references to the activities workflows call: `@activity.defn` stubs, signatures only.

Workflows call `workflow.execute_activity(reconcile_environment, ReconcileInput(...), ...)`: mypy checks the
argument and the result against these signatures, and the result type comes from the annotation (no
`result_type=`). The worker registers the real implementations (bound methods in `activities/`, which import oras
and kubernetes and so must stay out of the workflow sandbox) under the same names;
`tests/unit/test_activity_stubs.py` checks that each stub's name, parameter and return annotations match the
registered implementation, so the two cannot drift.

Here in `workflows/` rather than in `ferry/`: `ferry/` is pure (no temporalio), and the only callers are
workflows. Stateless (no module-level state): passed through the sandbox (workers/worker.py).
NB: the names are the registered activity type names recorded in every history: never rename them."""

from __future__ import annotations

from typing import NoReturn

from temporalio import activity

from ferry.alert_router import DeliveryInput, DeliveryResult, SenderInput, SenderResult
from ferry.analysis import AnalysisQueryInput, AnalysisQueryResult
from ferry.artifacts import (
    FetchManifestInput,
    Manifest,
    PushArtifactInput,
    PushArtifactResult,
    ResolveTagInput,
    ResolveTagResult,
)
from ferry.cosign import SignArtifactInput, SignArtifactResult, VerifyArtifactInput, VerifyArtifactResult
from ferry.environment import EnvironmentStatus
from ferry.promotion import ConfirmPinInput, ConfirmPinResult, EnvironmentStatusInput
from ferry.reconcile import (
    CheckInput,
    CheckResult,
    HealthInput,
    HealthResult,
    ReconcileInput,
    ReconcileResult,
    ResolveInput,
    ResolveResult,
)
from ferry.recovery import LastRecordInput, LastRecordResult
from ferry.release import PackageBundleInput, PackageBundleResult
from ferry.rollout_cluster import CanaryStatus, CanaryTarget


def _stub(name: str) -> NoReturn:
    raise NotImplementedError(f"{name} is a typed reference for workflows; the worker registers the real activity")


# --------------------------------------------------------------- the worker's queue: registry (activities/registry.py)
@activity.defn(name="resolve_desired")
def resolve_desired(input: ResolveInput) -> ResolveResult:
    _stub("resolve_desired")


@activity.defn(name="resolve_tag")
def resolve_tag(input: ResolveTagInput) -> ResolveTagResult:
    _stub("resolve_tag")


@activity.defn(name="fetch_manifest")
def fetch_manifest(input: FetchManifestInput) -> Manifest:
    _stub("fetch_manifest")


@activity.defn(name="verify_artifact")
def verify_artifact(input: VerifyArtifactInput) -> VerifyArtifactResult:
    _stub("verify_artifact")


# ----------------------------------------------------------------- the worker's queue: cluster (activities/cluster.py)
@activity.defn(name="reconcile_environment")
def reconcile_environment(input: ReconcileInput) -> ReconcileResult:
    _stub("reconcile_environment")


@activity.defn(name="wait_healthy")
def wait_healthy(input: HealthInput) -> HealthResult:
    _stub("wait_healthy")


@activity.defn(name="rollout_initialize")  # activities/cluster/rollout.py
def rollout_initialize(target: CanaryTarget) -> CanaryStatus:
    _stub("rollout_initialize")


@activity.defn(name="rollout_set_weight")
def rollout_set_weight(target: CanaryTarget, weight: int) -> CanaryStatus:
    _stub("rollout_set_weight")


@activity.defn(name="rollout_preview")
def rollout_preview(target: CanaryTarget) -> CanaryStatus:
    _stub("rollout_preview")


@activity.defn(name="rollout_promote")
def rollout_promote(target: CanaryTarget) -> CanaryStatus:
    _stub("rollout_promote")


@activity.defn(name="rollout_finish")
def rollout_finish(target: CanaryTarget) -> CanaryStatus:
    _stub("rollout_finish")


@activity.defn(name="rollout_status")
def rollout_status(target: CanaryTarget) -> CanaryStatus:
    _stub("rollout_status")


@activity.defn(name="query_analysis")  # activities/analysis/activity.py
def query_analysis(input: AnalysisQueryInput) -> AnalysisQueryResult:
    _stub("query_analysis")


@activity.defn(name="check_environment")  # a local activity (activities/check.py)
def check_environment(input: CheckInput) -> CheckResult:
    _stub("check_environment")


# ------------------------------------------------------------------------------------- the worker's queue: others
@activity.defn(name="environment_status")  # activities/environments.py
async def environment_status(input: EnvironmentStatusInput) -> EnvironmentStatus:
    _stub("environment_status")


@activity.defn(name="confirm_pin")  # activities/environments.py
async def confirm_pin(input: ConfirmPinInput) -> ConfirmPinResult:
    _stub("confirm_pin")


@activity.defn(name="last_record")  # activities/environments.py
async def last_record(input: LastRecordInput) -> LastRecordResult:
    _stub("last_record")


@activity.defn(name="check_sender")  # activities/senders.py
async def check_sender(input: SenderInput) -> SenderResult:
    _stub("check_sender")


@activity.defn(name="deliver_notification")  # activities/notify.py
def deliver_notification(input: DeliveryInput) -> DeliveryResult:
    _stub("deliver_notification")


# ----------------------------------------------------- the CI host's queue, served by `ferry release` (cli/release.py)
@activity.defn(name="package_bundle")  # activities/bundle.py
def package_bundle(input: PackageBundleInput) -> PackageBundleResult:
    _stub("package_bundle")


@activity.defn(name="push_artifact")
def push_artifact(input: PushArtifactInput) -> PushArtifactResult:
    _stub("push_artifact")


@activity.defn(name="sign_artifact")
def sign_artifact(input: SignArtifactInput) -> SignArtifactResult:
    _stub("sign_artifact")


ALL = [
    resolve_desired,
    resolve_tag,
    fetch_manifest,
    verify_artifact,
    reconcile_environment,
    wait_healthy,
    check_environment,
    rollout_initialize,
    rollout_set_weight,
    rollout_preview,
    rollout_promote,
    rollout_finish,
    rollout_status,
    query_analysis,
    environment_status,
    confirm_pin,
    last_record,
    check_sender,
    deliver_notification,
    package_bundle,
    push_artifact,
    sign_artifact,
]
