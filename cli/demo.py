"""`make demo`: the whole story on the local stack, through the same commands a person runs.

CI releases 1.0.0 and 1.1.0, signed -> staging follows to 1.1.0 -> promote production to 1.1.0 -> the publisher's
own signed approval is refused -> a forged (unsigned) approval sent with the `temporal` CLI is refused -> an SRE's
SSH-signed approval sent with `temporal workflow update execute` moves production, walked out as a canary judged by
Prometheus (cli/demo_canary.py) -> a hand edit in production is
reverted -> a broken 1.2.0 fails health in staging and rolls back by itself, held -> `ferry rollback production
--to 1.0.0` -> `ferry audit` prints the timeline with Temporal UI links, and `--verify` re-checks every signature.
Along the way: the AwaitingApproval notification arrives at a local receiver (an alert declared with `ferry alerts
apply`), the registry's push of 1.2.0 reaches staging through `ferry receiver` within about a second, and a Secret
encrypted with sops for the stack's age recipient is decrypted on the worker only (cli/demo_secret.py)."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from cli.demo_canary import canary_of_production
from cli.demo_chart import CHART_STEPS, CHART_WORKFLOWS
from cli.demo_secret import encrypt_secret, secret_delivered
from cli.demo_support import (
    FERRY,
    PUBLISHER,
    ROOT,
    SRE,
    STATE,
    Story,
    applied,
    env_status,
    fill_environments,
    make_keys,
    notification,
    push_to_applied,
    run,
    step,
    wait,
)
from workers.wiring import script_path


def start_sink(tmp: Path) -> subprocess.Popen[bytes]:
    """A local HTTP receiver standing in for the SREs' chat; the worker's providers file points the alert at it."""
    from devstack.procs import free_port  # the local stack, only for `make demo`

    port = free_port()
    log = tmp / "sre-chat.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.webhook_sink", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    (STATE / "alert-providers.yaml").write_text(
        yaml.safe_dump(
            {"providers": [{"name": "sre-chat", "type": "generic", "url": f"http://127.0.0.1:{port}/sre-chat"}]}
        )
    )
    (STATE / "alert-providers.yaml").chmod(0o600)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def start_stack() -> Any:
    """Step 1: the running stack in .ferry, or a new one; -> its StackInfo."""
    from devstack.stack import StackInfo, status  # the local stack, only for `make demo`

    step(
        "1. the local stack: Temporal dev server + Web UI, CNCF registry, Kubernetes control plane (etcd, "
        "kube-apiserver, kube-controller-manager; workload status simulated), worker"
    )
    report = status(STATE)
    if report and all(c["up"] for c in report.values()):
        print("reusing the running stack in .ferry (`ferry dev down` stops it)")
    else:
        run([*FERRY, "dev", "up"])
    info = StackInfo.load(STATE)
    assert info is not None
    print(f"Temporal UI: {info.components['temporal']['ui_url']}")
    return info


def forget_previous_run(info: Any) -> None:
    """A fresh demo: delete every run the previous demo left under the same business keys. NB: deleted, not
    terminated: a new run of an environment recovers a terminated run's record (spec, holds, used approvals), and
    this story starts production afresh on a new repository with new keys (docs/durability.md)."""
    temporal, address = script_path("temporal") or "temporal", info.components["temporal"]["address"]
    for workflow_id in (
        "env/staging",
        "env/production",
        "promote/production/1.1.0",
        "rollback/production/1.0.0",
        "rollout/production",
        *CHART_WORKFLOWS,
    ):
        listed = _list_runs(temporal, address, workflow_id)
        for line in listed.stdout.splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                run_id = json.loads(line)["execution"]["runId"]
                subprocess.run(
                    [
                        temporal,
                        "workflow",
                        "delete",
                        "--address",
                        address,
                        "--workflow-id",
                        workflow_id,
                        "--run-id",
                        run_id,
                        "--yes",
                    ],
                    capture_output=True,
                )
        # a delete completes asynchronously: wait until Visibility lists none (a new run would recover it)
        deadline = time.monotonic() + 30
        while listed.stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.5)
            listed = _list_runs(temporal, address, workflow_id)


def _list_runs(temporal: str, address: str, workflow_id: str) -> subprocess.CompletedProcess[str]:
    """`temporal workflow list` of this workflow id's runs, one JSON line each."""
    return subprocess.run(
        [
            temporal,
            "workflow",
            "list",
            "--address",
            address,
            "--query",
            f'WorkflowId = "{workflow_id}"',
            "--output",
            "jsonl",
        ],
        capture_output=True,
        text=True,
    )


