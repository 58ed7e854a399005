from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ferry.capacity import cache_pressure
from workers.settings import ENVIRONMENT_VARIABLES, FerryEnvironment, SettingsInvalid, load_settings


def _devstack(tmp_path: Path) -> Path:
    (tmp_path / "devstack.json").write_text(
        json.dumps(
            {
                "state_dir": str(tmp_path),
                "temporal": {"address": "127.0.0.1:17233", "namespace": "default", "ui_url": "http://127.0.0.1:18233"},
                "registry": {"host": "127.0.0.1:15001"},
                "kube": {"kubeconfig": str(tmp_path / "kubeconfig"), "server": "http://127.0.0.1:16443"},
            }
        )
    )
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
    env |= {
        "FERRY_TEMPORAL_ADDRESS": "ferry.prod:7233",
        "FERRY_REGISTRY_INSECURE": "a:1, b:2",
        "FERRY_REGISTRY_USERNAME": "ci",
        "FERRY_REGISTRY_PASSWORD": "pw",
        "FERRY_TEMPORAL_TLS": "true",
    }
    s = load_settings(env=env, state_dir=state)
    assert s.temporal.address == "ferry.prod:7233" and s.temporal.tls
    assert s.registry.insecure_hosts == ["a:1", "b:2"]
    assert s.registry.password is not None and s.registry.password.get_secret_value() == "pw"
    assert "pw" not in repr(s)  # secrets never print
    s = load_settings({"temporal.address": "flag:7233"}, env=env, state_dir=state)
    assert s.temporal.address == "flag:7233"
    s = load_settings(env={"FERRY_REGISTRY_INSECURE": '["a:1"]'}, state_dir=state)
    assert s.registry.insecure_hosts == ['["a:1"]']  # a list of hosts is split at commas, never read as JSON


def test_registry_credentials_host_and_download_cap_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FERRY_REGISTRY": "r.example:5000",
        "FERRY_REGISTRY_USERNAME": "ci",
        "FERRY_REGISTRY_PASSWORD": "pw",
        "FERRY_REGISTRY_CREDENTIALS_HOST": "other.example",
        "FERRY_REGISTRY_MAX_DOWNLOAD": "1048576",
    }
    s = load_settings(env=env, state_dir=tmp_path)
    assert s.registry.credentials_for == "other.example" and s.registry.max_download_bytes == 1048576
    del env["FERRY_REGISTRY_CREDENTIALS_HOST"]
    assert load_settings(env=env, state_dir=tmp_path).registry.credentials_for == "r.example:5000"


def test_a_temporal_api_key_still_implies_tls(tmp_path: Path) -> None:
    s = load_settings(env={"TEMPORAL_ADDRESS": "ns.tmprl.cloud:7233", "TEMPORAL_API_KEY": "k"}, state_dir=tmp_path)
    assert s.temporal.tls and s.temporal.uses_tls and s.temporal.api_key is not None
    s = load_settings(env={"TEMPORAL_ADDRESS": "t:7233", "TEMPORAL_TLS_SERVER_NAME": "t.internal"}, state_dir=tmp_path)
    assert s.temporal.tls and s.temporal.tls_server_name == "t.internal"
    assert not load_settings(env={"TEMPORAL_ADDRESS": "t:7233"}, state_dir=tmp_path).temporal.uses_tls


