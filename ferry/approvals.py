"""Approvals: the signed statement, its verification, and the approval rules (:func:`judge`) for promotions, pins
and spec changes. An SRE signs a canonical statement with an SSH key; environments list approvers' public keys.

The signature is OpenSSH's SSHSIG (``ssh-keygen -Y sign``; the format is OpenSSH's PROTOCOL.sshsig) in the
namespace :data:`APPROVAL_NAMESPACE`, so a statement signed with ``ssh-keygen -Y sign -n ferry.dev/approval``
verifies here, and one signed here verifies with ``ssh-keygen -Y verify``. The format itself is
:mod:`ferry.sshsig`. Keys: ssh-ed25519,
ecdsa-sha2-nistp256, ssh-rsa of at least 2048 bits (signatures rsa-sha2-512 or rsa-sha2-256, never SHA-1).

What :func:`verify_decision` proves: the statement is canonical, the signature is a valid SSHSIG over it in this
namespace, made by a key the environment lists, and that key is listed under the name the statement claims.
What it does not check (the caller's, in ``judge``): that the statement is for this environment, version,
digest, promotion run and decision, that it has not expired, that the signer did not publish the release.

Pure: no I/O, no clock, no randomness in verification, so this module is passed through into Temporal's workflow
sandbox. Imports: stdlib, pydantic, ferry.sshsig.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import pydantic
from cryptography.exceptions import InvalidSignature
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from ferry.errors import validation_message
from ferry.model import Model as _Model
from ferry.spec import MAX_REASON, ApprovalPolicy
from ferry.sshsig import (
    _CONTROL,
    _HASHES,
    _canonical_blob,
    _fingerprint,
    _load_public_key,
    _parse_key_line,
    _parse_sshsig,
    _signed_data,
    _verify,
    key_fingerprint,
    sign,
)
from ferry.sshsig import MAX_NAME as MAX_NAME
from ferry.sshsig import MAX_SIGNATURE as MAX_SIGNATURE
from ferry.sshsig import NAME_PATTERN as NAME_PATTERN
from ferry.sshsig import ApprovalError as ApprovalError
from ferry.sshsig import ApproverKey as ApproverKey

APPROVAL_NAMESPACE = "ferry.dev/approval"

# Bounds on hostile input. A statement is ~500 bytes (its comment at most 1 KiB, twice that once JSON-escaped).
MAX_STATEMENT = 4096
MAX_COMMENT = 1024

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# -------------------------------------------------------------------------------------- statement ---

Token = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=r"^[\x21-\x7e]+$")]


class Statement(BaseModel):
    """What an approver signs: one decision about one promotion run of one digest, until ``expires``.
    Its signed form is :meth:`canonical` (compact JSON, sorted keys, UTF-8, no trailing newline)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    environment: Token
    version: Token
    digest: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
    promotion: Annotated[
        str, StringConstraints(min_length=1, max_length=2 * MAX_NAME + 16, pattern=r"^[\x21-\x7e]+$")
    ] = Field(description="the workflow id the decision is for (promote/<env>/<version>)")
    run: Token = Field(description="the run id of that workflow")
    decision: Literal["approve", "reject"]
    approver: Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)]
    comment: str = ""
    expires: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")] = Field(
        description="UTC, YYYY-MM-DDTHH:MM:SSZ"
    )

    @field_validator("comment")
    @classmethod
    def _comment(cls, value: str) -> str:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("comment is not valid UTF-8 text") from None
        if size > MAX_COMMENT:
            raise ValueError(f"comment of {size} bytes exceeds {MAX_COMMENT}")
        if _CONTROL.search(value):
            raise ValueError("comment has control characters (only tab and newline are allowed)")
        return value

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: str) -> str:
        try:
            datetime.strptime(value, TIMESTAMP_FORMAT)
        except ValueError:
            raise ValueError(f"expires {value!r} is not a valid UTC time (YYYY-MM-DDTHH:MM:SSZ)") from None
        return value

    @model_validator(mode="after")
    def _bounded(self) -> Statement:
        if (size := len(self.canonical().encode("utf-8"))) > MAX_STATEMENT:
            raise ValueError(f"statement of {size} bytes exceeds {MAX_STATEMENT}")
        return self

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def parse(cls, text: str) -> Statement:
        """The statement ``text`` is, exactly: bounded, strict JSON, every field valid, and canonical (what is
        signed is what is read). ApprovalError (kind ``statement``) otherwise."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise ApprovalError("statement is not valid UTF-8 text", "statement") from None
        if size > MAX_STATEMENT:
            raise ApprovalError(f"statement of {size} bytes exceeds {MAX_STATEMENT}", "statement")
        try:
            data: Any = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ApprovalError(f"statement is not JSON: {err}", "statement") from None
        if not isinstance(data, dict):
            raise ApprovalError("statement is not a JSON object", "statement")
        try:
            statement = cls.model_validate(data)
        except ValueError as err:  # pydantic.ValidationError is a ValueError
            raise ApprovalError(f"statement is invalid: {_first_error(err)}", "statement") from None
        if statement.canonical() != text:
            hint = " (it ends with a newline)" if text.rstrip("\r\n") == statement.canonical() else ""
            raise ApprovalError(
                "statement is not canonical: sign exactly the compact JSON with sorted keys that "
                f"`ferry approve --print-statement` prints{hint}",
                "statement",
            )
        return statement


def _first_error(err: ValueError) -> str:
    return validation_message(err, "statement") if isinstance(err, ValidationError) else str(err)


# ---------------------------------------------------------------------------------------- signature ---


class SignedDecision(BaseModel):
    """A statement and its armored SSH signature, as sent in a decision or attached to a pin."""

    model_config = ConfigDict(extra="ignore")

    statement: str = Field(max_length=MAX_STATEMENT, description="the canonical statement text")
    signature: str = Field(max_length=MAX_SIGNATURE, description="-----BEGIN SSH SIGNATURE----- ...")


class VerifiedDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    statement: Statement
    approver: str
    fingerprint: str


def verify_decision(signed: SignedDecision, approvers: list[ApproverKey]) -> VerifiedDecision:
    """Proves that ``signed.statement`` was signed, in :data:`APPROVAL_NAMESPACE`, by a key in ``approvers``
    listed under the name the statement claims. Deterministic. ApprovalError with ``kind``:
    statement (not a valid canonical statement), armor / format (not an SSHSIG signature), namespace,
    unlisted (key not among ``approvers``), name (key listed for someone else), signature (does not verify)."""
    statement = Statement.parse(signed.statement)
    sig = _parse_sshsig(signed.signature)
    if sig.namespace != APPROVAL_NAMESPACE:
        raise ApprovalError(
            f"signature is for namespace {sig.namespace[:64]!r}, not {APPROVAL_NAMESPACE!r} "
            f"(ssh-keygen -Y sign -n {APPROVAL_NAMESPACE})",
            "namespace",
        )
    if sig.hash_algorithm not in _HASHES:
        raise ApprovalError(f"signature hash {sig.hash_algorithm[:40]!r} is not accepted (sha512, sha256)", "format")
    try:
        key = _load_public_key(sig.key_type, sig.public_key)
    except ApprovalError:
        raise
    except ValueError as err:
        raise ApprovalError(f"signature's public key: {err}", "key") from None
    blob = _canonical_blob(key)
    fingerprint = _fingerprint(blob)
    # only keys the environment lists are used to verify: an unknown key is refused before any crypto runs.
    names = [a.name for a in approvers if _parse_key_line(a.key)[1] == blob]
    if not names:
        raise ApprovalError(f"key {fingerprint} is not listed as an approver's key", "unlisted")
    if statement.approver not in names:
        raise ApprovalError(
            f"key {fingerprint} is listed for {', '.join(names)}, but the statement names {statement.approver}", "name"
        )
    try:
        _verify(key, sig, _signed_data(sig.namespace, sig.hash_algorithm, signed.statement.encode("utf-8")))
    except InvalidSignature:
        raise ApprovalError(f"signature by {fingerprint} does not verify over this statement", "signature") from None
    return VerifiedDecision(statement=statement, approver=statement.approver, fingerprint=fingerprint)


def sign_statement(statement: Statement, private_key: bytes, password: bytes | None = None) -> SignedDecision:
    """Signs ``statement.canonical()`` as ``ssh-keygen -Y sign -n ferry.dev/approval`` would (SSHSIG, sha512;
    RSA keys sign with rsa-sha2-512). ``private_key`` is an OpenSSH private key file's bytes."""
    text = statement.canonical()
    return SignedDecision(
        statement=text, signature=sign(APPROVAL_NAMESPACE, text.encode("utf-8"), private_key, password)
    )


