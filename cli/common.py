"""Helpers shared by the command modules: the connection options, the one way to connect, errors, output.

Imported to build the parser (`ferry --help`), so only the standard library at the top: whatever talks to
Temporal is imported by the function that does.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from temporalio.client import Client

    from workers.settings import Settings

T = TypeVar("T")

KEY_PASSWORD_VARIABLE = "FERRY_KEY_PASSWORD"
MAX_EXPIRES = timedelta(days=7)  # a signed decision is bound to one run; a week bounds how long it can be replayed


class CommandError(Exception):
    """A failure to report as one line and a non-zero exit."""


def settings_from(args: argparse.Namespace) -> Settings:
    from workers.settings import load_settings

    overrides = {
        "state_dir": args.state_dir,
        "temporal.address": args.temporal_address,
        "temporal.namespace": args.namespace,
        "temporal.tls": True if args.tls else None,
        "registry.default": args.registry,
    }
    return load_settings(overrides)


def global_options(parser: argparse.ArgumentParser) -> None:
    """The connection options every command that reaches Temporal or a registry takes (defined here only)."""
    group = parser.add_argument_group("connection (default: the local stack from `ferry dev up`)")
    group.add_argument(
        "--state-dir", default=None, help="local stack state directory (default .ferry, FERRY_STATE_DIR)"
    )
    group.add_argument("--temporal-address", default=None, help="host:port (FERRY_TEMPORAL_ADDRESS)")
    group.add_argument("--namespace", default=None, help="Temporal namespace (FERRY_TEMPORAL_NAMESPACE)")
    group.add_argument("--tls", action="store_true", default=None, help="TLS to Temporal (FERRY_TEMPORAL_TLS)")
    group.add_argument("--registry", default=None, help="default registry host:port (FERRY_REGISTRY)")


async def connect_client(settings: Settings) -> Client:
    """The one way a command connects: the settings' Temporal, this command's identity (what Temporal records on
    every request). An unreachable frontend is TemporalUnavailable, naming the address and namespace."""
    from workers.client import connect

    return await connect(settings.temporal, identity=cli_identity())


def run_connected(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    """Connect (connect_client), run `work` with the client on a fresh event loop, return its result."""
    import asyncio

    async def go() -> T:
        return await work(await connect_client(settings))

    return asyncio.run(go())


def where(client: Client) -> str:
    """Which Temporal a hint is about: every hint names the address and namespace it used."""
    return f"Temporal at {client.service_client.config.target_host}, namespace {client.namespace}"


CI_IDENTITY_VARIABLES = (
    "GITHUB_ACTOR",
    "GITLAB_USER_LOGIN",
    "BUILDKITE_BUILD_CREATOR_EMAIL",
    "CIRCLE_USERNAME",
    "BITBUCKET_STEP_TRIGGERER_UUID",
    "BUILD_REQUESTEDFOREMAIL",
    "JENKINS_USER_ID",
)


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
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError, FailureError

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
