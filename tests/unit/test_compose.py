"""docker-compose.yml cannot run here (no Docker engine); check it agrees with the settings the worker reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from devstack.temporal import SEARCH_ATTRIBUTES
from workers.settings import ENVIRONMENT_VARIABLES, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_present() -> None:
    services = _compose()["services"]
    assert {"postgresql", "temporal", "temporal-ui", "registry", "ferry-worker"} <= set(services)
    assert services["temporal"]["environment"]["DB"].startswith("postgres")
    assert services["ferry-worker"]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_worker_environment_is_what_settings_read_and_points_at_services() -> None:
    services = _compose()["services"]
    env = {k: str(v) for k, v in services["ferry-worker"]["environment"].items()}
    unknown = {k for k in env if k.startswith("FERRY_")} - set(ENVIRONMENT_VARIABLES)
    assert not unknown, f"docker-compose sets variables the worker never reads: {unknown}"
    settings = load_settings(env=env, state_dir=ROOT / "nonexistent-state")
    host, port = settings.temporal.address.split(":")
    assert host in services and f"{port}:{port}" in services[host]["ports"]
    reg_host, reg_port = (settings.registry.default or "").split(":")
    assert reg_host in services
    assert any(p.endswith(f":{reg_port}") for p in services[reg_host]["ports"])
    assert settings.registry.default in settings.registry.insecure_hosts
    ui_port = settings.temporal.ui_url.rsplit(":", 1)[1]
    assert any(p.startswith(f"{ui_port}:") for p in services["temporal-ui"]["ports"])


def test_search_attributes_registered_in_compose_match_devstack() -> None:
    command = " ".join(_compose()["services"]["temporal-admin"]["command"])
    for name in SEARCH_ATTRIBUTES:
        assert name in command