# ------------------------------------------------------------------------------------------ judge ---


class DecisionSignal(BaseModel):
    """What an SRE sends: `{"approver": "alice", "comment": "looks good"}`, plus for signed approvals the canonical
    `statement` and its SSH `signature` (`ferry approve --key` builds them). version/digest are optional guards.
    Every field is bounded: an oversized decision is refused on the record, never stored."""

    model_config = ConfigDict(extra="ignore")

    approver: str = Field("", max_length=MAX_NAME)
    comment: str = Field("", max_length=MAX_REASON)
    version: str | None = Field(None, max_length=MAX_NAME)
    digest: str | None = Field(None, max_length=MAX_NAME)
    statement: str | None = Field(None, max_length=MAX_STATEMENT)
    signature: str | None = Field(None, max_length=MAX_SIGNATURE)

    @field_validator("approver")
    @classmethod
    def _approver(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _someone(self) -> DecisionSignal:
        if not self.approver and not self.statement:
            raise ValueError("approver: Field required (a name, or a signed statement)")
        return self


class DecisionContext(_Model):
    """What a decision must be about: the promotion (or protected spec change) being decided."""

    environment: str
    version: str
    digest: str
    publisher: str = ""
    promotion: str = Field(description="workflow id the statement must name")
    run: str = Field(description="run id the statement must name")
    publisher_may_not: str = Field(
        "published this release and may not approve its promotion",
        description="why the publisher (or requester) may not approve, in words",
    )


class Judgement(_Model):
    decision: DecisionSignal | None = None
    approver: str = ""
    refusal: str = ""
    fingerprint: str = ""

    @property
    def verified(self) -> bool:
        return bool(self.fingerprint)


def same_name(a: str, b: str) -> bool:
    """People's names compare case-insensitively (`Sre-Bob` is `sre-bob`): segregation of duties must not hinge
    on how someone capitalised theirs."""
    return a.casefold() == b.casefold()


def _signed(
    policy: ApprovalPolicy, ctx: DecisionContext, decision: DecisionSignal, action: str, now: datetime, hardened: bool
) -> tuple[str, str, str]:
    """-> (approver, fingerprint, refusal) for a signed decision; every binding is checked against ctx."""
    if not decision.statement or not decision.signature:
        return (
            decision.approver,
            "",
            (f"unsigned {action}: {ctx.environment} requires signed approvals (ferry approve --key ~/.ssh/id_ed25519)"),
        )
    try:
        verified = verify_decision(
            SignedDecision(statement=decision.statement, signature=decision.signature), policy.keys()
        )
    except ApprovalError as err:
        return decision.approver, "", str(err)
    except Exception as err:  # NB: hostile bytes must be refused on the record, never fail the workflow task
        return decision.approver, "", f"signature could not be checked ({type(err).__name__})"
    who, fp = verified.approver, verified.fingerprint
    if decision.approver and (not same_name(decision.approver, who) if hardened else decision.approver != who):
        return who, "", f"the payload names {decision.approver} but the statement is signed by {who}"
    refusal = _binding_refusal(policy, ctx, verified.statement, action, now, hardened) or _publisher_key_refusal(
        policy, ctx, fp, action, hardened
    )
    return (who, "", refusal) if refusal else (who, fp, "")


def _binding_refusal(
    policy: ApprovalPolicy, ctx: DecisionContext, st: Statement, action: str, now: datetime, hardened: bool
) -> str:
    """Why a verified statement does not bind this decision (another environment, version, digest, promotion, run
    or decision; expired; hardened: valid for longer than the policy's lifetime), else ""."""
    expected = {
        "environment": ctx.environment,
        "version": ctx.version,
        "digest": ctx.digest,
        "promotion": ctx.promotion,
        "run": ctx.run,
        "decision": action,
    }
    for field, want in expected.items():
        got = getattr(st, field)
        if got != want:
            return f"the signed statement is for {field} {got}, not {want}"
    if _timestamp(st.expires) <= now:
        return f"the signed statement expired at {st.expires}"
    if hardened and _timestamp(st.expires) > now + policy.lifetime:
        return (
            f"the signed statement expires at {st.expires}, more than {_hours(policy.lifetime)} from "
            f"now (max-approval-lifetime): sign one that expires sooner"
        )
    return ""


def _publisher_key_refusal(policy: ApprovalPolicy, ctx: DecisionContext, fp: str, action: str, hardened: bool) -> str:
    """Why an approval signed with the publisher's own key is refused (segregation of duties), else ""."""
    named = same_name if hardened else str.__eq__
    if (
        action == "approve"
        and ctx.publisher
        and any(named(k.name, ctx.publisher) and key_fingerprint(k.key) == fp for k in policy.keys())
    ):
        return (
            f"key {fp} belongs to {ctx.publisher}, who {ctx.publisher_may_not}"
            if hardened
            else f"key {fp} belongs to {ctx.publisher}, who published this release"
        )
    return ""


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}h"


