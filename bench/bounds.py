"""The largest continue-as-new input each long-running workflow can carry, built at the caps (no stack needed).

An environment's and the alert router's state move from run to run as the continue-as-new input; the server ends a
run whose input passes its payload limit (2 MiB by default), and Ferry keeps it under 512 KiB. bench/history.py
measures what a real run of a large environment carries; this measures the worst case the caps allow:

- environment: the issue's scenario (1,000 objects drifting on 10 fields, every iteration, for 50 iterations:
  every kept event a drift record) with every name at its maximum length (200-character object names,
  240-character field paths), and every other list of the state at its cap with its longest entries: 32 approvers
  with RSA-4096 keys in the spec and again in a pending spec change, 32 cosign publishers, 200 tag bindings, 20
  verified digests, 50 used approvals, 10 known-good releases, the holds cap, a pin and the pin it replaced with
  the longest reasons;
- alert router: 1,000 deliveries in flight (each notification with the longest message and 16 details of 512
  characters), 2,000 remembered keys, as many alerts of 64 longest patterns each as `ferry alerts apply` accepts,
  the recent and undelivered lists full, and the notifications received while continuing as new at their budget. What
  the carry budget does not take is given up on the record (Undelivered, a memo and a metric), not dropped.

Each state is encoded exactly as the worker does (temporalio.contrib.pydantic's converter).

    .venv/bin/python bench/bounds.py [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from temporalio.contrib.pydantic import pydantic_data_converter

from ferry import alert_router
from ferry.alert_router import (
    MAX_PENDING,
    MAX_RECENT,
    MAX_SEEN,
    MAX_UNDELIVERED,
    AlertRouterInput,
    AlertRouterState,
    AlertsUpdate,
    Delivered,
    PendingDelivery,
    Undelivered,
)
from ferry.alerts import MAX_ALERTS, MAX_DETAIL, MAX_DETAILS, MAX_MESSAGE, MAX_PATTERNS, AlertSpec, Notification
from ferry.environment import EnvironmentInput, EnvironmentState, PendingSpec, Pin
from ferry.events import Event
from ferry.reconcile import VersionRef
from ferry.spec import MAX_APPROVERS, MAX_NAME, MAX_REASON, EnvironmentSpec
from workflows import policies

LIMIT = 512 * 1024
OBJECTS, FIELDS, ITERATIONS = 1000, 10, 50
AT = "2026-12-07T00:00:00Z"
DIGEST = "sha256:" + "0" * 64


def encoded(value: Any) -> int:
    """Bytes of the payload the worker sends as the continue-as-new input."""
    return len(pydantic_data_converter.payload_converter.to_payloads([value])[0].SerializeToString())


def _ssh_rsa_4096() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _cosign_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def worst_spec() -> EnvironmentSpec:
    rsa_key, pem = _ssh_rsa_4096(), _cosign_pem()  # NB: one key of each kind at its size: the bytes are what count
    return EnvironmentSpec.model_validate(
        {
            "name": "p" * 53,
            "repository": "registry.example.com/" + "r" * 200,
            "path": "d" * 255,
            "namespace": "n" * 63,
            "version": "9.9.9",
            "interval": "30m",
            "health-timeout": "10m",
            "approval": {
                "required": True,
                "approvers": [{"name": f"approver-{i:02d}-{'a' * 100}", "key": rsa_key} for i in range(MAX_APPROVERS)],
                "requires-healthy-in": [f"staging-{i}-{'s' * 40}" for i in range(8)],
            },
            "verify": {"publishers": [{"name": f"ci-{i:02d}-{'c' * 50}", "key": pem} for i in range(MAX_APPROVERS)]},
        }
    )


def worst_drift_event(i: int) -> Event:
    drift = {
        f"ConfigMap/{'n' * 63}/{'o' * 130}-{k:04d}": [f"data.{'f' * 230}-{j}" for j in range(FIELDS)]
        for k in range(OBJECTS)
    }
    return Event(
        at=AT,
        type="DriftReverted",
        message=f"{OBJECTS} objects drifted ({i}) " + "m" * 900,
        version="v" * MAX_NAME,
        digest=DIGEST,
        by="b" * MAX_NAME,
        objects=drift,
        request_id="r" * 250,
    )


def worst_environment() -> EnvironmentInput:
    spec = worst_spec()
    pin = Pin(
        version="v" * MAX_NAME,
        digest=DIGEST,
        by="b" * MAX_NAME,
        reason="r" * MAX_REASON,
        kind="promotion",
        request_id="q" * 250,
        approved_by=[f"{'a' * 120} (SHA256:{'k' * 43})" for _ in range(8)],
        at=AT,
    )
    events = [worst_drift_event(i) for i in range(policies.MAX_EVENTS_KEPT)]
    state = EnvironmentState(
        spec=spec,
        pin=pin,
        pin_before=pin,
        last_known_good=VersionRef(version="v" * MAX_NAME, digest=DIGEST),
        good_history=[VersionRef(version=f"{i}" + "v" * 120, digest=DIGEST) for i in range(policies.MAX_GOOD_HISTORY)],
        holds=[f"{i}" + "h" * 120 for i in range(policies.MAX_HOLDS)],
        source_error="e" * MAX_REASON,
        cluster_error="e" * MAX_REASON,
        last_error="e" * MAX_REASON,
        last_drift=events[-1],
        events=events,
        tags={f"{i}" + "t" * 120: DIGEST for i in range(policies.MAX_TAG_BINDINGS)},
        verified={"sha256:" + f"{i:064d}": "c" * 63 for i in range(policies.MAX_VERIFIED_KEPT)},
        consumed_approvals=[
            f"promote/{'p' * 53}/{i}{'v' * 60}@{'0' * 36}" for i in range(policies.MAX_CONSUMED_APPROVALS)
        ],
        pending_spec=PendingSpec(
            id="spec-" + "0" * 12,
            spec=spec,
            digest=DIGEST,
            by="b" * MAX_NAME,
            at=AT,
            changes=[f"approval.approvers[{i}]: {'x' * 200}" for i in range(60)],
        ),
    )
    return EnvironmentInput(state=state)


def worst_notification(i: int) -> Notification:
    return Notification(
        key=f"k{i:07d}-{'k' * 60}",
        type="HealthFailed",
        severity="error",
        environment="e" * 64,
        message="m" * MAX_MESSAGE,
        at=AT,
        source="s" * 300,
        run_id="0" * 36,
        version="v" * 128,
        digest=DIGEST,
        by="b" * 256,
        details={f"d{j:02d}": "x" * MAX_DETAIL for j in range(MAX_DETAILS)},
        resolves=["HealthFailed"] * 16,
    )


def typical_carried() -> int:
    """How many of 1,000 deliveries of the size Ferry's own notifications have (a 200-character message, the
    repository as the one detail) the carry budget takes."""
    pending = [
        PendingDelivery(
            alert="oncall",
            provider="pagerduty",
            deadline_at=AT,
            notification=Notification(
                key=f"env-prod-{i:08d}-healthfailed",
                type="HealthFailed",
                severity="error",
                environment="production",
                message="m" * 200,
                at=AT,
                source="env/production",
                run_id="0" * 36,
                version="1.4.2",
                digest=DIGEST,
                details={"repository": "registry.example.com/team/shop"},
            ),
        )
        for i in range(MAX_PENDING)
    ]
    return len(alert_router.carry(pending)[0])


def worst_router() -> tuple[AlertRouterInput, int, int]:
    """-> the router's continue-as-new input, the deliveries in flight, and how many of them it carries."""
    pending = [
        PendingDelivery(
            alert="a" * 63, provider="p" * 63, summary="s" * 256, deadline_at=AT, notification=worst_notification(i)
        )
        for i in range(MAX_PENDING)
    ]
    carried, _ = alert_router.carry(pending)
    declared = [
        AlertSpec(
            name=f"a{i:02d}" + "a" * 60,
            provider="p" * 63,
            environments=["e" * 64] * MAX_PATTERNS,
            events=["HealthFailed"] * MAX_PATTERNS,
            summary="s" * 256,
        )
        for i in range(MAX_ALERTS)
    ]
    while len(AlertRouterState(alerts=declared).model_dump_json()) > alert_router.MAX_ALERTS_BYTES:
        declared.pop()  # NB: the most `ferry alerts apply` accepts (AlertsUpdate refuses more)
    AlertsUpdate(alerts=declared)
    state = AlertRouterState(
        alerts=declared,
        seen=[f"k{i:07d}-{'k' * 71}" for i in range(MAX_SEEN)],
        pending=carried,
        delivered=[
            Delivered(
                alert="a" * 63, key="k" * 80, type="HealthFailed", environment="e" * 64, at=AT, status=200, attempts=3
            )
            for _ in range(MAX_RECENT)
        ],
        undelivered=[
            Undelivered(
                alert="a" * 63,
                provider="p" * 63,
                key="k" * 80,
                type="HealthFailed",
                environment="e" * 64,
                at=AT,
                reason="r" * MAX_MESSAGE,
            )
            for _ in range(MAX_UNDELIVERED)
        ],
        counts={
            name: 10**12
            for name in (
                "received",
                "duplicate",
                "malformed",
                "matched",
                "delivered",
                "undelivered",
                "unknown_signal",
                "not_carried",
            )
        },
    )
    queued = alert_router.carry(
        [worst_notification(MAX_PENDING + i) for i in range(alert_router.MAX_QUEUED_CARRIED)],
        alert_router.MAX_QUEUED_BYTES,
    )[0]
    return AlertRouterInput(state=state, queued=queued), len(pending), len(carried)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    env = encoded(worst_environment())
    router, in_flight, carried = worst_router()
    router_bytes = encoded(router)
    one_event = encoded(worst_drift_event(0))
    result = {
        "benchmark": "bounds",
        "date": dt.date.today().isoformat(),
        "python": platform.python_version(),
        "limit_bytes": LIMIT,
        "environment": {
            "scenario": f"{OBJECTS} objects drifting on {FIELDS} fields for {ITERATIONS} iterations, "
            "longest names, every list at its cap",
            "continue_as_new_input_bytes": env,
            "kib": round(env / 1024, 1),
            "ratio_of_limit": round(env / LIMIT, 3),
            "one_drift_event_bytes": one_event,
            "events_kept": policies.MAX_EVENTS_KEPT,
            "under_limit": env < LIMIT,
        },
        "alert_router": {
            "scenario": f"{in_flight} deliveries in flight, longest notifications, every list at its cap",
            "continue_as_new_input_bytes": router_bytes,
            "kib": round(router_bytes / 1024, 1),
            "ratio_of_limit": round(router_bytes / LIMIT, 3),
            "in_flight": in_flight,
            "carried": carried,
            "given_up_on_the_record": in_flight - carried,
            "carried_of_1000_typical": typical_carried(),
            "carry_budget_bytes": alert_router.MAX_CARRIED_BYTES,
            "under_limit": router_bytes < LIMIT,
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if not (result["environment"]["under_limit"] and result["alert_router"]["under_limit"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