def release_two_versions(story: Story) -> None:
    step(
        "2. CI releases 1.0.0 and 1.1.0, signed with CI's key (ReleaseWorkflow: package on the CI host, push, "
        "verify, sign in cosign's format); the release carries secret/podinfo-db, encrypted with sops"
    )
    story.secret = encrypt_secret(story.info, story.tmp)
    for version, tag, message in (("1.0.0", "6.5.0", "Hello from 1.0.0"), ("1.1.0", "6.5.1", "Hello from 1.1.0")):
        out = story.release(version, tag, message)
        print(f"released {story.repository}:{version} -> {out['digest']}\n  {out['temporal_ui']}")
    run([*FERRY, "verify", f"{story.repository}:1.1.0", "--key", str(story.keys["release.pub"])])


def declare_environments(story: Story) -> None:
    step(
        "3. declare staging (tracks >=1.0.0) and production (pinned to 1.0.0, signed SRE approval required, "
        "only releases signed by CI's key): examples/environments.yaml with its keys filled in"
    )
    environments = story.tmp / "environments.yaml"
    environments.write_text(fill_environments(story.repository, story.keys))
    print(environments.read_text().rstrip())
    run([*FERRY, "env", "apply", "-f", str(environments)])

    step("4. staging follows the range to 1.1.0 by itself; production stays on 1.0.0")
    wait("staging on 1.1.0", lambda: applied("staging", "1.1.0"))
    wait("production on 1.0.0", lambda: applied("production", "1.0.0"))
    run([*FERRY, "env", "list"])


def declare_alerts(story: Story) -> None:
    step(
        "4b. alerts: production's decisions go to the SREs' chat (here a local receiver that prints what "
        "arrives); the provider's URL lives in the worker's .ferry/alert-providers.yaml, never in a workflow"
    )
    story.sink = start_sink(story.tmp)
    alerts = story.tmp / "alerts.yaml"
    alerts.write_text(
        yaml.safe_dump(
            {
                "alerts": [
                    {
                        "name": "production-decisions",
                        "provider": "sre-chat",
                        "environments": ["production"],
                        "events": ["AwaitingApproval", "Approved", "Refused", "PromotionSucceeded", "PromotionFailed"],
                    }
                ]
            },
            sort_keys=False,
        )
    )
    print(alerts.read_text().rstrip())
    run([*FERRY, "alerts", "apply", "-f", str(alerts)])


def request_promotion(story: Story) -> None:
    step("5. a release manager asks to promote production to 1.1.0")
    run([*FERRY, "promote", "production", "1.1.0", "--as", "carol", "--reason", "weekly release train"])
    step(
        "5b. the AwaitingApproval notification arrives: version, digest, publisher, who may approve, the "
        "`ferry approve` and `temporal` commands, the Temporal UI link"
    )
    sink = story.sink
    assert sink is not None
    arrived = wait("AwaitingApproval notification", lambda: notification(sink, "AwaitingApproval"), 60)
    print(json.dumps(arrived["metadata"], indent=2))


def refuse_bad_approvals(story: Story) -> None:
    step(
        f"6. the publisher ({PUBLISHER}, an approver too) approves their own release with their key: refused, "
        "and recorded"
    )
    refused = run(
        [*FERRY, "approve", "production", "1.1.0", "--as", PUBLISHER, "--key", str(story.keys[PUBLISHER])], check=False
    )
    assert refused.returncode == 1, "the publisher's approval must be refused"
    step(
        f"7. a forged approval: someone types {SRE}'s name into `temporal workflow update execute`: refused "
        "(no signature), and recorded"
    )
    forged = run(
        [
            *story.temporal,
            "workflow",
            "update",
            "execute",
            *story.address,
            "--workflow-id",
            "promote/production/1.1.0",
            "--name",
            "approve_update",
            "--input",
            json.dumps({"approver": SRE, "comment": "trust me"}),
        ],
        check=False,
    )
    assert forged.returncode != 0, "a forged approval must be refused"


