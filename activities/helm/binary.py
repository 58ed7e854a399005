"""Where the worker finds helm: FERRY_HELM, else the binary `make helm` builds into the user cache."""

from __future__ import annotations

import os
from pathlib import Path

HELM_VERSION = "v4.3.2"  # = the Makefile's HELM_VERSION; .Capabilities.HelmVersion of every render


class HelmMissing(RuntimeError):
    """The helm binary is not where the worker looks: a setup problem of the worker, not of the chart."""


def helm_cache_path() -> Path:
    """`make helm`'s output: ``$XDG_CACHE_HOME`` (else ``~/.cache``) ``/ferry/tools/helm/<version>/helm``."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferry" / "tools" / "helm" / HELM_VERSION / "helm"


def helm_path() -> Path:
    """The helm binary to run: ``FERRY_HELM`` when set, else the cache path. HelmMissing when it is not an
    executable file, naming the path and the fix."""
    configured = os.environ.get("FERRY_HELM")
    path = Path(configured) if configured else helm_cache_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = f"FERRY_HELM={configured}" if configured else str(path)
        raise HelmMissing(
            f"helm {HELM_VERSION} is missing ({where} is not an executable file): run `make helm` "
            "(make setup builds it), or point FERRY_HELM at a helm v4 binary"
        )
    return path