def test_the_workers_queue_may_not_be_a_ci_hosts(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsInvalid,
        match=r"temporal.task_queue \(FERRY_TASK_QUEUE='ferry-ci-0123456789abcdef'\)"
        r".*ferry-ci are the CI hosts' own queues",
    ):
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
    env = {
        "FERRY_MAX_CACHED_WORKFLOWS": "20000",
        "FERRY_MAX_CONCURRENT_WORKFLOW_TASKS": "48",
        "FERRY_MAX_CONCURRENT_LOCAL_ACTIVITIES": "24",
        "FERRY_MAX_TASK_POLLERS": "12",
    }
    s = load_settings(env=env, state_dir=tmp_path)
    assert (
        s.worker.max_cached_workflows,
        s.worker.max_concurrent_workflow_tasks,
        s.worker.max_concurrent_local_activities,
        s.worker.max_task_pollers,
    ) == (20000, 48, 24, 12)
    # the defaults serve a fleet of 10,000 environments without replaying them, with the watch's headroom (README
    # "Capacity"): not even "thin"
    default = load_settings(env={}, state_dir=tmp_path).worker.max_cached_workflows
    assert cache_pressure(10_000, 1, default, "ferry").level == "ok"


def test_a_mistyped_duration_is_refused_naming_its_variable(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsInvalid,
        match=r"registry.request_timeout_seconds \(FERRY_REGISTRY_TIMEOUT='30s'\): "
        r"Input should be a valid number",
    ):
        load_settings(env={"FERRY_REGISTRY_TIMEOUT": "30s"}, state_dir=tmp_path)
    assert (
        load_settings(env={"FERRY_REGISTRY_TIMEOUT": "2.5"}, state_dir=tmp_path).registry.request_timeout_seconds == 2.5
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "FERRY_OTEL_EXPORTER",
            "jaeger",
            r"telemetry.exporter \(FERRY_OTEL_EXPORTER='jaeger'\): Input should be 'none'",
        ),
        (
            "FERRY_MAX_TASK_POLLERS",
            "1",
            r"worker.max_task_pollers \(FERRY_MAX_TASK_POLLERS='1'\): .*greater than or equal",
        ),
        ("FERRY_REGISTRY_MAX_DOWNLOAD", "1.5", r"registry.max_download_bytes \(FERRY_REGISTRY_MAX_DOWNLOAD='1.5'\)"),
    ],
)
def test_a_value_outside_what_a_setting_takes_is_refused(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsInvalid, match=message):
        load_settings(env={variable: value}, state_dir=tmp_path)


def test_a_secret_is_never_printed_not_even_when_refused(tmp_path: Path) -> None:
    env = {
        "FERRY_TEMPORAL_API_KEY": "key-sekrit",
        "FERRY_REGISTRY_PASSWORD": "pw-sekrit",
        "FERRY_REGISTRY": "r:5000",
        "FERRY_REGISTRY_USERNAME": "ci",
    }
    s = load_settings(env=env, state_dir=tmp_path)
    assert s.temporal.api_key is not None and s.temporal.api_key.get_secret_value() == "key-sekrit"
    assert "sekrit" not in repr(s) + repr(FerryEnvironment.read(env)) + str(s.model_dump())
    with pytest.raises(SettingsInvalid) as refused:
        load_settings(env={"FERRY_REGISTRY_PASSWORD": "pw-sekrit"}, state_dir=tmp_path)
    assert "sekrit" not in str(refused.value)


def test_unset_empty_unknown_and_miscased_variables_leave_the_documented_defaults(tmp_path: Path) -> None:
    env = {
        "FERRY_TEMPORAL_ADDRESS": "",
        "FERRY_MAX_CACHED_WORKFLOWS": "",
        "ferry_temporal_tls": "true",
        "FERRY_PHASE": "release",
        "FERRY_TEMPORAL_TLS_EXTRA": "x",
    }
    for s in (load_settings(env={}, state_dir=tmp_path), load_settings(env=env, state_dir=tmp_path)):
        assert (s.temporal.address, s.temporal.namespace, s.temporal.tls, s.temporal.ui_url, s.temporal.api_key) == (
            "127.0.0.1:7233",
            "default",
            False,
            "http://127.0.0.1:8233",
            None,
        )
        assert (s.registry.request_timeout_seconds, s.registry.max_download_bytes) == (30.0, 256 * 1024 * 1024)
        assert (s.telemetry.exporter, s.telemetry.service_name, s.telemetry.prometheus_bind) == ("none", "ferry", None)
        w = s.worker
        assert (
            w.max_concurrent_activities,
            w.max_cached_workflows,
            w.max_concurrent_workflow_tasks,
            w.max_concurrent_local_activities,
            w.max_task_pollers,
        ) == (16, 12_000, 32, 16, 20)
        assert (s.worker.cache_dir, s.worker.deployment_name, s.worker.build_id, s.worker.alert_providers) == (
            Path(".ferry/cache"),
            None,
            None,
            None,
        )
        assert (s.state_dir, s.kubeconfig, s.clusters) == (tmp_path, None, None)


