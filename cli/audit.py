"""`ferry audit [ENV] [--since DURATION] [--json]`: the timeline, from Temporal's workflow histories alone."""

from __future__ import annotations

import argparse
import datetime as dt
from collections import deque
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from cli.common import emit, run_connected, settings_from
from cli.environments import environment_status
from ferry.approvals import (
    ApprovalError,
    ApproverKey,
    SignedDecision,
    Statement,
    signature_public_key,
    verify_decision,
)
from ferry.durations import parse_duration
from ferry.environment import EventType
from ferry.names import ENV_PREFIX, Memo, SearchAttribute
from ferry.settings import TemporalSettings
from workers.client import workflow_url

TYPES = ("ReleaseWorkflow", "EnvironmentWorkflow", "PromotionWorkflow", "RollbackWorkflow")


class AuditEntry(BaseModel):
    at: str
    kind: str
    subject: str
    who: str = ""
    details: str = ""
    workflow_id: str
    url: str


def _decode(payloads: Any) -> Any:
    items = list(payloads.payloads) if payloads is not None else []
    return pydantic_data_converter.payload_converter.from_payload(items[0]) if items else None


def _memo(event: HistoryEvent, key: str) -> Any:
    fields = event.workflow_properties_modified_event_attributes.upserted_memo.fields
    return pydantic_data_converter.payload_converter.from_payload(fields[key]) if key in fields else None


