"""A newer worker's fields never strand a workflow: persisted and wire models keep unknown fields (and unknown
values of their enumerations) through decode and encode, so a downgrade loses nothing, while what people type is
still refused when it names a field that does not exist."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ferry.environment import EnvironmentInput, PinRequest
from ferry.model import PEOPLE
from ferry.promotion import PromotionInput, PromotionStatus
from ferry.spec import EnvironmentSpec

SPEC = {"name": "production", "repository": "127.0.0.1:5000/team/app", "version": "1.0.0"}


def test_state_written_by_a_newer_worker_decodes() -> None:
    newer = {
        "state": {
            "spec": {**SPEC, "rollout_strategy": "canary", "approval": {"quorum": 2}},
            "health": {"status": "Healthy", "probe": "v2"},
            "next_feature": [1, 2, 3],
            "events": [{"at": "t", "type": "Applied", "message": "m", "severity": "info"}],
        }
    }
    state = EnvironmentInput.model_validate(newer).state
    assert state.spec.name == "production" and state.health.status == "Healthy" and state.events[0].type == "Applied"
    carried = EnvironmentInput(state=state).model_dump(mode="json")["state"]
    # NB: an older worker continues the run as new with what it decoded: the newer build's fields survive it
    assert carried["next_feature"] == [1, 2, 3] and carried["spec"]["rollout_strategy"] == "canary"
    assert carried["health"]["probe"] == "v2" and carried["spec"]["approval"]["quorum"] == 2


def test_values_a_newer_worker_added_to_persisted_enumerations_decode_as_themselves() -> None:
    digest = "sha256:" + "0" * 64
    newer = {
        "state": {
            "spec": SPEC,
            "health": {"status": "Paused", "digest": digest},
            "pin": {"version": "1.0.0", "digest": digest, "by": "ferry", "kind": "canary-abort"},
            "events": [{"at": "t", "type": "CanaryAborted", "message": "m"}],
        }
    }
    state = EnvironmentInput.model_validate(newer).state
    assert state.health.status == "Paused" and state.pin is not None and state.pin.kind == "canary-abort"
    assert EnvironmentInput(state=state).model_dump(mode="json")["state"]["events"][0]["type"] == "CanaryAborted"
    assert state.phase == "Paused"
    # what a sender types stays strict
    with pytest.raises(ValidationError, match="kind"):
        PinRequest.model_validate({"version": "1.0.0", "digest": digest, "by": "x", "kind": "canary-abort"})


def test_wire_models_tolerate_new_fields() -> None:
    PinRequest.model_validate({"version": "1.0.0", "digest": "sha256:" + "0" * 64, "by": "x", "priority": 9})
    PromotionInput.model_validate({"environment": "e", "version": "1", "requested_by": "c", "ticket": "OPS-1"})
    PromotionStatus.model_validate({"environment": "e", "version": "1", "requested_by": "c", "quorum": 2})


def test_what_people_type_is_still_strict() -> None:
    with pytest.raises(ValidationError, match="colour: unknown field"):
        EnvironmentSpec.model_validate({**SPEC, "colour": "blue"}, context={PEOPLE: True})
    with pytest.raises(ValidationError, match="quorum: unknown field"):
        EnvironmentSpec.model_validate({**SPEC, "approval": {"quorum": 2}}, context={PEOPLE: True})


def test_oversized_spec_strings_are_refused() -> None:
    """A spec arrives in an Update and lives in state and history: no field can carry megabytes."""
    for field, value in (
        ("repository", "127.0.0.1:5000/" + "a" * 1_500_000),
        ("namespace", "n" * 64),
        ("path", "p/" * 200),
        ("semver", ">=1.0.0 " * 100),
        ("interval", "1" * 40 + "s"),
    ):
        spec = {**SPEC, field: value}
        if field == "semver":
            spec.pop("version")
        with pytest.raises(ValidationError, match=field):
            EnvironmentSpec.model_validate(spec)


def test_a_state_from_before_clusters_by_name_decodes_and_keeps_its_path_only_as_a_lookup_key() -> None:
    from ferry.environment import EnvironmentState
    from ferry.reconcile import HealthInput, ReconcileInput

    old = {
        "spec": {
            "name": "production",
            "repository": "127.0.0.1:5000/team/app",
            "version": "1.0.0",
            "namespace": "ferry-system",  # never allowed now; the worker refuses it on the record
            "cluster": {"kubeconfig": "/etc/ferry/prod.kubeconfig", "context": "prod"},
        }
    }
    state = EnvironmentState.model_validate(old)
    assert state.spec.cluster.name is None and state.spec.cluster.effective == "default"
    assert state.spec.cluster.kubeconfig == "/etc/ferry/prod.kubeconfig"
    assert state.spec.writable_namespaces == ["ferry-system"] and state.spec.cluster_kinds == []
    # activity inputs from an older workflow (no cluster name, no bounds) still decode
    legacy = ReconcileInput.model_validate(
        {
            "environment": "production",
            "repository": "r",
            "digest": "d",
            "version": "1.0.0",
            "path": ".",
            "namespace": "prod",
            "kubeconfig": "/etc/ferry/prod.kubeconfig",
            "context": "prod",
        }
    )
    assert legacy.cluster == "" and legacy.namespaces == [] and legacy.service_account is None
    assert HealthInput.model_validate({"environment": "p", "digest": "d", "timeout_seconds": 5}).cluster == ""


def test_the_workflow_sandbox_imports_one_workflow_module_per_workflow() -> None:
    """The sandbox re-imports a workflow's package and module for every workflow it starts: `workflows/__init__`
    must import no workflow module (each new environment compiled all four), the workflows' stateless helpers are
    passed through, and the environment's module has no string annotations (each handler's were compiled again
    by get_type_hints for every new workflow)."""
    import subprocess
    import sys

    probe = "import sys, workflows; print(sorted(m for m in sys.modules if m.startswith('workflows.')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from workers.worker import STATELESS_WORKFLOW_HELPERS, workflow_runner

    passed = workflow_runner().restrictions.passthrough_modules
    assert set(STATELESS_WORKFLOW_HELPERS) <= passed
    import workflows.environment

    assert "annotations" not in vars(workflows.environment)  # no `from __future__ import annotations`
