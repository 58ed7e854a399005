"""`ferry`: commands for CI (release), SREs (promote, approve, rollback, status, audit) and developers (dev)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cli import commands
from cli.common import CommandError, global_options, settings_from

# A command imports what it uses (`ferry --help` imports no Temporal, Kubernetes or OpenTelemetry): these
# failures are reported as one line when the module that raises them was loaded by the command that ran.
REPORTED = (
    ("devstack.procs", "StackError"),
    ("workers.client", "TemporalUnavailable"),
    ("workers.telemetry", "MetricsUnavailable"),
    ("workers.settings", "SettingsInvalid"),
)

# ----------------------------------------------------------------------------------------- dev ---


def cmd_dev_up(args: argparse.Namespace) -> int:
    from devstack.stack import Ports, up

    state = Path(args.state_dir or ".ferry")
    ports = Ports(
        temporal=args.temporal_port,
        ui=args.ui_port,
        registry=args.registry_port,
        kube=args.kube_port,
        metrics=args.metrics_port,
        receiver=args.receiver_port,
        postgres=args.postgres_port,
        prometheus=args.prometheus_port,
        traffic=args.traffic_port,
    )
    info = up(
        state, ports, worker=not args.no_worker, timeout=args.timeout, temporal=args.temporal, workers=args.workers
    )
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
    else:
        from devstack.stack import describe_topology, kubectl_server_version

        print("\n".join(filter(None, [_describe(info.to_json()), describe_topology(info.to_json())])))
        print(f"          {kubectl_server_version(Path(info.components['kube']['kubeconfig']))}  (kubectl version)")
    return 0


def _describe(components: dict[str, Any]) -> str:
    lines = []
    if "temporal" in components:
        t = components["temporal"]
        lines.append(f"temporal  {t['address']}  namespace {t['namespace']}  UI {t.get('ui_url')}")
    if "registry" in components:
        lines.append(f"registry  {components['registry']['host']}  (http, deletes enabled)")
    if "kube" in components:
        kube = components["kube"]
        lines.append(
            f"kube      {kube['server']}  kubeconfig {kube['kubeconfig']}  (etcd, kube-apiserver, "
            "kube-controller-manager; workload status simulated, no kubelet)"
        )
        lines.append(f"          worker kubeconfig {kube.get('worker_kubeconfig')}  (ferry-worker)")
    if "worker" in components:
        w = components["worker"]
        lines.append(f"worker    pid {w['pid']}  task queue {w['task_queue']}  metrics {w.get('metrics', '-')}")
    if "sops" in components:
        s = components["sops"]
        lines.append(f"sops      recipient {s['recipient']}  identities {s['identities']}  (every worker's)")
    return "\n".join(lines)


def cmd_dev_down(args: argparse.Namespace) -> int:
    from devstack.stack import down

    stopped = down(Path(args.state_dir or ".ferry"))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_dev_status(args: argparse.Namespace) -> int:
    from devstack.stack import status

    report = status(Path(args.state_dir or ".ferry"))
    if args.json:
        print(json.dumps(report, indent=2))
    elif not report:
        print("local stack: not started (`ferry dev up`)")
    else:
        for name, component in report.items():
            if name == "sops":
                print(f"{name:<9} {'up' if component['up'] else 'DOWN':<5} recipient {component.get('recipient')}")
                continue
            endpoint = component.get("address") or component.get("host") or component.get("server") or ""
            print(f"{name:<9} {'up' if component['up'] else 'DOWN':<5} {endpoint}  pid {component.get('pid')}")
    return 0 if report and all(c["up"] for c in report.values()) else 1


# -------------------------------------------------------------------------------------- worker ---


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from workers.wiring import check_clusters
    from workers.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = settings_from(args)
    check_clusters(settings)
    asyncio.run(run_worker(settings, ready_file=Path(args.ready_file) if args.ready_file else None))
    return 0


# ------------------------------------------------------------------------------------ commands ---


DEV_PORTS = (
    ("--temporal-port", 7233, None),
    ("--ui-port", 8233, None),
    ("--registry-port", 5001, None),
    ("--kube-port", 6443, None),
    ("--metrics-port", 9464, "the worker's Prometheus endpoint"),
    ("--receiver-port", 9292, "`ferry receiver` (registry push hooks)"),
    ("--prometheus-port", 9090, "Prometheus (scrapes workers, traffic)"),
    ("--traffic-port", 9478, "the simulated traffic generator's /metrics"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev", help="the local stack: Temporal dev server, OCI registry, Kubernetes control plane, worker"
    )
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    dev_up = dev_sub.add_parser("up", help="start the stack and write <state-dir>/devstack.json")
    dev_up.add_argument("--no-worker", action="store_true", help="do not start a ferry worker")
    for flag, default, help_ in DEV_PORTS:
        dev_up.add_argument(flag, type=int, default=default, help=help_)
    dev_up.add_argument("--timeout", type=float, default=60.0, help="seconds per component health check")
    dev_up.add_argument(
        "--temporal",
        choices=("dev", "cluster"),
        default="dev",
        help="dev: `temporal server start-dev` (SQLite); cluster: the Temporal server on PostgreSQL "
        "with the UI server (`make temporal-server` builds it)",
    )
    dev_up.add_argument(
        "--workers",
        type=int,
        default=None,
        help="ferry worker processes (default: 1 on dev, 2 on "
        "cluster); worker N serves metrics on --metrics-port + N - 1",
    )
    dev_up.add_argument("--postgres-port", type=int, default=5432, help="PostgreSQL's port (cluster topology)")
    dev_up.set_defaults(func=cmd_dev_up)
    dev_down = dev_sub.add_parser("down", help="stop the processes devstack.json names")
    dev_down.set_defaults(func=cmd_dev_down)
    dev_status = dev_sub.add_parser("status", help="each component up or down (exit 1 unless all up)")
    dev_status.set_defaults(func=cmd_dev_status)
    for p in (dev_up, dev_down, dev_status):
        p.add_argument("--json", action="store_true")
        global_options(p)

    worker = sub.add_parser("worker", help="run a ferry worker on task queue `ferry` until SIGTERM")
    worker.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    global_options(worker)
    worker.set_defaults(func=cmd_worker)

    commands.register(sub)
    importlib.import_module("cli.importer").register(sub)  # `ferry import flux`: its arguments live with it
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if isinstance(err, (CommandError, *_reported())):
            print(f"ferry: {err}", file=sys.stderr)
            return 1
        raise


def _reported() -> tuple[type[BaseException], ...]:
    """The loaded modules' one-line failures (an error class whose module is not loaded cannot have been raised)."""
    return tuple(getattr(sys.modules[module], name) for module, name in REPORTED if module in sys.modules)


def entrypoint() -> None:
    """The console script. NB: short-lived Temporal client processes can abort during interpreter
    finalization when the SDK's Rust runtime threads outlive the event loop (temporalio/sdk-python#300);
    once the command has finished and output is flushed, skip finalization."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entrypoint()
