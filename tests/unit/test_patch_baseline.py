"""The environment's patches folded into one baseline marker (workflows/environment.py): every patch the workflow
asks through `_patched` is one the baseline folds in, and one that is not is refused before any marker is written
(a patch added after the baseline must be asked on its own: runs with the baseline's marker never took it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from workflows import patches
from workflows.patches import (
    BASELINE,
    BASELINE_2,
    BASELINE_3,
    FOLDED_INTO_BASELINE,
    FOLDED_INTO_BASELINE_2,
    FOLDED_INTO_BASELINE_3,
)
from workflows.patches import env_patched as _patched

MODULES = ("environment", "env_events", "env_health", "env_source", "env_spec")
HERE = Path(patches.__file__).parent


def _class_source(module: str, name: str) -> str:
    """One class of a module that holds both ends of a protocol (the environment's end is asked through the baseline,
    the sender's is not)."""
    text = (HERE / f"{module}.py").read_text()
    found = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == name]
    assert len(found) == 1, (module, name)
    return ast.get_source_segment(text, found[0]) or ""


SOURCE = "\n".join(
    [*((HERE / f"{m}.py").read_text() for m in MODULES), _class_source("pin_protocol", "EnvironmentPins")]
)
PATCHES = Path(patches.__file__).read_text()


def test_the_patches_asked_through_the_baseline_are_exactly_those_folded_into_it() -> None:
    """An id asked but not folded would raise in a workflow task; a folded id nobody asks any more is a branch
    removed without retiring its patch (deprecate_patch first, docs/architecture.md)."""
    asked = {getattr(patches, name) for name in re.findall(r"_patched\(([A-Z_0-9]+)\)", SOURCE)}
    folded = FOLDED_INTO_BASELINE | FOLDED_INTO_BASELINE_2 | FOLDED_INTO_BASELINE_3
    assert asked == folded, (asked - folded, folded - asked)
    assert BASELINE not in FOLDED_INTO_BASELINE
    later = FOLDED_INTO_BASELINE_2 | FOLDED_INTO_BASELINE_3
    assert not FOLDED_INTO_BASELINE & FOLDED_INTO_BASELINE_2 and not FOLDED_INTO_BASELINE_2 & FOLDED_INTO_BASELINE_3
    assert BASELINE_2 not in later and BASELINE_3 not in later


def test_no_environment_path_asks_a_patch_outside_the_baselines() -> None:
    """A direct workflow.patched() in the environment would write a second marker in every new run."""
    assert re.findall(r"workflow\.patched\(\w", SOURCE) == []
    start = PATCHES.index("\ndef env_patched(")
    assert re.findall(r"workflow\.patched\(\w", PATCHES[:start]) == []


def test_the_baseline_folds_exactly_the_patches_it_shipped_with() -> None:
    """Folding a later patch into this baseline would make every run that carries its marker take that patch's new
    branch on replay, though it never did: a new patch gets its own workflow.patched() call, or a new baseline."""
    assert BASELINE == "ferry-environment-baseline-1"
    assert sorted(FOLDED_INTO_BASELINE) == [
        "ferry-alerts",
        "ferry-audit-memo",
        "ferry-cancel-suspends",
        "ferry-health-from-apply",
        "ferry-health-outage-unjudged",
        "ferry-health-preemptible",
        "ferry-local-check",
        "ferry-pin-during-resolve",
        "ferry-pin-outcome-signal",
        "ferry-protected-spec",
        "ferry-publish-on-change",
        "ferry-publish-tracking",
    ]


def test_the_second_baseline_folds_exactly_the_patches_it_shipped_with() -> None:
    assert BASELINE_2 == "ferry-environment-baseline-2"
    assert sorted(FOLDED_INTO_BASELINE_2) == [
        "ferry-activity-cancel-suspends",
        "ferry-answers-before-continue-as-new",
        "ferry-cancel-continues-as-new",
        "ferry-flood-bounded",
        "ferry-gate-hardened",
        "ferry-health-rejudged",
        "ferry-pin-confirmed",
        "ferry-upgrade-on-version-change",
    ]


def test_the_third_baseline_folds_exactly_the_patches_it_shipped_with() -> None:
    assert BASELINE_3 == "ferry-environment-baseline-3"
    assert sorted(FOLDED_INTO_BASELINE_3) == [
        "ferry-confirm-bounded",
        "ferry-hold-of-applied",
        "ferry-record-recovered",
    ]


def test_a_patch_not_folded_in_is_refused() -> None:
    with pytest.raises(ValueError, match="not folded into ferry-environment-baseline-1, "):
        _patched("ferry-some-later-change")
