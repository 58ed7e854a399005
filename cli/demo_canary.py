"""`make demo`, the canary: production declares a canary strategy (examples/environments.yaml). Once the approved
promotion pins 1.1.0, production's RolloutWorkflow (rollout/production) walks it out: 10 % of the HTTPRoute's
traffic, an analysis, 50 %, an analysis, promoted. Each analysis asks the stack's Prometheus, which scrapes the
simulated traffic generator (no pod runs here; it says so). `ferry rollout status --watch` prints every step and
interval as the rollout records it."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

from cli.demo_support import FERRY, ROOT, Story, env_status, run, step, wait

CANDIDATE = "1.1.0"
WATCH_TIMEOUT = "300"


def _rollout_of(version: str) -> bool:
    out = subprocess.run(
        [*FERRY, "rollout", "status", "production", "--json"], capture_output=True, text=True, cwd=ROOT
    )
    return out.returncode == 0 and json.loads(out.stdout).get("candidate", {}).get("version") == version


def _primary(version: str) -> bool:
    state = env_status("production").get("state", {})
    return (state.get("primary") or {}).get("version") == version


def canary_of_production(story: Story) -> None:
    step(
        f"9. production walks {CANDIDATE} out as a canary (RolloutWorkflow rollout/production): 10 % of its "
        "HTTPRoute's traffic, analysis by Prometheus (success rate >= 99 %, p99 <= 500 ms), 50 %, analysis, promoted"
    )
    wait(f"production's rollout of {CANDIDATE}", lambda: _rollout_of(CANDIDATE), 120)
    argv = [*FERRY, "rollout", "status", "production", "--watch", "--timeout", WATCH_TIMEOUT]
    print(f"$ {shlex.join(['ferry', *argv[3:]])}", flush=True)
    watched = subprocess.run(argv, cwd=ROOT)  # NB: not captured: the analysis prints as it proceeds
    if watched.returncode != 0:
        sys.exit(f"demo: the canary of {CANDIDATE} was not promoted (exit {watched.returncode})")
    wait(f"production's primary on {CANDIDATE}", lambda: _primary(CANDIDATE), 60)
    run([*FERRY, "rollout", "status", "production"])
    run([*FERRY, "status", "production"])
