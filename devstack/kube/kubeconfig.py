"""A kubeconfig for the emulator: what the official client, kubectl and ferry's workers read."""

from __future__ import annotations

from pathlib import Path

import yaml

CONTEXT = "ferry-dev"


def write_kubeconfig(path: Path, server: str, context: str = CONTEXT) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": "emulator-accepts-any-token"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
