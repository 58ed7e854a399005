"""Every patch id is a named constant in workflows/patches.py: no workflow asks workflow.patched() (or the
environment's env_patched/_patched, or raise_if_cancelled's patch parameter) with a string literal, and no two
constants share an id (two names for one patch, or one patch id reused for another change)."""

from __future__ import annotations

import ast
from pathlib import Path

from workflows import patches

WORKFLOWS = Path(patches.__file__).parent
PATCH_CALLS = frozenset({"patched", "env_patched", "_patched"})
PATCH_PARAMETERS = {"raise_if_cancelled": ("patch_id", 1)}  # function: (keyword, position)


def _called(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_str(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(node, ast.JoinedStr)


def literal_patch_ids(source: str, filename: str = "<source>") -> list[str]:
    """'file:line' of each patch call that names its patch with a string literal."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        args: list[ast.expr] = []
        if name in PATCH_CALLS:
            args = [*node.args, *(k.value for k in node.keywords)]
        elif name in PATCH_PARAMETERS:
            keyword, position = PATCH_PARAMETERS[name]
            args = [*node.args[position : position + 1], *(k.value for k in node.keywords if k.arg == keyword)]
        if any(_is_str(a) for a in args):
            found.append(f"{filename}:{node.lineno}")
    return found


def test_no_workflow_names_a_patch_with_a_literal() -> None:
    files = sorted(WORKFLOWS.glob("*.py"))
    assert len(files) > 10
    found = [hit for f in files for hit in literal_patch_ids(f.read_text(), f.name)]
    assert found == []


def test_a_planted_literal_is_found() -> None:
    """The check can fail: each way of asking a patch, with a literal, is reported (and a constant is not)."""
    planted = """
from temporalio import workflow
def f(err):
    workflow.patched("ferry-planted")
    env_patched("ferry-planted")
    self._patched(f"ferry-{x}")
    raise_if_cancelled(err, "ferry-planted")
    raise_if_cancelled(err, patch_id="ferry-planted")
    workflow.patched(PLANTED)
    raise_if_cancelled(err)
    other("ferry-planted")
"""
    assert literal_patch_ids(planted) == [f"<source>:{n}" for n in (4, 5, 6, 7, 8)]


def _constants() -> dict[str, str]:
    return {name: value for name, value in vars(patches).items() if name.isupper() and isinstance(value, str)}


def test_every_patch_id_is_one_constant() -> None:
    constants = _constants()
    assert len(constants) > 30
    by_value: dict[str, list[str]] = {}
    for name, value in constants.items():
        by_value.setdefault(value, []).append(name)
    assert {v: n for v, n in by_value.items() if len(n) > 1} == {}
    assert all(v.startswith("ferry-") for v in constants.values())
    assert set(patches.__all__) == {
        *constants,
        "FOLDED_INTO_BASELINE",
        "FOLDED_INTO_BASELINE_2",
        "FOLDED_INTO_BASELINE_3",
        "env_patched",
    }


def test_no_patch_id_is_defined_outside_patches() -> None:
    """A module-level 'ferry-…' string constant elsewhere in workflows/ is a patch id defined out of place."""
    found = []
    for f in sorted(WORKFLOWS.glob("*.py")):
        if f.name == "patches.py":
            continue
        for node in ast.parse(f.read_text()).body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and node.value.value.startswith("ferry-")
            ):
                found.append(f"{f.name}:{node.lineno}")
    assert found == []


def test_the_record_markers_are_those_ferry_recovery_reads() -> None:
    from ferry import recovery

    assert patches.RECORD_RECOVERED is recovery.RECORD_RECOVERED
    assert patches.BASELINE_3 is recovery.BASELINE_3
