"""The cluster topology's generated configs (devstack/temporal_cluster.py): what the Temporal server and the UI
server are told, checked without starting them (tests/chaos starts them)."""

from __future__ import annotations

from pathlib import Path

from devstack.temporal_cluster import (
    NUM_HISTORY_SHARDS,
    SERVICES,
    _membership_port,
    dynamic_config,
    server_config,
    ui_config,
)

PORTS = {
    "frontend-http": 47243,
    "frontend-membership": 26933,
    "history-membership": 26934,
    "matching-membership": 26935,
    "worker-membership": 26939,
    "history-grpc": 47234,
    "matching-grpc": 47235,
    "worker-grpc": 47239,
}


def test_server_config_puts_both_stores_on_postgres_and_every_service_on_loopback() -> None:
    config = server_config(47233, PORTS, "127.0.0.1:25432", Path("/state/dynamicconfig.yaml"))
    persistence = config["persistence"]
    assert persistence["numHistoryShards"] == NUM_HISTORY_SHARDS
    stores = persistence["datastores"]
    assert {
        stores[persistence["defaultStore"]]["sql"]["databaseName"],
        stores[persistence["visibilityStore"]]["sql"]["databaseName"],
    } == {"temporal", "temporal_visibility"}
    for store in stores.values():
        assert store["sql"]["pluginName"] == "postgres12" and store["sql"]["connectAddr"] == "127.0.0.1:25432"
    assert set(config["services"]) == set(SERVICES)
    grpc = {s: config["services"][s]["rpc"]["grpcPort"] for s in SERVICES}
    assert grpc == {"frontend": 47233, "history": 47234, "matching": 47235, "worker": 47239}
    assert all(config["services"][s]["rpc"]["bindOnIP"] == "127.0.0.1" for s in SERVICES)
    assert config["clusterMetadata"]["clusterInformation"]["active"]["rpcAddress"] == "127.0.0.1:47233"
    assert config["dynamicConfigClient"]["filepath"] == "/state/dynamicconfig.yaml"
    assert "metrics" not in config["global"] and "pprof" not in config["global"]  # no extra listeners


def test_membership_ports_fit_the_schemas_smallint() -> None:
    ports = {_membership_port() for _ in range(50)}
    assert all(20000 <= p <= 32767 for p in ports), sorted(ports)


def test_nexus_callback_names_our_frontend_http_port() -> None:
    value = dynamic_config(47243)["component.nexusoperations.callback.endpoint.template"][0]["value"]
    assert value.startswith("http://127.0.0.1:47243/namespaces/{{.NamespaceName}}/")


def test_ui_config_points_at_the_frontend_on_loopback() -> None:
    config = ui_config(28233, "127.0.0.1:47233", "default")
    assert config["temporalGrpcAddress"] == "127.0.0.1:47233"
    assert (config["host"], config["port"], config["defaultNamespace"]) == ("127.0.0.1", 28233, "default")
    assert config["enableUi"] and config["disableNewsFetch"] and not config["auth"]["enabled"]


def test_dev_up_names_what_the_cluster_adds_and_nothing_on_the_dev_server() -> None:
    from devstack.stack import describe_topology, worker_names

    assert worker_names(3) == ["worker", "worker-2", "worker-3"]
    worker = {"pid": 12, "task_queue": "ferry", "metrics": "http://127.0.0.1:9465/metrics"}
    assert describe_topology({"temporal": {"pid": 1}, "worker": {**worker, "pid": 11}}) == ""
    lines = describe_topology(
        {
            "postgresql": {"address": "127.0.0.1:5432", "data": "/s/postgresql/data", "pid": 2},
            "temporal": {"pid": 3, "version": "v1.32.0"},
            "temporal-ui": {"url": "http://127.0.0.1:8233", "version": "v2.54.1", "pid": 4},
            "worker": {**worker, "pid": 11},
            "worker-2": worker,
        }
    ).splitlines()
    assert lines[0].startswith("postgres  127.0.0.1:5432") and "Temporal v1.32.0" in lines[0]
    assert lines[1].startswith("ui        http://127.0.0.1:8233") and "v2.54.1" in lines[1]
    assert lines[2].startswith("worker-2  pid 12") and lines[2].endswith(":9465/metrics") and len(lines) == 3