# One valid value per variable; each must land at the path ENVIRONMENT_VARIABLES names for it.
EVERY_VARIABLE = {
    "FERRY_TEMPORAL_ADDRESS": "t:7233",
    "FERRY_TEMPORAL_NAMESPACE": "ns",
    "FERRY_TEMPORAL_TLS": "yes",
    "FERRY_TEMPORAL_TLS_CERT": "/pki/c.pem",
    "FERRY_TEMPORAL_TLS_KEY": "/pki/k.pem",
    "FERRY_TEMPORAL_TLS_CA": "/pki/ca",
    "FERRY_TEMPORAL_TLS_SERVER_NAME": "t.internal",
    "FERRY_TEMPORAL_API_KEY": "k",
    "FERRY_TEMPORAL_UI_URL": "http://ui",
    "FERRY_TASK_QUEUE": "q",
    "FERRY_REGISTRY": "r:5000",
    "FERRY_REGISTRY_INSECURE": "r:5000,s:5000",
    "FERRY_REGISTRY_USERNAME": "ci",
    "FERRY_REGISTRY_PASSWORD": "pw",
    "FERRY_REGISTRY_CREDENTIALS_HOST": "r:5000",
    "FERRY_DOCKER_CONFIG": "/d/config.json",
    "FERRY_REGISTRY_TIMEOUT": "7.5",
    "FERRY_REGISTRY_MAX_DOWNLOAD": "4096",
    "FERRY_OTEL_EXPORTER": "otlp",
    "FERRY_OTEL_ENDPOINT": "http://c:4318",
    "FERRY_PROMETHEUS_BIND": "0.0.0.0:9464",
    "FERRY_MAX_CONCURRENT_ACTIVITIES": "3",
    "FERRY_MAX_CACHED_WORKFLOWS": "4",
    "FERRY_MAX_CONCURRENT_WORKFLOW_TASKS": "5",
    "FERRY_MAX_CONCURRENT_LOCAL_ACTIVITIES": "6",
    "FERRY_MAX_TASK_POLLERS": "7",
    "FERRY_CACHE_DIR": "/c",
    "FERRY_DEPLOYMENT_NAME": "ferry",
    "FERRY_BUILD_ID": "b1",
    "FERRY_ALERT_PROVIDERS": "/p.yaml",
    "FERRY_SOPS_AGE_KEYS": "/etc/ferry/age",
    "FERRY_PROMETHEUS_URL": "http://prometheus:9090",
    "FERRY_KUBECONFIG": "/k",
    "FERRY_CLUSTERS": "/clusters.yaml",
}


def test_every_variable_is_read_into_its_setting(tmp_path: Path) -> None:
    assert set(ENVIRONMENT_VARIABLES) == set(EVERY_VARIABLE) | {"FERRY_STATE_DIR"}
    s = load_settings(env=EVERY_VARIABLE | {"FERRY_STATE_DIR": str(tmp_path)}).model_dump()
    for variable, raw in EVERY_VARIABLE.items():
        value: Any = s
        for part in ENVIRONMENT_VARIABLES[variable].split("."):
            value = value[part]
        value = value.get_secret_value() if isinstance(value, SecretStr) else value
        assert str(value) == {"yes": "True", "r:5000,s:5000": "['r:5000', 's:5000']"}.get(raw, raw), variable
    assert s["state_dir"] == tmp_path