def _time(event: HistoryEvent) -> str:
    return event.event_time.ToDatetime().replace(tzinfo=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class SignedRecord(BaseModel):
    """A decision recorded as verified, with the payload that carried it: what `--verify` re-checks offline."""

    workflow_id: str
    run_id: str
    started: dict[str, Any]
    record: dict[str, Any]
    payload: Any = None


def entries_from_history(workflow_type: str, workflow_id: str, events: list[HistoryEvent], url: str,
                         signed: list[SignedRecord] | None = None, run_id: str = "") -> list[AuditEntry]:
    """Turn one execution's history into audit entries (and collect verified decisions into `signed`).
    Pure: no calls."""
    reader = _HistoryReader(workflow_type, workflow_id, url, signed, run_id)
    for event in events:
        reader.read(event)
    return reader.out


class _HistoryReader:
    """One execution's history, event by event.

    NB: an approver's name is what the sender claims (a signature proves it: `verified`); Temporal records the
    sending client's identity on the signal/update event. A decision sent as an Update carries its update id and
    pairs by it; every decision signal writes exactly one record, in delivery order, so signals pair in order.
    Operator events pair the same way: each pin/suspend/resume signal writes exactly one record (Pinned or
    PinRefused, Suspended, Resumed) in delivery order; spec changes carry their update id."""

    def __init__(self, workflow_type: str, workflow_id: str, url: str, signed: list[SignedRecord] | None,
                 run_id: str) -> None:
        self.workflow_type, self.workflow_id, self.url, self.signed, self.run_id = (
            workflow_type, workflow_id, url, signed, run_id)
        self.out: list[AuditEntry] = []
        self.started: dict[str, Any] = {}
        self.signal_senders: dict[str, deque[tuple[str, Any]]] = {name: deque() for name in _SIGNALLED}
        self.update_senders: dict[str, tuple[str, Any]] = {}

    def add(self, event: HistoryEvent, kind: str, subject: str, who: str = "", details: str = "") -> None:
        self.out.append(AuditEntry(at=_time(event), kind=kind, subject=subject, who=who, details=details,
                                   workflow_id=self.workflow_id, url=self.url))

    def read(self, event: HistoryEvent) -> None:
        et = event.event_type
        if et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            if attrs.signal_name in self.signal_senders:
                sender = (f"workflow {attrs.external_workflow_execution.workflow_id}"
                          if attrs.external_workflow_execution.workflow_id else _sender(event, attrs.identity))
                self.signal_senders[attrs.signal_name].append((sender, _decode(attrs.input)))
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            self.update_senders[request.meta.update_id] = (_sender(event, request.meta.identity),
                                                           _decode(request.input.args))
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            self.started = _decode(event.workflow_execution_started_event_attributes.input) or {}
            self._started(event)
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            self._completed(event, _decode(event.workflow_execution_completed_event_attributes.result) or {})
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED and self.workflow_type == "ReleaseWorkflow":
            failure, started = event.workflow_execution_failed_event_attributes.failure, self.started
            self.add(event, "release failed", f"{started.get('repository')}:{started.get('version')}",
                     started.get("publisher", ""), (failure.cause.message or failure.message)[:300])
        elif et == HistoryEventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
            decision = _memo(event, Memo.DECISION)
            if decision:
                self._decision(event, decision)
            env_event = _memo(event, Memo.EVENT)
            if env_event:
                self._environment_event(event, env_event)

    def _started(self, event: HistoryEvent) -> None:
        started = self.started
        if self.workflow_type == "PromotionWorkflow":
            self.add(event, "promotion requested", f"{started.get('environment')} {started.get('version')}",
                     started.get("requested_by", ""), started.get("reason", ""))
        elif self.workflow_type == "RollbackWorkflow":
            self.add(event, "rollback requested", str(started.get("environment")), started.get("requested_by", ""),
                     f"to {started.get('to_version') or 'last known-good'}: {started.get('reason', '')}")

    def _completed(self, event: HistoryEvent, result: dict[str, Any]) -> None:
        started = self.started
        if self.workflow_type == "ReleaseWorkflow":
            again = " (already released, identical content)" if result.get("already_released") else ""
            self.add(event, "release published", f"{result.get('repository')}:{result.get('version')}",
                     result.get("publisher", started.get("publisher", "")),
                     f"revision {started.get('revision') or '-'} digest {result.get('digest')}{again}")
        elif self.workflow_type == "PromotionWorkflow":
            self.add(event, f"promotion {result.get('outcome')}",
                     f"{result.get('environment')} {result.get('version')}", ", ".join(result.get("approved_by") or []),
                     f"{result.get('digest')}: {result.get('reason')}")
        elif self.workflow_type == "RollbackWorkflow":
            self.add(event, f"rollback {result.get('outcome')}", str(result.get("environment")),
                     started.get("requested_by", ""),
                     f"{result.get('from_version')} -> {result.get('to_version')} {result.get('digest')}: "
                     f"{result.get('reason')}")

    def _decision(self, event: HistoryEvent, decision: dict[str, Any]) -> None:
        verdict = (f"accepted{' (' + decision['reason'] + ')' if decision.get('reason') else ''}"
                   if decision["accepted"] else f"REFUSED: {decision['reason']}")
        if decision.get("update_id"):
            sender, payload = self.update_senders.get(decision["update_id"], ("", None))
        else:
            queue = self.signal_senders[decision["action"]]
            sender, payload = queue.popleft() if queue and decision["via"] == "signal" else ("", None)
        if decision.get("verified") and self.signed is not None:
            self.signed.append(SignedRecord(workflow_id=self.workflow_id, run_id=self.run_id, started=self.started,
                                            record=decision, payload=payload))
        proof = f"verified {decision['fingerprint']}" if decision.get("verified") else "claimed"
        self.add(event, f"{decision['action']} ({decision['via']})",
                 f"{self.started.get('environment')} {self.started.get('version')}", f"{decision['by']} ({proof})",
                 f"{verdict}; comment: {decision.get('comment') or '-'}; sent by {client_words(sender)}")

    def _environment_event(self, event: HistoryEvent, env_event: dict[str, Any]) -> None:
        state = self.started.get("state", {}) if isinstance(self.started, dict) else {}
        name = (state.get("spec") or {}).get("name", self.workflow_id.removeprefix(ENV_PREFIX))
        details = env_event["message"]
        if env_event["type"] == EventType.DRIFT_CORRECTED:
            details += ": " + "; ".join(f"{o} {', '.join(f)}" for o, f in env_event["objects"].items())
        signal = _SIGNAL_OF.get(env_event["type"])
        if env_event.get("update_id"):
            details += f"; sent by {client_words(self.update_senders.get(env_event['update_id'], ('', None))[0])}"
        elif signal and env_event.get("by") != "cancel request":
            queue = self.signal_senders[signal]
            details += f"; sent by {client_words(queue.popleft()[0] if queue else '')}"
        self.add(event, EventType(env_event["type"]).words, name, env_event.get("by", ""), details)


_SIGNALLED = ("approve", "reject", "pin", "suspend", "resume")
_SIGNAL_OF = {EventType.PINNED: "pin", EventType.PIN_REFUSED: "pin", EventType.SUSPENDED: "suspend",
              EventType.RESUMED: "resume"}


def _sender(event: HistoryEvent, identity: str) -> str:
    """The client identity the sender gave, and the principal the server authenticated, when it stamps one."""
    principal = event.principal
    return f"{identity} (principal {principal.type}:{principal.name})" if principal.name else identity


def client_words(identity: str) -> str:
    """The Temporal client identity in words; the Web UI and bare API calls send none."""
    if identity.startswith("workflow "):
        return identity
    return f"client {identity}" if identity else "unknown client (Temporal UI or API)"


def verify_record(signed: SignedRecord) -> str:
    """Re-verify one recorded decision offline: the SSH signature over its statement with the key embedded in the
    signature, that key's fingerprint against the one recorded, and the statement's bindings against the
    workflow that recorded it. -> '' or what does not hold."""
    record, payload = signed.record, signed.payload
    if not isinstance(payload, dict) or not payload.get("statement") or not payload.get("signature"):
        return "recorded as verified, but its payload carries no signed statement"
    try:
        proof = SignedDecision(statement=payload["statement"], signature=payload["signature"])
        key = signature_public_key(proof.signature)
        verified = verify_decision(proof, [ApproverKey(name=Statement.parse(proof.statement).approver, key=key)])
    except (ApprovalError, ValueError) as err:
        return f"signature does not verify: {err}"
    st = verified.statement
    checks = {"fingerprint": (verified.fingerprint, record.get("fingerprint")),
              "approver": (verified.approver, record.get("by")), "decision": (st.decision, record.get("action")),
              "promotion": (st.promotion, signed.workflow_id), "run": (st.run, signed.run_id)}
    if signed.started.get("environment"):
        checks["environment"] = (st.environment, signed.started["environment"])
        checks["version"] = (st.version, signed.started.get("version"))
    wrong = [f"{name} {got!r} != recorded {want!r}" for name, (got, want) in checks.items() if got != want]
    return "; ".join(wrong)


async def build_timeline(client: Client, temporal: TemporalSettings, environment: str | None,
                         since: dt.timedelta, signed: list[SignedRecord] | None = None) -> list[AuditEntry]:
    cutoff = (dt.datetime.now(dt.UTC) - since).strftime("%Y-%m-%dT%H:%M:%SZ")
    types = ", ".join(f"'{t}'" for t in TYPES)
    query = f"WorkflowType IN ({types}) AND StartTime >= '{cutoff}'"
    if environment:
        # the environment's own workflows, and the releases of the repository it deploys
        repository = (await environment_status(client, environment)).state.spec.repository
        query += (f" AND ({SearchAttribute.ENVIRONMENT} = '{environment}' OR "
                  f"(WorkflowType = 'ReleaseWorkflow' AND {SearchAttribute.REPOSITORY} = '{repository}'))")
    entries: list[AuditEntry] = []
    async for wf in client.list_workflows(query):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        entries += entries_from_history(wf.workflow_type, wf.id, list(history.events),
                                        workflow_url(temporal, wf.id, wf.run_id), signed, wf.run_id)
    return sorted(entries, key=lambda e: e.at)


def cmd_audit(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    signed: list[SignedRecord] = []

    entries = run_connected(settings, lambda client: build_timeline(client, settings.temporal, args.env,
                                                                    parse_duration(args.since), signed))
    text = "\n".join(f"{e.at}  {e.kind:<22} {e.subject:<28} {e.who or '-':<16} {e.details}\n"
                     f"{'':22}{e.url}" for e in entries) or "no events in that window"
    if not args.verify:
        emit([e.model_dump() for e in entries], args.json, text)
        return 0
    failures = [(s, problem) for s in signed if (problem := verify_record(s))]
    lines = [f"FAILED {s.workflow_id} {s.record.get('action')} by {s.record.get('by')} at {s.record.get('at')}: "
             f"{problem}" for s, problem in failures]
    summary = f"verified {len(signed) - len(failures)} of {len(signed)} signed decision(s)"
    emit({"entries": [e.model_dump() for e in entries], "signed": len(signed),
          "failures": [{"workflow_id": s.workflow_id, "record": s.record, "problem": p} for s, p in failures]},
         args.json, "\n".join([text, *lines, summary]))
    return 1 if failures else 0