def approve_signed(story: Story) -> None:
    step(
        f"8. {SRE} signs an approval with her SSH key and sends it with the `temporal` CLI (the Temporal UI's "
        "Send an Update dialog takes the same JSON)"
    )
    approval = story.tmp / "approval.json"
    signed = run(
        [
            *FERRY,
            "approve",
            "production",
            "1.1.0",
            "--as",
            SRE,
            "--key",
            str(story.keys[SRE]),
            "--comment",
            "staging is green, ship it",
            "--print",
        ],
        show=False,
    )
    approval.write_text(signed.stdout.strip())
    print(f"$ ferry approve production 1.1.0 --as {SRE} --key {story.keys[SRE].name} --print > approval.json")
    run(
        [
            *story.temporal,
            "workflow",
            "update",
            "execute",
            *story.address,
            "--workflow-id",
            "promote/production/1.1.0",
            "--name",
            "approve_update",
            "--input-file",
            str(approval),
        ]
    )

    canary_of_production(story)  # 9. the promotion's pin walks out as a canary (cli/demo_canary.py)


def revert_hand_edit(story: Story) -> None:
    step("10. someone edits production by hand; the next reconcile puts it back and records the drift")
    run(
        [
            script_path("kubectl") or "kubectl",
            "--kubeconfig",
            story.info.components["kube"]["kubeconfig"],
            "-n",
            "production",
            "set",
            "image",
            "deployment/podinfo",
            "podinfo=ghcr.io/stefanprodan/podinfo:hand-edit",
        ]
    )
    run([*FERRY, "reconcile", "production", "--as", SRE])
    drift = wait("drift corrected", lambda: env_status("production").get("state", {}).get("last_drift"))
    print(f"DriftCorrected at {drift['at']}: {drift['objects']}")


def broken_release_rolls_back(story: Story) -> None:
    step("11. CI releases a broken 1.2.0: staging fails health and rolls back by itself, holding 1.2.0")
    out = story.release("1.2.0", "6.5.2-broken", "Hello from 1.2.0")
    print(f"released {story.repository}:1.2.0 -> {out['digest']}")
    applied_at = wait(
        "staging applying 1.2.0",
        lambda: next(
            (
                e["at"]
                for e in env_status("staging").get("state", {}).get("events", [])
                if e["type"] == "Applied" and e.get("version") == "1.2.0"
            ),
            None,
        ),
        60,
    )
    print(push_to_applied("1.2.0", applied_at))
    wait(
        "staging auto-rollback",
        lambda: any(e["type"] == "AutoRollback" for e in env_status("staging").get("state", {}).get("events", [])),
        150,
    )
    wait("staging healthy on 1.1.0 again", lambda: applied("staging", "1.1.0"))
    run([*FERRY, "status", "staging"])


def rollback_and_audit(story: Story) -> None:
    step("12. an SRE rolls production back to 1.0.0")
    run([*FERRY, "rollback", "production", "--to", "1.0.0", "--as", SRE, "--reason", "demo"])

    step("13. the audit trail, from Temporal's workflow histories alone")
    since = f"{math.ceil(time.monotonic() - story.started)}s"  # this run only
    run([*FERRY, "audit", "--since", since])
    step("14. every signed decision in those histories, re-verified offline")
    verified = run([*FERRY, "audit", "--since", since, "--verify"], show=False)
    print(verified.stdout.strip().splitlines()[-1])


STEPS = (
    release_two_versions,
    declare_environments,
    declare_alerts,
    secret_delivered,
    request_promotion,
    refuse_bad_approvals,
    approve_signed,
    revert_hand_edit,
    broken_release_rolls_back,
    rollback_and_audit,
    *CHART_STEPS,
)


def main() -> None:
    started = time.monotonic()
    info = start_stack()
    repository = f"{info.components['registry']['host']}/demo/podinfo-{int(time.time())}"
    forget_previous_run(info)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        story = Story(info, tmp, make_keys(tmp), repository, started)
        for run_step in STEPS:
            run_step(story)
        if story.sink is not None:
            story.sink.terminate()
            story.sink.wait(timeout=10)
    print(
        f"\nOpen the Temporal UI at {info.components['temporal']['ui_url']} to see every workflow above; "
        "`ferry dev down` stops the stack."
    )


if __name__ == "__main__":
    main()
