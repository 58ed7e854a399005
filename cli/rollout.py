"""`ferry rollout status|pause|resume|abort|promote|approve|reject ENV`: read and steer a progressive rollout
(workflows/rollout.py) through its Updates, as the Temporal UI and `temporal workflow update execute` can too."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import pydantic
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from cli.common import CommandError, emit, local_identity, run_connected, settings_from
from cli.keys import expiry, private_key
from ferry.approvals import Statement, sign_statement
from ferry.environment import LenientPayload
from ferry.names import Query, Update
from ferry.progressive import FINAL_PHASES, PROMOTE_GATE, RolloutStatus, SteerResult, gate_id
from ferry.spec import rollout_workflow_id
from ferry.sshsig import ApprovalError

UPDATES = {
    "pause": Update.ROLLOUT_PAUSE,
    "resume": Update.ROLLOUT_RESUME,
    "abort": Update.ROLLOUT_ABORT,
    "promote": Update.ROLLOUT_PROMOTE,
    "approve": Update.ROLLOUT_APPROVE,
    "reject": Update.ROLLOUT_REJECT,
}
WATCH_EVERY = 1.0


async def _status(client: Client, env: str) -> tuple[WorkflowHandle[Any, Any], RolloutStatus]:
    handle = client.get_workflow_handle(rollout_workflow_id(env))
    try:
        status: RolloutStatus = await handle.query(Query.STATUS, result_type=RolloutStatus)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no rollout of {env} has run (its spec has no strategy, or none started yet)") from None
        raise
    return handle, status


def describe(status: RolloutStatus) -> str:
    weight = f"{status.weight}% to {status.candidate.version}" if status.weight else "all traffic on the primary"
    primary = status.primary.version if status.primary else "none yet"
    lines = [
        f"rollout of {status.candidate.version} to {status.environment}: {status.phase}"
        f"{' (paused)' if status.paused else ''}; {weight}; primary {primary}",
        *(step_line(s.model_dump()) for s in status.steps),
        *(interval_line(i.model_dump()) for i in status.intervals[-5:]),
        *(f"  {d.words()}" for d in status.decisions),
    ]
    if status.awaiting:
        lines.append(f"  waiting for an approval naming {status.awaiting} (ferry rollout approve {status.environment})")
    if status.reason:
        lines.append(f"  reason: {status.reason}")
    return "\n".join(lines)


def step_line(step: dict[str, Any]) -> str:
    return f"  step {step['kind']} -> {step['weight']}%: {step['outcome']} ({step['detail']})"


def interval_line(interval: dict[str, Any]) -> str:
    values = ", ".join(f"{k}={'no data' if v is None else f'{v:.4g}'}" for k, v in interval["values"].items())
    failed = f"  FAILED: {', '.join(interval['failed'])}" if interval["failed"] else ""
    return f"  analysis interval {interval['interval'] + 1}: {values}{failed}"


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def go(client: Client) -> RolloutStatus:
        if not args.watch:
            return (await _status(client, args.env))[1]
        return await _watch(client, args.env, args.timeout)

    status = run_connected(settings, go)
    if args.watch and not args.json:
        return 0 if status.phase == "Promoted" else 1
    emit(status.model_dump(mode="json"), args.json, describe(status))
    return 0


async def _watch(client: Client, env: str, seconds: float) -> RolloutStatus:
    """Print each new step and analysis interval as the rollout records it, until it ends (or the timeout)."""
    seen_steps, seen_intervals, phase = 0, set[tuple[int, int, str]](), ""
    deadline = time.monotonic() + seconds
    while True:
        _, status = await _status(client, env)
        if status.phase != phase:
            phase = status.phase
            print(f"{status.candidate.version} on {env}: {phase}", flush=True)
        for interval in status.intervals:
            if (key := (interval.step, interval.interval, interval.at)) not in seen_intervals:
                seen_intervals.add(key)
                print(interval_line(interval.model_dump()), flush=True)
        for step in status.steps[seen_steps:]:
            print(step_line(step.model_dump()), flush=True)
        seen_steps = len(status.steps)
        if status.phase in FINAL_PHASES or time.monotonic() > deadline:
            if status.reason:
                print(f"  reason: {status.reason}", flush=True)
            return status
        await asyncio.sleep(WATCH_EVERY)


def cmd_steer(args: argparse.Namespace) -> int:
    payload = {"by": args.as_ or local_identity(), "reason": args.reason}
    return _send(args, payload, None)


def cmd_decide(args: argparse.Namespace) -> int:
    who = args.as_ or local_identity()
    payload: dict[str, str] = {"approver": who, "comment": args.comment, "by": who}
    if args.key is None:
        return _send(args, payload, None)
    key = private_key(args.key)
    return _send(args, payload, key)


def _send(args: argparse.Namespace, payload: dict[str, str], key: tuple[bytes, bytes | None, str] | None) -> int:
    settings = settings_from(args)
    action = args.action

    async def go(client: Client) -> SteerResult:
        handle, status = await _status(client, args.env)
        if status.phase in FINAL_PHASES:
            raise CommandError(
                f"the rollout of {status.candidate.version} to {args.env} has ended ({status.phase}): "
                f"nothing to {action}"
            )
        if key is not None:
            payload.update(_signed(args, status, payload["approver"], key))
        result: SteerResult = await handle.execute_update(
            UPDATES[action], LenientPayload(payload), result_type=SteerResult
        )
        return result

    result = run_connected(settings, go)
    emit(
        result.model_dump(mode="json"),
        args.json,
        f"{action}: {'accepted' if result.accepted else 'refused'}: {result.message} (phase {result.phase})",
    )
    return 0 if result.accepted else 1


def _signed(
    args: argparse.Namespace, status: RolloutStatus, approver: str, key: tuple[bytes, bytes | None, str]
) -> dict[str, str]:
    """The signed statement for this rollout's gate: its run, the candidate's digest, the waiting step."""
    if args.action == "promote":
        gate = gate_id(status.environment, PROMOTE_GATE)
    elif status.awaiting:
        gate = status.awaiting
    else:
        raise CommandError(f"the rollout of {status.candidate.version} waits at no approval step ({status.phase})")
    try:
        statement = Statement.model_validate(
            {
                "environment": status.environment,
                "version": status.candidate.version,
                "digest": status.candidate.digest,
                "promotion": gate,
                "run": status.run_id,
                "decision": "reject" if args.action == "reject" else "approve",
                "approver": approver,
                "comment": args.comment,
                "expires": expiry(args.expires),
            }
        )
        data, password, _ = key
        signed = sign_statement(statement, data, password)
    except pydantic.ValidationError as err:
        raise CommandError(f"cannot build the statement: {err.errors()[0]['msg']}") from None
    except ApprovalError as err:
        raise CommandError(f"--key {args.key}: {err.reason}") from None
    return {"statement": signed.statement, "signature": signed.signature}
