"""A command imports what it uses: `ferry --help` and every command's `--help` load no Temporal, Kubernetes,
OpenTelemetry, registry client or devstack process code; every command names a function that exists; a command
module that fails to import fails the command loudly. Deterministic: modules are counted, never timed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.commands import Lazy
from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "temporalio",
    "kubernetes",
    "opentelemetry",
    "oras",
    "pydantic",
    "yaml",
    "cryptography",
    "devstack.procs",
    "workers",
    "workflows",
    "activities",
)

PROBE = """
import json, sys
from cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(*argv: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    modules: list[str] = json.loads(proc.stderr.strip().splitlines()[-1])
    assert "cli.main" in modules and "argparse" in modules  # the probe ran the real parser
    return modules


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("status", "--help"),
        ("env", "list", "--help"),
        ("release", "--help"),
        ("approve", "--help"),
        ("dev", "up", "--help"),
        ("secrets", "encrypt", "--help"),
    ],
)
def test_help_imports_no_client_library(argv: tuple[str, ...]) -> None:
    assert heavy(loaded_by(*argv)) == []


def test_a_command_loads_its_module_when_it_runs() -> None:
    # `verify` with a key that does not exist fails before any network: its module (and the registry client) load
    modules = loaded_by("verify", "127.0.0.1:1/x:1.0.0", "--key", "/nonexistent.pub")
    assert "cli.verify" in modules and "cli.environments" not in modules


def test_status_queries_without_loading_the_workflow_module() -> None:
    # Temporal is unreachable (port 1): the command fails at connecting, after importing all it needs to ask
    modules = loaded_by("status", "some-env", "--temporal-address", "127.0.0.1:1")
    assert "cli.environments" in modules and "temporalio.client" in modules
    assert "workflows.environment" not in modules and "ferry.promotion" not in modules


def test_the_status_query_name_is_the_workflows() -> None:
    # the CLI asks by ferry.names.Query.STATUS (it never loads the workflow modules): the workflows answer that name
    from temporalio import workflow

    from ferry.names import Query
    from workflows.environment import EnvironmentWorkflow
    from workflows.promotion import PromotionWorkflow

    for workflow_class in (EnvironmentWorkflow, PromotionWorkflow):
        assert Query.STATUS in workflow._Definition.must_from_class(workflow_class).queries


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    found: dict[tuple[str, ...], object] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found |= _commands(child, (*path, name))
    if not found and path:
        found[path] = parser.get_default("func")
    return found


def test_every_command_names_a_function_that_exists() -> None:
    commands = _commands(build_parser())
    assert len(commands) >= 20 and ("env", "list") in commands and ("dev", "up") in commands
    for path, func in commands.items():
        target = func.resolve() if isinstance(func, Lazy) else func
        assert callable(target), path


def test_a_broken_command_module_fails_loudly() -> None:
    with pytest.raises(ModuleNotFoundError):
        Lazy("cli.no_such_module", "cmd")(argparse.Namespace())
    with pytest.raises(AttributeError):
        Lazy("cli.environments", "no_such_command").resolve()


def test_no_cli_module_imports_devstack_at_top_level() -> None:
    """The product never needs the local stack's code: `ferry dev` and the demo import it when they run."""
    import ast

    for path in sorted((ROOT / "cli").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n == "devstack" or n.startswith("devstack.") for n in names), f"{path.name}: {names}"
