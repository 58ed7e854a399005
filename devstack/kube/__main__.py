"""`python -m devstack.kube --port P [--state FILE] [--rollout-delay S]`: serve until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from devstack.kube.server import KubeEmulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.kube")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, default=None, help="persist objects to this JSON file")
    parser.add_argument("--rollout-delay", type=float, default=0.5, help="simulated rollout time, seconds")
    parser.add_argument("--bootstrap-namespaces", default="default,kube-system,kube-public,ferry-system")
    args = parser.parse_args()
    emulator = KubeEmulator(args.port, args.state, args.rollout_delay)
    bootstrap(emulator, args.bootstrap_namespaces.split(","))
    emulator.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"kube emulator serving on {emulator.url}", flush=True)
    stop.wait()
    emulator.close()


def bootstrap(emulator: KubeEmulator, namespaces: list[str]) -> None:
    """The namespaces every cluster starts with."""
    from devstack.kube.store import ApiError

    rt = emulator.store.catalogue.lookup("", "v1", "namespaces")
    assert rt is not None
    for name in filter(None, namespaces):
        try:
            emulator.store.create(rt, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                                  "kube-apiserver")
        except ApiError as err:
            if err.reason != "AlreadyExists":
                raise


if __name__ == "__main__":
    main()
