from __future__ import annotations

import json
from pathlib import Path

import pytest

from ferry.capacity import cache_pressure
from workers.settings import SettingsInvalid, load_settings


def _devstack(tmp_path: Path) -> Path:
    (tmp_path / "devstack.json").write_text(json.dumps({
        "state_dir": str(tmp_path),
        "temporal": {"address": "127.0.0.1:17233", "namespace": "default", "ui_url": "http://127.0.0.1:18233"},
        "registry": {"host": "127.0.0.1:15001"},
        "kube": {"kubeconfig": str(tmp_path / "kubeconfig"), "server": "http://127.0.0.1:16443"},
    }))
    return tmp_path


def test_defaults_without_stack(tmp_path: Path) -> None:
    s = load_settings(env={}, state_dir=tmp_path)
    assert s.temporal.address == "127.0.0.1:7233"
    assert s.temporal.task_queue == "ferry"
    assert s.registry.default is None and s.registry.insecure_hosts == []


def test_local_stack_is_used_when_nothing_explicit(tmp_path: Path) -> None:
    s = load_settings(env={}, state_dir=_devstack(tmp_path))
    assert s.temporal.address == "127.0.0.1:17233"
    assert s.temporal.ui_url == "http://127.0.0.1:18233"
    assert s.registry.default == "127.0.0.1:15001"
    assert s.registry.insecure_hosts == ["127.0.0.1:15001"]
    assert s.kubeconfig == tmp_path / "kubeconfig"


def test_precedence_stack_then_temporal_env_then_ferry_env_then_flags(tmp_path: Path) -> None:
    state = _devstack(tmp_path)
    env = {"TEMPORAL_ADDRESS": "temporal.prod:7233", "TEMPORAL_NAMESPACE": "delivery"}
    s = load_settings(env=env, state_dir=state)
    assert (s.temporal.address, s.temporal.namespace) == ("temporal.prod:7233", "delivery")
    env |= {"FERRY_TEMPORAL_ADDRESS": "ferry.prod:7233", "FERRY_REGISTRY_INSECURE": "a:1, b:2",
            "FERRY_REGISTRY_USERNAME": "ci", "FERRY_REGISTRY_PASSWORD": "pw", "FERRY_TEMPORAL_TLS": "true"}
    s = load_settings(env=env, state_dir=state)
    assert s.temporal.address == "ferry.prod:7233" and s.temporal.tls
    assert s.registry.insecure_hosts == ["a:1", "b:2"]
    assert s.registry.password is not None and s.registry.password.get_secret_value() == "pw"
    assert "pw" not in repr(s)  # secrets never print
    s = load_settings({"temporal.address": "flag:7233"}, env=env, state_dir=state)
    assert s.temporal.address == "flag:7233"


def test_registry_credentials_host_and_download_cap_from_the_environment(tmp_path: Path) -> None:
    env = {"FERRY_REGISTRY": "r.example:5000", "FERRY_REGISTRY_USERNAME": "ci", "FERRY_REGISTRY_PASSWORD": "pw",
           "FERRY_REGISTRY_CREDENTIALS_HOST": "other.example", "FERRY_REGISTRY_MAX_DOWNLOAD": "1048576"}
    s = load_settings(env=env, state_dir=tmp_path)
    assert s.registry.credentials_for == "other.example" and s.registry.max_download_bytes == 1048576
    del env["FERRY_REGISTRY_CREDENTIALS_HOST"]
    assert load_settings(env=env, state_dir=tmp_path).registry.credentials_for == "r.example:5000"


def test_a_temporal_api_key_still_implies_tls(tmp_path: Path) -> None:
    s = load_settings(env={"TEMPORAL_ADDRESS": "ns.tmprl.cloud:7233", "TEMPORAL_API_KEY": "k"}, state_dir=tmp_path)
    assert s.temporal.tls and s.temporal.uses_tls and s.temporal.api_key is not None
    s = load_settings(env={"TEMPORAL_ADDRESS": "t:7233", "TEMPORAL_TLS_SERVER_NAME": "t.internal"},
                      state_dir=tmp_path)
    assert s.temporal.tls and s.temporal.tls_server_name == "t.internal"
    assert not load_settings(env={"TEMPORAL_ADDRESS": "t:7233"}, state_dir=tmp_path).temporal.uses_tls


def test_the_workers_queue_may_not_be_a_ci_hosts(tmp_path: Path) -> None:
    with pytest.raises(SettingsInvalid, match=r"temporal.task_queue \(FERRY_TASK_QUEUE='ferry-ci-0123456789abcdef'\)"
                       r".*ferry-ci are the CI hosts' own queues"):
        load_settings(env={"FERRY_TASK_QUEUE": "ferry-ci-0123456789abcdef"}, state_dir=tmp_path)


@pytest.mark.parametrize("typed", ["ture", "enabled", "2", "tru e"])
def test_a_mistyped_boolean_is_refused_naming_the_variable_not_read_as_false(tmp_path: Path, typed: str) -> None:
    with pytest.raises(SettingsInvalid, match=f"FERRY_TEMPORAL_TLS={typed!r} is not a boolean"):
        load_settings(env={"FERRY_TEMPORAL_TLS": typed}, state_dir=tmp_path)
    for text, value in (("TRUE", True), (" yes ", True), ("off", False), ("0", False)):
        assert load_settings(env={"FERRY_TEMPORAL_TLS": text}, state_dir=tmp_path).temporal.tls is value


def test_a_bad_number_is_refused_naming_its_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsInvalid, match=r"worker.max_cached_workflows \(FERRY_MAX_CACHED_WORKFLOWS='lots'\)"):
        load_settings(env={"FERRY_MAX_CACHED_WORKFLOWS": "lots"}, state_dir=tmp_path)



def test_fleet_tuning_settings(tmp_path: Path) -> None:
    env = {"FERRY_MAX_CACHED_WORKFLOWS": "20000", "FERRY_MAX_CONCURRENT_WORKFLOW_TASKS": "48",
           "FERRY_MAX_CONCURRENT_LOCAL_ACTIVITIES": "24", "FERRY_MAX_TASK_POLLERS": "12"}
    s = load_settings(env=env, state_dir=tmp_path)
    assert (s.worker.max_cached_workflows, s.worker.max_concurrent_workflow_tasks,
            s.worker.max_concurrent_local_activities, s.worker.max_task_pollers) == (20000, 48, 24, 12)
    # the defaults serve a fleet of 10,000 environments without replaying them, with the watch's headroom (README
    # "Capacity"): not even "thin"
    default = load_settings(env={}, state_dir=tmp_path).worker.max_cached_workflows
    assert cache_pressure(10_000, 1, default, "ferry").level == "ok"
