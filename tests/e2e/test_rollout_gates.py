"""A rollout's gates and steering, through `ferry rollout` and its Updates, on the real stack (issue 29): an approval
step refuses the publisher's signed approval, an unsigned one, a forged one and one signed for another gate, and
accepts an SRE's; pause, resume and abort from the CLI, the abort rolling back in traffic and in the desired state;
any payload a `temporal` CLI user can send is answered, never fails the workflow."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.approvals import Statement, sign_statement
from ferry.environment import LenientPayload
from ferry.names import Update
from ferry.progressive import PROMOTE_GATE, RolloutOutcome, SteerResult, gate_id
from ferry.spec import rollout_workflow_id
from tests.kit.environments import ferry, publish, start_environment, wait_status
from tests.kit.rollouts import World, analysis, deployment, image_of, release, route_weights, spec, unique, wait_rollout


@pytest.fixture
def world(rollout_stack: World) -> World:
    return rollout_stack


def _ssh_key(tmp: Path, name: str) -> tuple[Path, str]:
    path = tmp / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path, path.with_suffix(".pub").read_text().strip()


async def _walking(world: World, name: str, steps: list[dict[str, Any]], task_queue: str, **extra: Any) -> Any:
    """1.0.0 made the primary, then 1.1.0 released by ci-bot and walking out."""
    publish(world.settings, world.repository, "1.0.0", release("web", "app:1.0.0"))
    handle = await start_environment(
        world.client, task_queue, spec(name, world.repository, world.namespace, steps, **extra)
    )
    await wait_status(handle, lambda s: s.state.primary is not None, 90, "1.0.0 primary")
    publish(world.settings, world.repository, "1.1.0", release("web", "app:1.1.0"), publisher="ci-bot")
    return handle


async def _update(world: World, name: str, update: str, payload: object) -> SteerResult:
    handle = world.client.get_workflow_handle(rollout_workflow_id(name))
    result: SteerResult = await handle.execute_update(update, LenientPayload(payload), result_type=SteerResult)
    return result


def _signed(key: Path, approver: str, name: str, status: Any, gate: str) -> dict[str, str]:
    statement = Statement(
        environment=name,
        version=status.candidate.version,
        digest=status.candidate.digest,
        promotion=gate,
        run=status.run_id,
        decision="approve",
        approver=approver,
        expires=(datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    signed = sign_statement(statement, key.read_bytes())
    return {"approver": approver, "statement": signed.statement, "signature": signed.signature}


async def test_an_approval_step_refuses_the_publisher_and_forgeries_and_takes_an_sres_signed_approval(
    world: World, task_queue: str, tmp_path: Path
) -> None:
    name = unique("gate")
    ci_key, ci_pub = _ssh_key(tmp_path, "ci-bot")
    bob_key, bob_pub = _ssh_key(tmp_path, "sre-bob")
    approvers = {"approvers": [{"name": "ci-bot", "key": ci_pub}, {"name": "sre-bob", "key": bob_pub}]}
    await _walking(world, name, [{"set-weight": 10}, {"approval": {}}], task_queue, approval=approvers)
    waiting = await wait_rollout(world.client, name, lambda s: s.phase == "AwaitingApproval", 120, "the gate")
    assert waiting.awaiting == gate_id(name, 1)

    # the publisher's own signed approval, through the CLI: refused, exit 1, the reason named
    own = await ferry(world.settings, tmp_path, "rollout", "approve", name, "--as", "ci-bot", "--key", str(ci_key))
    assert own.returncode == 1 and "refused" in own.stdout and "ci-bot" in own.stdout, own.stdout + own.stderr
    # an unsigned claim, a statement naming bob signed with ci-bot's key, bob's signature for another gate
    unsigned = await _update(world, name, Update.ROLLOUT_APPROVE, {"approver": "sre-bob"})
    forged = await _update(
        world, name, Update.ROLLOUT_APPROVE, _signed(ci_key, "sre-bob", name, waiting, waiting.awaiting)
    )
    other_gate = await _update(
        world, name, Update.ROLLOUT_APPROVE, _signed(bob_key, "sre-bob", name, waiting, gate_id(name, PROMOTE_GATE))
    )
    for refused, why in ((unsigned, "unsigned"), (forged, "listed for ci-bot"), (other_gate, "#promote")):
        assert not refused.accepted and why in refused.message, refused
    still = await wait_rollout(world.client, name, lambda s: s.phase == "AwaitingApproval", 10, "still waiting")
    assert len([d for d in still.decisions if d.refused]) == 4

    # sre-bob's signed approval through the CLI: accepted, and the walk ends promoted
    bob = await ferry(world.settings, tmp_path, "rollout", "approve", name, "--as", "sre-bob", "--key", str(bob_key))
    assert bob.returncode == 0, bob.stdout + bob.stderr
    done = await wait_rollout(world.client, name, lambda s: s.phase == "Promoted", 120, "promoted")
    approved = next(s for s in done.steps if s.kind == "approval")
    assert approved.outcome == "approved" and "sre-bob (verified SHA256:" in approved.detail
    assert image_of(deployment(world.admin, world.namespace, "web-primary")) == "app:1.1.0"

    # the audit, from the histories alone: every gate decision with its proof, and each step
    audit = await ferry(world.settings, tmp_path, "audit", name, "--json")
    assert audit.returncode == 0, audit.stderr
    entries = [e for e in json.loads(audit.stdout) if e["workflow_id"] == rollout_workflow_id(name)]
    kinds = {(e["kind"], e["who"].split(" (")[0]) for e in entries}
    assert ("rollout approve", "sre-bob") in kinds and ("rollout approve", "ci-bot") in kinds
    accepted = [e for e in entries if e["kind"] == "rollout approve" and e["details"] == "accepted"]
    assert len(accepted) == 1 and accepted[0]["who"].startswith("sre-bob (verified SHA256:")
    assert any(e["kind"] == "rollout step" and e["details"].startswith("promote -> 100%") for e in entries)


async def test_pause_resume_and_abort_from_the_cli_and_any_payload_is_answered(
    world: World, task_queue: str, tmp_path: Path
) -> None:
    name = unique("steer")
    handle = await _walking(world, name, [{"set-weight": 10}, {"pause": "1h"}, {"set-weight": 50}], task_queue)
    await wait_rollout(
        world.client, name, lambda s: any(st.kind == "set-weight" for st in s.steps), 120, "10 % to 1.1.0"
    )
    for payload in (None, "junk", 42, ["a"], {"by": "x" * 100_000}, {"by": {"nested": True}}):
        answered = await _update(world, name, Update.ROLLOUT_RESUME, payload)
        assert answered.accepted, answered  # resume is a no-op when not paused; the payload cannot fail it

    paused = await ferry(world.settings, tmp_path, "rollout", "pause", name, "--as", "alice", "--reason", "look")
    assert paused.returncode == 0, paused.stderr
    status = await wait_rollout(world.client, name, lambda s: s.paused, 10, "paused")
    assert any(d.words() == "pause by alice (claimed)" for d in status.decisions)
    resumed = await ferry(world.settings, tmp_path, "rollout", "resume", name, "--as", "alice")
    assert resumed.returncode == 0, resumed.stderr
    await wait_rollout(world.client, name, lambda s: not s.paused, 10, "resumed")
    shown = await ferry(world.settings, tmp_path, "rollout", "status", name)
    assert shown.returncode == 0 and "step set-weight -> 10%" in shown.stdout, shown.stdout + shown.stderr

    aborted = await ferry(world.settings, tmp_path, "rollout", "abort", name, "--as", "alice", "--reason", "bad vibes")
    assert aborted.returncode == 0, aborted.stderr
    done = await wait_rollout(world.client, name, lambda s: s.phase == "Aborted", 60, "aborted")
    assert "aborted: abort by alice (claimed)" in done.reason
    status_env = await wait_status(
        handle,
        lambda s: s.state.last_applied is not None and s.state.last_applied.version == "1.0.0",
        90,
        "back on 1.0.0",
    )
    assert "1.1.0" in status_env.state.holds
    assert any(e.type == "RolloutFailed" and "aborted" in e.message for e in status_env.state.events)
    assert route_weights(world.admin, world.namespace) == {"web-primary": 100, "web-canary": 0}
    again = await ferry(world.settings, tmp_path, "rollout", "pause", name)
    assert again.returncode == 1 and "has ended (Aborted)" in again.stderr, again.stdout + again.stderr


async def test_a_newer_release_pre_empts_a_running_rollout(world: World, task_queue: str, tmp_path: Path) -> None:
    name, ns = unique("preempt"), world.namespace
    handle = await _walking(world, name, [{"set-weight": 10}, {"pause": "1h"}], task_queue)
    first = await wait_rollout(
        world.client, name, lambda s: s.candidate.version == "1.1.0" and s.weight == 10, 120, "1.1.0 at 10 %"
    )
    publish(world.settings, world.repository, "1.2.0", release("web", "app:1.2.0"))
    await wait_status(
        handle,
        lambda s: any(e.type == "RolloutSuperseded" and e.version == "1.1.0" for e in s.state.events),
        90,
        "1.1.0's rollout pre-empted",
    )
    ended = world.client.get_workflow_handle(rollout_workflow_id(name), run_id=first.run_id, result_type=RolloutOutcome)
    superseded = await ended.result()
    assert superseded.outcome == "superseded" and superseded.version == "1.1.0"
    second = await wait_rollout(
        world.client, name, lambda s: s.candidate.version == "1.2.0" and s.weight == 10, 120, "1.2.0 walking"
    )
    assert second.run_id != first.run_id
    # no approvers in this environment: `promote` is a claim, recorded as one, and skips the pause
    promote = await ferry(world.settings, tmp_path, "rollout", "promote", name, "--as", "alice")
    assert promote.returncode == 0, promote.stdout + promote.stderr
    done = await wait_rollout(world.client, name, lambda s: s.phase == "Promoted", 60, "1.2.0 promoted")
    assert [(s.kind, s.outcome) for s in done.steps] == [("set-weight", "done"), ("pause", "done"), ("promote", "done")]
    assert any(d.words() == "promote by alice (claimed)" for d in done.decisions)
    assert image_of(deployment(world.admin, ns, "web-primary")) == "app:1.2.0"


async def test_a_query_prometheus_refuses_fails_the_analysis_safe(world: World, task_queue: str) -> None:
    name = unique("badq")
    typo = {"query": {"name": "typo", "promql": "sum(rate(ferry_simulated_requests_total[1m]", "min": 1}}
    handle = await _walking(world, name, [{"set-weight": 10}, analysis(typo)], task_queue)
    failed = await wait_rollout(world.client, name, lambda s: s.phase == "Failed", 120, "the analysis failed")
    assert "typo" in failed.reason and "BadQuery" in failed.reason, failed.reason
    status = await wait_status(
        handle, lambda s: s.state.last_applied is not None and s.state.last_applied.version == "1.0.0", 90, "1.0.0"
    )
    assert "1.1.0" in status.state.holds
    assert route_weights(world.admin, world.namespace) == {"web-primary": 100, "web-canary": 0}
