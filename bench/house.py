"""The shape of the house, as numbers: file and function sizes, import circles and arrows, README length.

    .venv/bin/python bench/house.py [--json OUT]

What it measures (product packages only: ferry, workflows, activities, workers, cli, devstack):
- lines per file: the largest, and how many are over ``MAX_FILE_LINES``;
- lines per function or method: the largest, and how many are over ``MAX_FUNCTION_LINES``;
- import circles: strongly connected sets of modules (grimp's graph, the one import-linter checks), with every
  import counted, at module level or inside a function;
- arrows: imports from one top-level package into another, per pair (the layer table of docs/architecture.md);
- README lines and ``NB:`` markers in the product.

Exit status 1 when a bound is broken (a circle, a file or function over its bound), so CI can keep it.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ferry", "workflows", "activities", "workers", "cli", "devstack")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 50
NB_MARKER = "NB:"


def _files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            found.append((size, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return found


def _circles(graph: Any) -> list[list[str]]:
    """Tarjan's strongly connected components of size > 1 (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    product = {m for m in graph.modules if m.split(".")[0] in PACKAGES}

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start) & product)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & product))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))

    for module in sorted(product):
        if module not in index:
            visit(module)
    return found


def _is_package(graph: Any, module: str) -> bool:
    return bool(graph.find_children(module))


def measure() -> dict[str, Any]:
    files = _files()
    lines = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in files}
    functions = sorted((f for p in files for f in _functions(p)), reverse=True)
    nb = sum(p.read_text(encoding="utf-8").count(NB_MARKER) for p in files)
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    circles = [c for c in _circles(graph) if not any(_is_package(graph, m) for m in c) or len(c) > 2]
    arrows: Counter[str] = Counter()
    for module in graph.modules:
        top = module.split(".")[0]
        for imported in graph.find_modules_directly_imported_by(module):
            other = imported.split(".")[0]
            if other != top and other in PACKAGES:
                arrows[f"{top} -> {other}"] += 1
    largest_files = sorted(lines.items(), key=lambda kv: -kv[1])
    return {
        "files": len(files),
        "lines": sum(lines.values()),
        "largest_file": {"path": largest_files[0][0], "lines": largest_files[0][1]},
        "files_over_bound": {p: n for p, n in largest_files if n > MAX_FILE_LINES},
        "largest_function": {"where": functions[0][1], "lines": functions[0][0]},
        "functions_over_bound": {w: n for n, w in functions if n > MAX_FUNCTION_LINES},
        "circles": circles,
        "arrows": dict(sorted(arrows.items())),
        "readme_lines": len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()),
        "nb_markers": nb,
        "bounds": {"file_lines": MAX_FILE_LINES, "function_lines": MAX_FUNCTION_LINES},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file as well")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    figures = measure()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    broken = figures["circles"] or figures["files_over_bound"] or figures["functions_over_bound"]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
