"""`ferry rollout status|pause|resume|abort|promote|approve|reject ENV`: the arguments (cli/rollout.py runs them).

Imported to build the parser (`ferry --help`): only the standard library and cli.* at the top.
"""

from __future__ import annotations

from typing import Any

from cli.commands import Lazy, command
from cli.common import KEY_PASSWORD_VARIABLE, MAX_EXPIRES

STEERING = {
    "pause": "hold a rollout at its step (a claim, recorded as one)",
    "resume": "walk a paused rollout on",
    "abort": "roll back now: all traffic to the primary, the release held, the environment back on its last good",
}
DECISIONS = {
    "promote": "skip the remaining steps and promote (an approver's decision, signed where approvals are)",
    "approve": "approve the approval step a rollout waits at (signed: bound to the run, digest and step)",
    "reject": "refuse the approval step a rollout waits at: rolled back, the release held",
}


def register(sub: Any) -> None:
    rollout = sub.add_parser("rollout", help="progressive rollouts (spec strategy): status, and steer them")
    rollout_sub = rollout.add_subparsers(dest="rollout_command", required=True)
    p = command(rollout_sub, "status", Lazy("cli.rollout", "cmd_status"), "a rollout's phase, steps and analysis")
    p.add_argument("env")
    p.add_argument("--watch", action="store_true", help="print each step and analysis interval until it ends")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --watch: give up after this many seconds")
    for name, help_ in STEERING.items():
        p = command(rollout_sub, name, Lazy("cli.rollout", "cmd_steer"), help_)
        p.add_argument("env")
        p.add_argument("--reason", default="")
        p.add_argument("--as", dest="as_", default=None, help="who (default: the local user)")
        p.set_defaults(action=name)
    for name, help_ in DECISIONS.items():
        p = command(rollout_sub, name, Lazy("cli.rollout", "cmd_decide"), help_)
        p.add_argument("env")
        p.add_argument("--comment", default="")
        p.add_argument("--as", dest="as_", default=None, help="who (default: the local user)")
        p.add_argument(
            "--key", default=None, help=f"OpenSSH private key to sign with (password from {KEY_PASSWORD_VARIABLE})"
        )
        p.add_argument(
            "--expires", default="1h", help=f"how long the signed decision is valid (at most {MAX_EXPIRES.days}d)"
        )
        p.set_defaults(action=name)
