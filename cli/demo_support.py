"""The demo's tools (cli/demo.py tells the story): run a ferry command as a person types it, wait on an environment's
status, build a release bundle, make the keys, fill examples/environments.yaml, read the local receiver's log."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.wiring import script_path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".ferry"
FERRY = [sys.executable, "-m", "cli"]
PUBLISHER = "sre-bob"  # publishes from a release branch, and is also an approver of production
SRE = "sre-alice"


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def run(argv: list[str], *, check: bool = True, show: bool = True) -> subprocess.CompletedProcess[str]:
    shown = ["ferry", *argv[3:]] if argv[:3] == FERRY else [Path(argv[0]).name, *argv[1:]]
    print(f"$ {shlex.join(shown)}", flush=True)
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if show and result.stdout.strip():
        print(result.stdout.rstrip())
    if result.stderr.strip() and (show or result.returncode):
        print(result.stderr.rstrip())
    if check and result.returncode != 0:
        sys.exit(f"demo: step failed (exit {result.returncode})")
    return result


def ferry_json(*args: str) -> Any:
    return json.loads(run([*FERRY, *args, "--json"], show=False).stdout)


def wait(what: str, predicate: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    sys.exit(f"demo: timed out waiting for {what}")


def env_status(name: str) -> dict[str, Any]:
    out = subprocess.run([*FERRY, "status", name, "--json"], capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def applied(name: str, version: str, health: str = "Healthy") -> bool:
    state = env_status(name).get("state", {})
    return bool(
        (state.get("last_applied") or {}).get("version") == version and state.get("health", {}).get("status") == health
    )


def revision(version: str) -> str:
    """Flux's <branch>@sha1:<commit> of this checkout (the demo's stand-in for a config repository)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    return f"release-{version}@sha1:{commit.strip() or '0' * 40}"


def bundle(version: str, image_tag: str, message: str, into: Path) -> Path:
    target = into / f"app-{version}"
    shutil.copytree(ROOT / "examples" / "app", target)
    deployment = target / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("podinfo:6.5.0", f"podinfo:{image_tag}"))
    configmap = target / "base" / "configmap.yaml"
    configmap.write_text(configmap.read_text().replace("Hello from Ferry", message))
    return target


def notification(sink: subprocess.Popen[bytes], event: str) -> dict[str, Any] | None:
    """The first notification of this event type the local receiver printed."""
    text = Path(sink.log).read_text()  # type: ignore[attr-defined]
    for chunk in text.split("--- ")[1:]:
        body = chunk.split("\n", 1)[1] if "\n" in chunk else ""
        with contextlib.suppress(ValueError):
            data = json.loads(body)
            if isinstance(data, dict) and data.get("reason") == event:
                return data
    return None


def push_to_applied(version: str, applied_at: str) -> str:
    """When the registry told `ferry receiver` of the push (its log), and when staging recorded Applied."""
    from datetime import UTC, datetime

    log = STATE / "logs" / "receiver.log"
    lines = (
        [line for line in log.read_text().splitlines() if f":{version}: reconcile_now" in line] if log.is_file() else []
    )
    if not lines:
        return f"staging recorded Applied {version} at {applied_at} (no push seen by `ferry receiver`)"
    heard = datetime.strptime(lines[0][:23], "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)
    applied = datetime.strptime(applied_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max((applied - heard).total_seconds(), 0.0)
    return (
        f"the registry announced {version} to `ferry receiver` at {heard:%H:%M:%S.%f}"[:-3] + " UTC, which "
        f"signalled reconcile_now ({lines[0].rsplit('reconcile_now to ', 1)[-1]}); staging recorded Applied at "
        f"{applied_at}, within {seconds + 1:.0f}s (events have 1-second resolution; staging's interval is 5s)"
    )


def make_keys(tmp: Path) -> dict[str, Path]:
    """The demo's keys, made fresh: CI's release key (ECDSA P-256 PEM) and each SRE's SSH key (ssh-keygen)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    release = ec.generate_private_key(ec.SECP256R1())
    keys = {"release": tmp / "release.key", "release.pub": tmp / "release.pub"}
    keys["release"].write_bytes(
        release.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    keys["release.pub"].write_bytes(
        release.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for person in (SRE, PUBLISHER):
        keys[person] = tmp / f"id_{person}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", person, "-f", str(keys[person])], check=True
        )
    return keys


def fill_environments(repository: str, keys: dict[str, Path], example: str = "environments.yaml") -> str:
    """examples/<example> with its placeholders filled (each value JSON-escaped into a quoted scalar)."""
    values = {
        "REPOSITORY": repository,
        "RELEASE_PUBLIC_KEY": keys["release.pub"].read_text(),
        "SRE_ALICE_KEY": Path(f"{keys[SRE]}.pub").read_text().strip(),
        "SRE_BOB_KEY": Path(f"{keys[PUBLISHER]}.pub").read_text().strip(),
    }
    text = (ROOT / "examples" / example).read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", json.dumps(value)[1:-1])
    return text


@dataclass
class Story:
    """What the steps share: the running stack, this run's keys, repository and alert receiver."""

    info: Any  # devstack.stack.StackInfo
    tmp: Path
    keys: dict[str, Path]
    repository: str
    started: float
    sink: subprocess.Popen[bytes] | None = None
    secret: Any = None  # cli.demo_secret.DemoSecret: the Secret CI encrypts for the stack's recipient

    @property
    def temporal(self) -> list[str]:
        """The `temporal` CLI against the stack's server."""
        return [script_path("temporal") or "temporal"]

    @property
    def address(self) -> list[str]:
        return ["--address", self.info.components["temporal"]["address"]]

    def release(self, version: str, image_tag: str, message: str) -> Any:
        directory = bundle(version, image_tag, message, self.tmp)
        if self.secret is not None:
            self.secret.add_to(directory)
        return ferry_json(
            "release",
            str(directory),
            "--repository",
            self.repository,
            "--version",
            version,
            "--published-by",
            PUBLISHER,
            "--revision",
            revision(version),
            "--sign-key",
            str(self.keys["release"]),
        )
