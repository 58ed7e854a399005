"""Kubeconfigs for the local control plane: what the official client, kubectl and ferry's workers read."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from devstack.kube.pki import Client, Pki

CONTEXT = "ferry-dev"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Pki, client: Client, context: str = CONTEXT) -> Path:
    """A self-contained kubeconfig (certificates embedded) for `client` at `server`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert)}}],
        "users": [
            {
                "name": client.name,
                "user": {
                    "client-certificate-data": _b64(pki.client_cert(client)),
                    "client-key-data": _b64(pki.client_key(client)),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": client.name, "namespace": "default"}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
