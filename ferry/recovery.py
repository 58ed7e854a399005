"""An environment's safety record, kept outside its run state, and the rules a new run recovers it by.

A run that is not its own continue-as-new (a start after a termination, a start with TerminateExisting, a start
over a wedged run) would otherwise begin from whatever state its starter wrote: no holds, no used approvals, no
known-good history, any spec. So every run keeps its record in its memo (Memo.RECORD: a memo of a closed run, even
a terminated or wedged one, is readable with describe, and it is what the last completed workflow task wrote), and
a new run reads the last run's record first (activity last_record) and recovers from it:

- holds, tag bindings and used approvals are kept (of the same repository; another repository's 1.2.0 is another
  artifact), whatever the start says;
- an approval-required environment keeps its known-good history, pin and spec in force: a start that changes a
  protected field becomes a pending spec change that waits for a signed approval (approve_spec), and a start's own
  known-good history or verified publishers are not taken (they are claims);
- an environment without required approval takes the start's spec, and merges the rest.

Pure: no I/O, no clock (the caller passes `now` and the pending change's id).
"""

from __future__ import annotations

from pydantic import Field

from ferry.environment import EnvironmentState, PendingSpec, Pin
from ferry.model import Model as _Model
from ferry.reconcile import VersionRef
from ferry.spec import EnvironmentSpec, protected_changes, spec_diff, spec_digest

# The patch markers of the code that keeps a record (workflows/environment.py): a run whose history has one and no
# record yet was still recovering its own (it held nothing of its own).
RECORD_RECOVERED = "ferry-record-recovered"
BASELINE_3 = "ferry-environment-baseline-3"
RECORD_MARKERS = (BASELINE_3, RECORD_RECOVERED)
MAX_RECORD_TAGS = 50  # tag bindings kept in the record (the newest): a moved tag of a recent release is refused


class EnvironmentRecord(_Model):
    """What a run that replaces this one recovers (memo ferry_record; small: it is upserted when it changes)."""

    spec: EnvironmentSpec = Field(description="the spec in force")
    holds: list[str] = Field(default_factory=list)
    good_history: list[VersionRef] = Field(default_factory=list)
    last_known_good: VersionRef | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    consumed_approvals: list[str] = Field(default_factory=list)
    pin: Pin | None = None
    unverified: str = Field(
        "",
        description="this run could not recover its predecessor's record (it started "
        "suspended); until an SRE resumes it, a run replacing it recovers nothing from it either",
    )


def record_of(state: EnvironmentState) -> EnvironmentRecord:
    """The record of a state: a pin not yet confirmed is not in it (the one it replaced is)."""
    pin = state.pin_before if state.pin is not None and state.pin.confirm else state.pin
    return EnvironmentRecord(
        spec=state.spec,
        holds=state.holds,
        good_history=state.good_history,
        last_known_good=state.last_known_good,
        tags=dict(list(state.tags.items())[-MAX_RECORD_TAGS:]),
        consumed_approvals=state.consumed_approvals,
        pin=pin,
        unverified=state.unverified_record,
    )


class LastRecordInput(_Model):
    workflow_id: str
    run_id: str = Field(description="the run asking (never its own record)")


class LastRecordResult(_Model):
    run_id: str = Field("", description="the last run before this one; empty: there was none")
    status: str = ""
    record: EnvironmentRecord | None = None
    note: str = ""
    refusal: str = Field(
        "",
        description="the record cannot be established (runs that never ran, an unreadable "
        "record): the new run starts suspended, for an SRE to check and resume",
    )


def _union(first: list[str], then: list[str]) -> list[str]:
    return list(dict.fromkeys([*first, *then]))


def recover(
    start: EnvironmentState, record: EnvironmentRecord | None, *, now: str, pending_id: str, by: str
) -> tuple[EnvironmentState, list[str]]:
    """The state a new run begins from, and what it recovered (lines for its record). `by`: who started it."""
    if record is None:
        return start, []
    gated = record.spec.approval.required
    # an approval-required environment keeps the record's repository (a change of it waits for an approval),
    # so its holds and tag bindings always apply; a start's own tag bindings are claims
    same = gated or record.spec.repository == start.spec.repository
    notes = [
        f"recovered from the last run: {len(record.holds) if same else 0} hold(s), {len(record.good_history)} "
        f"known-good version(s), {len(record.consumed_approvals)} used approval(s)"
    ]
    state = start.model_copy(
        update={
            "holds": _union(record.holds, start.holds) if same else start.holds,
            "tags": dict(record.tags) if gated else ({**start.tags, **record.tags} if same else start.tags),
            "consumed_approvals": _union(record.consumed_approvals, start.consumed_approvals),
            "verified": {},  # NB: a cache of verified signatures: a start's own entries are claims, verify again
        }
    )
    if not gated:
        good = [*record.good_history, *(r for r in start.good_history if r not in record.good_history)]
        return state.model_copy(
            update={"good_history": good, "last_known_good": start.last_known_good or record.last_known_good}
        ), notes
    # approval-required: nothing a starter writes weakens what the last run had
    state, kept = _kept_in_force(state, record, start.spec, now=now, pending_id=pending_id, by=by)
    return state, [*notes, *kept]


def _kept_in_force(
    state: EnvironmentState, record: EnvironmentRecord, started: EnvironmentSpec, *, now: str, pending_id: str, by: str
) -> tuple[EnvironmentState, list[str]]:
    """An approval-required environment keeps the record's known-good history, pin and spec: a started spec that
    changes protected fields becomes a pending spec change. -> the state, and what was kept (lines for the record)."""
    state = state.model_copy(
        update={
            "good_history": record.good_history,
            "last_known_good": record.last_known_good,
            "pin": record.pin,
            "pin_before": None,
            "pending_spec": None,
        }
    )
    changes = protected_changes(spec_diff(record.spec, started))
    if changes:
        state = state.model_copy(
            update={
                "spec": record.spec,
                "pending_spec": PendingSpec(
                    id=pending_id, spec=started, digest=spec_digest(started), by=by, at=now, changes=changes
                ),
            }
        )
        return state, [
            f"the started spec changes protected fields ({'; '.join(changes)[:400]}): the last run's spec "
            f"stays in force, and the change waits for a signed approval ({pending_id})"
        ]
    if started != record.spec:
        return state, ["the started spec's unprotected changes are taken"]
    return state, []
