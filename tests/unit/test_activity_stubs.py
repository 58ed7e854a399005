"""The typed references workflows call (workflows/activity_stubs.py) match the activities the workers register:
same registered name, same parameter and return annotations, same sync/async kind. A rename or a changed model on
either side fails here, not at runtime in a workflow task."""

from __future__ import annotations

import ast
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity

from activities.bundle import BundleActivities
from activities.registry import RegistryActivities, SignatureActivities
from ferry.reconcile import ResolveInput, ResolveResult
from workers.settings import Settings
from workers.worker import all_activities
from workflows import activity_stubs

ROOT = Path(__file__).resolve().parents[2]


def _name(fn: Callable[..., Any]) -> str:
    name = activity._Definition.must_from_callable(fn).name
    assert name is not None, f"{fn} is a dynamic activity"
    return name


def _registered(tmp_path: Path) -> dict[str, Callable[..., Any]]:
    """What the main worker registers, plus what `ferry release` serves on the CI queue (cli/release.py)."""
    settings = Settings(state_dir=tmp_path)
    settings.worker.cache_dir = tmp_path / "cache"
    main = all_activities(settings, client=None)  # type: ignore[arg-type]  # nothing here talks to Temporal
    ci: list[Callable[..., Any]] = [
        BundleActivities.package_bundle,
        RegistryActivities.push_artifact,
        SignatureActivities.sign_artifact,
    ]
    return {_name(fn): fn for fn in [*main, *ci]}


def _signature(fn: Callable[..., Any]) -> tuple[list[object], object, bool]:
    """(parameter annotations without self, return annotation, async?) of a function or (un)bound method."""
    func = inspect.unwrap(getattr(fn, "__func__", fn))
    hints = typing.get_type_hints(func)
    params = [p.name for p in inspect.signature(func).parameters.values() if p.name != "self"]
    return [hints[p] for p in params], hints["return"], inspect.iscoroutinefunction(func)


@pytest.mark.parametrize("stub", activity_stubs.ALL, ids=lambda s: _name(s))
def test_stub_matches_registered_implementation(stub: Callable[..., Any], tmp_path: Path) -> None:
    registered = _registered(tmp_path)
    name = _name(stub)
    assert name in registered, f"no activity named {name!r} is registered by the workers"
    assert _signature(stub) == _signature(registered[name])


def test_every_stub_in_the_module_is_listed() -> None:
    defined = {
        n for n, v in vars(activity_stubs).items() if callable(v) and activity._Definition.from_callable(v) is not None
    }
    assert defined == {s.__name__ for s in activity_stubs.ALL}


def test_a_drifted_stub_is_caught() -> None:
    """The comparison itself can fail: a stub with another input model differs from the implementation."""

    @activity.defn(name="resolve_tag")
    def drifted(input: ResolveInput) -> ResolveResult:
        raise NotImplementedError

    assert _signature(drifted) != _signature(RegistryActivities.resolve_tag)


def test_workflows_call_activities_only_through_stubs() -> None:
    """No `execute_activity("name", ..., result_type=...)` left: the first argument is never a string literal."""
    calls = {"execute_activity", "execute_local_activity", "start_activity", "start_local_activity"}
    offenders = []
    for path in sorted((ROOT / "workflows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in calls
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.keyword) and node.arg == "result_type":
                offenders.append(f"{path.name}:{node.value.lineno} result_type=")
    assert not offenders