def _timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def judge(
    policy: ApprovalPolicy, ctx: DecisionContext, raw: Any, action: str, now: datetime, hardened: bool = True
) -> Judgement:
    """The approval rules, whichever way a decision arrives (signal, update, a pin's attached approvals).
    Pure: `now` is the workflow's clock. Signed policies verify the SSH signature and bind the statement to this
    environment, version, digest, promotion run and decision; unsigned ones trust the typed name (a claim).
    `hardened` (step 15; workflows pass workflow.patched(GATE_HARDENED), so runs from before decide as they did):
    names compare case-insensitively and a statement may expire at most the policy's lifetime from now."""
    try:
        decision = DecisionSignal.model_validate(raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = "".join(f"{p}: " for p in first["loc"][:1]) or ("" if isinstance(raw, dict) else "payload: ")
        message = str(first["msg"]).removeprefix("Value error, ")
        return Judgement(
            refusal=f'malformed {action}: {where}{message} (expected {{"approver": "name", "comment": '
            '"...", "statement": "...", "signature": "..."})'
        )
    fingerprint = ""
    if policy.is_signed:
        approver, fingerprint, refusal = _signed(policy, ctx, decision, action, now, hardened)
        if refusal:
            return Judgement(decision=decision, approver=approver, refusal=refusal)
    else:
        approver = decision.approver
        listed = [n for n in policy.names if same_name(n, approver)] if hardened else [approver]
        approver = listed[0] if listed else approver
        if approver not in policy.names:
            return Judgement(
                decision=decision,
                approver=approver,
                refusal=f"{approver} is not an approver of this environment ({', '.join(policy.names)})",
            )
    if action == "approve" and (same_name(approver, ctx.publisher) if hardened else approver == ctx.publisher):
        return Judgement(decision=decision, approver=approver, refusal=f"{approver} {ctx.publisher_may_not}")
    if decision.version is not None and decision.version != ctx.version:
        return Judgement(
            decision=decision,
            approver=approver,
            refusal=f"this {action} names version {decision.version}, but the promotion is for {ctx.version}",
        )
    if decision.digest is not None and decision.digest != ctx.digest:
        return Judgement(
            decision=decision,
            approver=approver,
            refusal=f"this {action} names digest {decision.digest}, but the promotion is for {ctx.digest}",
        )
    return Judgement(decision=decision, approver=approver, fingerprint=fingerprint)
