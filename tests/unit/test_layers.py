"""The layer rules of docs/architecture.md, enforced: `ferry/` is pure (no Temporal, no cluster, no registry client),
`workflows/` is deterministic orchestration (no I/O client, no activity code), activities are thin adapters that
never import workflow or worker code, and only one adapter each talks to Kubernetes and to the registry. Every
import counts, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> modules (top-level names, or dotted prefixes) it may never import
FORBIDDEN: dict[str, set[str]] = {
    "ferry": {"temporalio", "kubernetes", "oras", "requests", "urllib3", "workflows", "activities", "workers", "cli",
              "devstack", "opentelemetry"},
    "workflows": {"kubernetes", "oras", "requests", "urllib3", "yaml", "activities", "workers", "cli", "devstack",
                  "temporalio.client", "temporalio.worker", "temporalio.testing", "socket", "subprocess", "random",
                  "threading", "opentelemetry"},
    "activities": {"workflows", "workers", "cli", "devstack"},
}
# only these adapters may import these clients
ONLY: dict[str, set[str]] = {"kubernetes": {"activities/cluster.py"}, "oras": {"activities/registry.py"}}


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute imports; relative ones stay inside the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _matches(module: str, rule: str) -> bool:
    return module == rule or module.startswith(rule + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers(package: str) -> None:
    broken = sorted(f"{path.relative_to(ROOT)} imports {module}"
                    for path in (ROOT / package).rglob("*.py")
                    for module in imports(path)
                    if any(_matches(module, rule) for rule in FORBIDDEN[package]))
    assert not broken, "layer rule broken:\n" + "\n".join(broken)


@pytest.mark.parametrize("client", sorted(ONLY))
def test_one_adapter_per_client(client: str) -> None:
    users = sorted(str(path.relative_to(ROOT)) for package in ("ferry", "workflows", "activities", "workers")
                   for path in (ROOT / package).rglob("*.py")
                   if any(_matches(module, client) for module in imports(path)))
    assert set(users) == ONLY[client], f"{client} imported by {users}; only {sorted(ONLY[client])} may"


def test_the_rules_see_imports() -> None:
    """The scanner itself: a rule that can never match would pass for anything."""
    sample = ROOT / "activities" / "cluster.py"
    assert "kubernetes" in {m.split(".")[0] for m in imports(sample)}
    assert any(_matches(m, "temporalio.worker") for m in imports(ROOT / "workers" / "worker.py"))
