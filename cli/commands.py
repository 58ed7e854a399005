"""Every command's arguments (`ferry dev` and `ferry worker` are in cli/main.py). The code behind a command is
named, not imported: `Lazy("cli.env_status", "cmd_status")` imports its module when that command runs, so
`ferry --help` and a command's parser load no Temporal, Kubernetes, OpenTelemetry, pydantic or registry client.

Only the standard library and cli.common here (tests/unit/test_cli_imports.py checks it).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from cli.common import KEY_PASSWORD_VARIABLE, MAX_EXPIRES, global_options

APPROVAL_NAMESPACE_HINT = "Ferry's approval namespace (printed with the statement)"
SIGN_KEY_PASSWORD_VARIABLE = "FERRY_SIGN_KEY_PASSWORD"
REPLAY_DEFAULT_LIMIT, REPLAY_MAX_LIMIT = 200, 5000

SIGN_KEY_HELP = f"""a PEM EC P-256 private key (PKCS#8 or SEC1; if encrypted, its password in
${SIGN_KEY_PASSWORD_VARIABLE}). Make one: openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8
-nocrypt -out release.key; its public key for environments and `ferry verify`/`cosign verify --key`: openssl pkey
-in release.key -pubout -out release.pub. cosign's own encrypted key format is not read; `cosign import-key-pair
--key release.key` gives cosign the same key."""


class Lazy:
    """A command's function, imported when the command runs. A module that fails to import fails the command
    loudly (its own error, never skipped)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def resolve(self) -> Callable[[argparse.Namespace], int]:
        function: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(self.module), self.name)
        return function

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)

    def __repr__(self) -> str:
        return f"Lazy({self.module}:{self.name})"


def command(sub: Any, name: str, target: Lazy, help: str, *, json: bool = True) -> argparse.ArgumentParser:
    """A subcommand with the connection options (and --json) that runs `target`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    if json:
        parser.add_argument("--json", action="store_true")
    global_options(parser)
    parser.set_defaults(func=target)
    return parser


def _as(parser: argparse.ArgumentParser, help: str = "who (default: the local user)") -> None:
    parser.add_argument("--as", dest="as_", default=None, help=help)


def register(sub: Any) -> None:
    _release(sub)
    _environments(sub)
    _promotions(sub)
    _audit(sub)
    _alerts(sub)
    _secrets(sub)
    importlib.import_module("cli.upgrade").register(sub)  # its arguments live with the command
    importlib.import_module("cli.rollout_args").register(sub)


def _release(sub: Any) -> None:
    p = command(
        sub,
        "release",
        Lazy("cli.release", "cmd_release"),
        "package DIR (or a Helm chart: --chart DIR) and publish it as an immutable OCI artifact (what CI runs)",
    )
    p.add_argument("dir", nargs="?", help="directory of manifests (plain YAML or kustomize; overlays are kept)")
    chart = "release the Helm chart in DIR in Helm's OCI format, to REPOSITORY/<chart name>:<Chart.yaml's version>"
    p.add_argument("--chart", default=None, metavar="DIR", help=chart + " (`+` as `_` in the tag)")
    p.add_argument("--repository", required=True, help="HOST[:PORT]/PATH, or PATH on the default registry")
    p.add_argument(
        "--version", default=None, help="semver tag, e.g. 1.2.3 or v1.2.3 (with --chart: optional, Chart.yaml's)"
    )
    p.add_argument("--revision", default=None, help="default: <branch>@sha1:<commit> from git")
    p.add_argument(
        "--source",
        default=None,
        help="default: the git remote URL (user-info, query and fragment "
        "stripped: no token reaches history or the artifact)",
    )
    p.add_argument(
        "--published-by",
        default=None,
        help="default: the CI identity, else the local user; with --sign-key it is the publisher the signature attests",
    )
    p.add_argument(
        "--sign-key", default=None, metavar="FILE", help="sign the release in cosign's format: " + SIGN_KEY_HELP
    )
    p.add_argument("--timeout", default="15m", help="how long a registry outage may delay the release")
    _allow_plain_secrets(p)

    p = command(
        sub,
        "verify",
        Lazy("cli.verify", "cmd_verify"),
        "verify a release's signature (cosign's format) "
        "against public keys; exit 1 with the reason unless one of them signed it",
    )
    p.add_argument("reference", metavar="REPO:TAG", help="HOST[:PORT]/PATH:TAG or HOST[:PORT]/PATH@sha256:DIGEST")
    p.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="PUB",
        help="PEM EC P-256 public key file (cosign.pub); repeat to trust several",
    )


def _allow_plain_secrets(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-plain-secrets",
        action="store_true",
        help="release a Kubernetes Secret with data in the clear, or a kustomize secretGenerator with literals or "
        "unencrypted files (refused by default: encrypt them with `ferry secrets encrypt FILE --recipient age1…`)",
    )


def _environments(sub: Any) -> None:
    env = sub.add_parser("env", help="declare environments (environments.yaml) and list them")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    p = command(
        env_sub,
        "apply",
        Lazy("cli.environments", "cmd_env_apply"),
        "start or update one EnvironmentWorkflow per environment",
    )
    p.add_argument("-f", "--file", required=True)
    _as(p, "who (default: the local user or CI actor)")
    p.add_argument(
        "--force",
        action="store_true",
        help="accepted for scripts written for earlier versions: an "
        "environment whose last run ended is recreated without it, and its new run recovers the last "
        "run's record (holds, used approvals, tag bindings) itself",
    )
    for verb in ("approve", "reject"):
        p = command(
            env_sub,
            verb,
            Lazy("cli.environments", f"cmd_env_{verb}"),
            f"{verb} the spec change pending approval (protected fields of an approval-required environment)",
            json=False,
        )
        p.add_argument("env")
        _as(p)
        p.add_argument("--comment", default=None)
        p.add_argument(
            "--key", default=None, help=f"OpenSSH private key to sign with (password from {KEY_PASSWORD_VARIABLE})"
        )
        p.add_argument("--expires", default="1h", help="how long the signed decision is valid (default 1h)")
        p.add_argument("--print", action="store_true", help="print the JSON to send instead of sending it")
    _env_list(env_sub)
    _env_import_helm(env_sub)
    _operating(sub)


def _env_import_helm(env_sub: Any) -> None:
    """`ferry env import-helm RELEASE`: no connection options (its --namespace is the release's)."""
    p = env_sub.add_parser(
        "import-helm",
        help="adopt an existing Helm release: write its environment (values, release name), then after the "
        "first reconcile --finish removes Helm's field manager (--forget-helm: and its release Secrets)",
    )
    p.add_argument("release", help="the Helm release's name")
    p.add_argument("-n", "--namespace", dest="helm_namespace", default="default", help="the release's namespace")
    p.add_argument("--cluster", default=None, help="an entry of the worker's clusters file (FERRY_CLUSTERS)")
    p.add_argument("--kubeconfig", default=None, help="read this kubeconfig instead of the clusters file's entry")
    p.add_argument("--chart", default=None, help="oci://HOST/PATH/NAME: the chart in an OCI Helm repository")
    p.add_argument("--repository", default=None, help="HOST/PATH: a Ferry release holding the chart (with --path)")
    p.add_argument("--path", default=None, help="the chart's directory inside that release")
    p.add_argument("--version", default=None, help="the version to pin (default for --chart: the release's chart)")
    p.add_argument("--semver", default=None, help="a range to track instead of --version")
    p.add_argument("--name", default=None, help="the environment's name (default: the release's)")
    p.add_argument("-o", "--output", default=None, help="write the environments file here (default: stdout)")
    p.add_argument("--finish", action="store_true", help="after the first reconcile: remove the helm field manager")
    p.add_argument("--forget-helm", action="store_true", help="--finish, and delete the release Secrets (helm ls)")
    p.set_defaults(func=Lazy("cli.import_helm", "cmd_import_helm"))


def _env_list(env_sub: Any) -> None:
    p = command(
        env_sub,
        "list",
        Lazy("cli.env_list", "cmd_env_list"),
        "every running environment: what it tracks, the version applied, its phase (from Visibility)",
    )
    p.description = (
        "Every running environment, read from Temporal Visibility (the search attributes each "
        "environment publishes): one request per 1,000 environments. Visibility is eventually "
        "consistent: a change shows here within seconds; `ferry status ENV` asks the workflow itself."
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="ask every environment's workflow instead (one query each: exact, and slow for a fleet)",
    )


def _operating(sub: Any) -> None:
    """`ferry status|diff|reconcile|suspend|resume ENV`: one environment, by name."""
    p = command(
        sub,
        "status",
        Lazy("cli.env_status", "cmd_status"),
        "an environment's version, pin, health, drift, holds, outages",
    )
    p.add_argument("env")
    p = command(sub, "diff", Lazy("cli.env_status", "cmd_diff"), "what a reconcile would change, without applying")
    p.add_argument("env")
    p.add_argument("--version", default=None, help="plan another released version instead")
    p.add_argument(
        "--pending",
        action="store_true",
        help="plan with the spec change awaiting approval (a chart's new values or chart, rendered)",
    )
    for name, help_ in (
        ("reconcile", "reconcile now"),
        ("suspend", "stop applying (new versions and drift)"),
        ("resume", "start applying again"),
    ):
        p = command(sub, name, Lazy("cli.environments", f"cmd_{name}"), help_, json=False)
        p.add_argument("env")
        p.add_argument("--reason", default="")
        _as(p)


def _promotions(sub: Any) -> None:
    p = command(
        sub,
        "promote",
        Lazy("cli.promotion", "cmd_promote"),
        "request promotion of a released VERSION to ENV (approval-gated)",
    )
    p.add_argument("env")
    p.add_argument("version")
    p.add_argument("--reason", default="")
    p.add_argument("--wait", action="store_true", help="wait for the outcome (exit 1 unless succeeded)")
    _as(p)
    for name in ("approve", "reject"):
        p = command(
            sub,
            name,
            Lazy("cli.promotion", f"cmd_{name}"),
            f"{name} a waiting promotion (a synchronous Update: refused is exit 1)",
            json=False,
        )
        _decision_options(p)
    p = command(
        sub,
        "rollback",
        Lazy("cli.promotion", "cmd_rollback"),
        "pin ENV to an earlier version (default: last known-good)",
    )
    p.add_argument("env")
    p.add_argument("--to", default=None, help="a released version")
    p.add_argument("--reason", default="")
    _as(p)


def _decision_options(p: argparse.ArgumentParser) -> None:
    """`ferry approve|reject ENV VERSION`'s arguments: who decides, and how the decision is signed."""
    p.add_argument("env")
    p.add_argument("version")
    p.add_argument("--comment", default=None)
    _as(p, "who (default: the local user); with --key, the environment checks that the key is listed under this name")
    signing = p.add_argument_group("signed decisions (environments whose approvers have SSH keys)")
    signing.add_argument(
        "--key",
        default=None,
        help="OpenSSH private key to sign with, e.g. ~/.ssh/id_ed25519 "
        f"(password from {KEY_PASSWORD_VARIABLE}, else asked on the terminal)",
    )
    signing.add_argument(
        "--expires",
        default="1h",
        help=f"how long the signed decision is valid (default 1h, at most {MAX_EXPIRES.days}d)",
    )
    signing.add_argument(
        "--print",
        action="store_true",
        help="print the JSON to send (Temporal UI 'Send a "
        "Signal', temporal workflow signal/update --input) instead of sending it",
    )
    signing.add_argument(
        "--print-statement",
        action="store_true",
        help="print the canonical statement to "
        f"sign with ssh-keygen -Y sign -n NAMESPACE (no trailing newline), in "
        f"{APPROVAL_NAMESPACE_HINT}",
    )
    signing.add_argument("--statement", default=None, metavar="FILE", help="a statement signed elsewhere")
    signing.add_argument("--signature", default=None, metavar="FILE", help="its ssh-keygen signature (FILE.sig)")
    signing.add_argument(
        "--run", default=None, help="the promotion's run id (with --digest: sign without asking Temporal)"
    )
    signing.add_argument("--digest", default=None, help="the promotion's digest (sha256:...)")


def _audit(sub: Any) -> None:
    p = command(
        sub,
        "audit",
        Lazy("cli.audit", "cmd_audit"),
        "who released, requested, approved, refused, applied, rolled back — from workflow histories",
    )
    p.add_argument("env", nargs="?", default=None)
    p.add_argument("--since", default="7d", help="how far back (default 7d)")
    p.add_argument(
        "--verify", action="store_true", help="re-verify every signed decision offline; exit 1 on any failure"
    )
    p = command(
        sub,
        "replay-check",
        Lazy("cli.replay_check", "cmd_replay_check"),
        "replay open and recent histories against the installed workflow code (exit 1 on non-determinism)",
    )
    p.add_argument("--since", default="7d", help="closed runs this recent, plus every open one (default 7d)")
    p.add_argument(
        "--limit",
        type=int,
        default=REPLAY_DEFAULT_LIMIT,
        help=f"at most this many runs, newest first (default {REPLAY_DEFAULT_LIMIT}, max {REPLAY_MAX_LIMIT})",
    )


def _alerts(sub: Any) -> None:
    alerts = sub.add_parser("alerts", help="declare alerts (events → providers) and see deliveries given up")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    p = command(
        alerts_sub, "apply", Lazy("cli.alerts", "cmd_apply"), "replace the declared alerts with a file's `alerts:` list"
    )
    p.add_argument("-f", "--file", required=True, help="alerts.yaml, or environments.yaml with `alerts:`")
    p = command(
        alerts_sub,
        "status",
        Lazy("cli.alerts", "cmd_status"),
        "declared alerts, counters, and undelivered notifications",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when anything was left undelivered")
    p = command(
        sub,
        "receiver",
        Lazy("cli.receiver", "cmd_receiver"),
        "webhooks in: registry pushes (and a generic "
        "HMAC webhook) signal the environments deploying from the pushed repository to reconcile now",
        json=False,
    )
    p.add_argument("--bind", default="127.0.0.1:9292", help="host:port to listen on")
    p.add_argument(
        "--token-file",
        default=None,
        help="the registry's shared secret (default $FERRY_RECEIVER_TOKEN), "
        "sent by the registry as `Authorization: Bearer TOKEN`",
    )
    p.add_argument(
        "--hmac-key-file", default=None, help="the generic webhook's HMAC key (default $FERRY_RECEIVER_HMAC_KEY)"
    )
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)


def _secrets(sub: Any) -> None:
    """`ferry secrets encrypt|recipients|status`: SOPS files with age, run with the real sops (docs/secrets.md)."""
    secrets = sub.add_parser("secrets", help="SOPS-encrypt files for age recipients; the worker's recipients")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True)
    p = secrets_sub.add_parser(
        "encrypt",
        help="encrypt FILE with sops for age recipients (a Secret manifest: data and stringData only, "
        "its kind and metadata stay readable); default: to stdout",
    )
    p.add_argument("file", metavar="FILE", help="a YAML, JSON or dotenv file (any other: encrypted whole)")
    p.add_argument(
        "--recipient",
        action="append",
        required=True,
        metavar="AGE1…",
        help="an age public key (`ferry secrets recipients` prints the worker's); repeat, or comma-separate, "
        "for several",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("-i", "--in-place", action="store_true", help="replace FILE with its encrypted form")
    out.add_argument("-o", "--output", default=None, metavar="OUT", help="write the encrypted file to OUT")
    p.set_defaults(func=Lazy("cli.secrets", "cmd_encrypt"))
    p = command(
        secrets_sub,
        "recipients",
        Lazy("cli.secrets", "cmd_recipients"),
        "the age recipients the worker's identities (FERRY_SOPS_AGE_KEYS) decrypt for, and where they are read",
    )
    p.add_argument("--identities", default=None, metavar="PATH", help="read this file or directory instead")
    p = command(
        secrets_sub,
        "status",
        Lazy("cli.secrets", "cmd_status"),
        "whether FILE is SOPS-encrypted, in which store, for which age recipients, and whether the worker's "
        "identities (FERRY_SOPS_AGE_KEYS, or --identities) decrypt it",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--identities", default=None, metavar="PATH", help="check against this file or directory")
