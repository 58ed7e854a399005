"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Callable
from typing import Any

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, FailureError

from workers.settings import Settings, load_settings

# Command groups append a `register(subparsers)` here (cli.release, cli.environments, ...).
COMMANDS: list[Callable[[Any], None]] = []


class CommandError(Exception):
    """A failure to report as one line and a non-zero exit."""


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        "state_dir": args.state_dir,
        "temporal.address": args.temporal_address,
        "temporal.namespace": args.namespace,
        "temporal.tls": True if args.tls else None,
        "registry.default": args.registry,
    }
    return load_settings(overrides)


def global_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (default: the local stack from `ferry dev up`)")
    group.add_argument("--state-dir", default=None,
                       help="local stack state directory (default .ferry, FERRY_STATE_DIR)")
    group.add_argument("--temporal-address", default=None, help="host:port (FERRY_TEMPORAL_ADDRESS)")
    group.add_argument("--namespace", default=None, help="Temporal namespace (FERRY_TEMPORAL_NAMESPACE)")
    group.add_argument("--tls", action="store_true", default=None, help="TLS to Temporal (FERRY_TEMPORAL_TLS)")
    group.add_argument("--registry", default=None, help="default registry host:port (FERRY_REGISTRY)")



CI_IDENTITY_VARIABLES = ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR_EMAIL", "CIRCLE_USERNAME",
                         "BITBUCKET_STEP_TRIGGERER_UUID", "BUILD_REQUESTEDFOREMAIL", "JENKINS_USER_ID")


def local_identity() -> str:
    """CI's identity when the usual CI variables are present, else the local user."""
    for name in CI_IDENTITY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return os.environ.get("FERRY_IDENTITY") or getpass.getuser()


def cli_identity() -> str:
    """The Temporal client identity of this command: the OS user and host, not the claimed --as name."""
    import socket

    return f"ferry-cli:{getpass.getuser()}@{socket.gethostname()}"


def root_cause(err: BaseException) -> str:
    """The innermost failure's type and message, for a one-line report."""
    current: BaseException | None = err
    last = err
    while current is not None:
        last = current
        current = current.cause if isinstance(current, FailureError) else current.__cause__
        if isinstance(last, WorkflowFailureError):
            current = last.cause
    if isinstance(last, ApplicationError) and last.type:
        return f"{last.type}: {last.message}"
    if isinstance(last, FailureError):
        return last.message
    return str(last)


def emit(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)
