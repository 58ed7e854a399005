"""The layer rules of docs/architecture.md are import-linter contracts in pyproject.toml ([tool.importlinter]), run by
`make lint`. Here: they hold on the tree, they break on a planted forbidden import (so a rule that can never match
would fail this file), and the two rules import-linter cannot express: `workflows/` never imports the client or
worker side of temporalio (a subpackage of a third-party package), and the CLI's dev-stack imports stay inside the
`ferry dev` / `make demo` command functions."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ferry", "workflows", "activities", "workers", "cli", "devstack")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# (file, import to plant, contract name and the broken import lint-imports must report)
PLANTED = [
    ("ferry/durations.py", "import temporalio", "ferry/ is pure", "ferry.durations -> temporalio"),
    (
        "workflows/policies.py",
        "import activities.cluster",
        "workflows/ imports no I/O client",
        "workflows.policies -> activities.cluster",
    ),
    (
        "workers/telemetry.py",
        "import oras.provider",
        "only activities.registry imports oras",
        "workers.telemetry -> oras",
    ),
    (
        "activities/bundle.py",
        "import kubernetes",
        "only activities.cluster (and the dev stack) imports kubernetes",
        "activities.bundle -> kubernetes",
    ),
    ("ferry/events.py", "import ferry.environment", "ferry/ in layers", "ferry.events -> ferry.environment"),
    (
        "cli/verify.py",
        "import activities.registry",
        "cli/ never imports activities/ itself",
        "cli.verify -> activities.registry",
    ),
    (
        "cli/common.py",
        "import devstack.procs",
        "the product (ferry, workflows, activities, workers, cli) does not import devstack",
        "cli.common -> devstack.procs",
    ),
]


def _all_but_python(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # NB: wide columns, so that no contract name is wrapped in the report.
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "400"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold_on_the_tree() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """lint-imports over a copy of the tree with one forbidden import planted per contract, inside a function
    (import-linter sees those too)."""
    root = tmp_path_factory.mktemp("planted")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=_all_but_python)
    shutil.copy(ROOT / "pyproject.toml", root)
    for file, statement, _, _ in PLANTED:
        with (root / file).open("a") as f:
            f.write(f"\n\ndef _planted() -> None:\n    {statement}  # noqa\n")
    return lint_imports(root)


def test_lint_fails_on_a_forbidden_import(planted: subprocess.CompletedProcess[str]) -> None:
    assert planted.returncode != 0
    assert f"{len(PLANTED)} broken" in planted.stdout, planted.stdout


@pytest.mark.parametrize(("contract", "broken"), [(c, b) for _, _, c, b in PLANTED], ids=[f for f, *_ in PLANTED])
def test_each_contract_names_its_planted_import(
    planted: subprocess.CompletedProcess[str], contract: str, broken: str
) -> None:
    broken_lines = [line for line in planted.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contract) for line in broken_lines), planted.stdout
    assert broken in planted.stdout, planted.stdout


def imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """Every module a file imports (absolute imports); with module_level_only, not those inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else ast.walk(tree)
    if module_level_only:  # module level includes `if TYPE_CHECKING:` and `try:` blocks
        nodes = [
            n
            for top in tree.body
            if not isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            for n in ast.walk(top)
        ]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_workflows_never_import_the_client_side_of_temporalio() -> None:
    forbidden = ("temporalio.client", "temporalio.worker", "temporalio.testing")
    broken = sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "workflows").rglob("*.py")
        for module in imports(path)
        if any(_within(module, rule) for rule in forbidden)
    )
    assert not broken, "\n".join(broken)


def test_the_cli_imports_devstack_only_inside_its_dev_commands() -> None:
    at_module_level = sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "cli").rglob("*.py")
        for module in imports(path, module_level_only=True)
        if _within(module, "devstack")
    )
    assert not at_module_level, "\n".join(at_module_level)


def test_the_scanner_sees_imports() -> None:
    """The scanner itself: a rule that can never match would pass for anything."""
    assert any(_within(m, "temporalio.worker") for m in imports(ROOT / "workers" / "worker.py"))
    assert any(_within(m, "devstack") for m in imports(ROOT / "cli" / "main.py"))
    assert not any(_within(m, "devstack") for m in imports(ROOT / "cli" / "main.py", module_level_only=True))


def test_tiers_share_helpers_through_the_kit_only() -> None:
    """Shared test helpers live in tests/kit/: no tier (nor bench/) imports another tier's test modules, and no one
    imports conftest (pytest loads it; importing it again makes a second copy of its state)."""
    tests = ROOT / "tests"
    broken = []
    for path in [*tests.rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        if "node_modules" in path.parts:
            continue
        tier = path.relative_to(tests).parts[0] if path.is_relative_to(tests) else "bench"
        for module in imports(path):
            parts = module.split(".")
            if parts[0] != "tests" or len(parts) < 2 or parts[1] == "kit":
                continue
            if "conftest" in parts or parts[1] != tier:
                broken.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not broken, "\n".join(sorted(broken))
