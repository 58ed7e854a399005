"""The pin gate and tag binding: whether an environment takes a pin, which digest each tag names there, and what an
environment's status says of a pin its sender waits for.

The environment trusts its own spec and records only: a pin is refused when its digest is not one, it was resolved
in another repository, its tag is bound to another digest here, its version is not the digest's release here, or
(an approval-required environment) it rests on no approval this spec accepts, or on one already used.

Pure: the caller passes the clock, the bounds and every patch decision (a patch asked lazily is a callable, asked
only where the rule reaches it: workflow.patched() records its marker where it is first asked).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ferry.approvals import DecisionContext, Judgement, judge
from ferry.environment import EnvironmentState, Pin, PinRequest
from ferry.events import EventType
from ferry.known_good import rollback_pin_refusal
from ferry.oci import is_digest
from ferry.spec import EnvironmentSpec

Verdict = tuple[str, str, bool]  # (outcome, reason, auto_rolled_back) of a pin, as its sender reads it


def approvers(verdicts: list[Judgement]) -> list[str]:
    """Who approved a pin as far as the environment can tell: 'name (SHA256:…)' when verified, else claimed."""
    return [
        f"{v.approver} ({v.fingerprint})" if v.verified else f"{v.approver} (claimed)"
        for v in verdicts
        if not v.refusal
    ]


def approved_by_publisher(pin: Pin | None, digest: str, publisher: str) -> bool:
    """Whether the pin of `digest` rests on an approval by the one whose verified signature published it
    (segregation of duties, checked again once the environment verified the release itself)."""
    return pin is not None and pin.digest == digest and any(a.split(" (")[0] == publisher for a in pin.approved_by)


def judge_pin(state: EnvironmentState, request: PinRequest, now: datetime, *, strict: bool) -> list[Judgement]:
    """Each approval the pin carries, judged against this environment's own spec as of `now`."""
    spec = state.spec
    workflow_id, _, run = request.request_id.partition("@")
    ctx = DecisionContext(
        environment=spec.name,
        version=request.version,
        digest=request.digest,
        publisher=state.verified.get(request.digest, request.publisher),
        promotion=workflow_id,
        run=run,
    )
    if spec.approval.is_signed:
        raws: list[object] = [a.model_dump() for a in request.approvals]
    else:
        raws = [{"approver": name} for name in request.approved_by]
    return [judge(spec.approval, ctx, raw, "approve", now, strict) for raw in raws]


def bound_elsewhere(tags: dict[str, str], tag: str, digest: str) -> str | None:
    """The digest `tag` is bound to here, when that is another than `digest` (the tag was moved in the registry)."""
    bound = tags.get(tag)
    return bound if bound is not None and bound != digest else None


def bind_tag(tags: dict[str, str], tag: str, digest: str, *, limit: int) -> dict[str, str]:
    """`tags` with `tag` bound to `digest` (the newest `limit` bindings kept); `tags` itself when it is already."""
    if tags.get(tag) == digest:
        return tags
    bound = {**tags, tag: digest}
    return dict(list(bound.items())[-limit:])


def tag_moved(tags: dict[str, str], tag: str, digest: str) -> str:
    """Why a tag resolved to `digest` is not applied (TagMoved: it is bound to another digest), or '' (bind it)."""
    bound = bound_elsewhere(tags, tag, digest)
    if bound is None:
        return ""
    return (
        f"TagMoved: tag {tag} now points to {digest}, but this environment bound it to {bound}; keeping what is applied"
    )


def consumed(approvals: list[str], request_id: str, *, limit: int) -> list[str]:
    """The used approvals with this pin's request (the newest `limit` kept): a replay of it is refused."""
    return [*approvals, request_id][-limit:]


def pin_refusal(
    state: EnvironmentState, request: PinRequest, verdicts: list[Judgement], *, hardened: Callable[[], bool]
) -> str:
    """Why this environment refuses the pin, or ''. `hardened()`: step 15's gate is in force (GATE_HARDENED)."""
    spec = state.spec
    if not is_digest(request.digest):
        return f"{request.digest!r} is not a digest"
    if request.repository and request.repository != spec.repository:
        # the spec moved to another repository after the promotion/rollback resolved its digest
        return f"resolved in {request.repository}, but {spec.name} deploys from {spec.repository}"
    bound = bound_elsewhere(state.tags, request.version, request.digest)
    if bound is not None:
        return (
            f"tag {request.version} is bound to {bound} here; {request.digest} is another artifact (the tag was moved)"
        )
    released_as = [tag for tag, digest in state.tags.items() if digest == request.digest]
    if released_as and request.version not in released_as and hardened():
        # NB: a pin's version is the digest's release as this environment resolved it, never the sender's label
        # (else a held 2.0.0 relabelled 0.0.1 would pass "a rollback never goes forward")
        return (
            f"{request.digest} is release {released_as[-1]} here, not {request.version}: a pin names the "
            "release of its digest"
        )
    if not spec.approval.required:
        return ""
    if request.kind == "rollback" and not request.approvals and not request.approved_by:
        return rollback_pin_refusal(state, request.version, request.digest)
    if request.request_id and request.request_id in state.consumed_approvals:
        return f"the approvals of {request.request_id} were already used"
    return "" if approvers(verdicts) else gate_reason(spec, request, verdicts)


def gate_reason(spec: EnvironmentSpec, request: PinRequest, verdicts: list[Judgement]) -> str:
    """Why no approval the pin carries counts: each one's refusal, or that it carries none."""
    refusals = [v.refusal for v in verdicts if v.refusal]
    if refusals:
        return "; ".join(refusals)[:500]
    kind = "signed approval" if spec.approval.is_signed else "approval"
    return f"{spec.name} requires approval and the pin carries no {kind} of {request.digest}"


def status_verdict(
    state: EnvironmentState, digest: str, request_id: str, acknowledged: bool
) -> tuple[Verdict | None, bool]:
    """What an environment's status says of the pin `request_id` (of `digest`) sent it. -> (verdict, or None to keep
    waiting; acknowledged: the environment has handled the pin, so another pin in its status overtook it)."""
    mine = state.pin is not None and state.pin.request_id == request_id
    answers = [e for e in state.events if e.request_id == request_id]
    refused = next((e for e in answers if e.type in (EventType.PIN_REFUSED, EventType.VERIFICATION_FAILED)), None)
    if refused is not None:
        return ("refused", refused.message, False), acknowledged
    acknowledged = acknowledged or mine or any(e.type == EventType.PINNED for e in answers)
    if not acknowledged:
        return None, acknowledged
    if not mine:
        if (
            state.pin is not None
            and state.pin.kind == "auto-rollback"
            and state.pin.reason
            and any(e.type == EventType.AUTO_ROLLBACK and digest in e.objects.get("failed", []) for e in state.events)
        ):
            return ("failed", state.pin.reason, True), acknowledged
        return (
            "superseded",
            f"a newer pin took over ({state.pin.kind} by {state.pin.by})" if state.pin else "the pin was released",
            False,
        ), acknowledged
    health = state.health
    if state.last_applied and state.last_applied.digest == digest and health.digest == digest:
        if health.status == "Healthy":
            return ("succeeded", "applied and healthy", False), acknowledged
        if health.status == "Failed":
            return ("failed", health.reason, False), acknowledged
    return None, acknowledged
