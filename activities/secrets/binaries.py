"""Where the worker finds sops and age-keygen: FERRY_SOPS / FERRY_AGE_KEYGEN, else what `make sops` builds into the
user cache (``~/.cache/ferry/tools/{sops,age}/<version>/``)."""

from __future__ import annotations

import os
from pathlib import Path

SOPS_VERSION = "v3.13.3"  # = the Makefile's SOPS_VERSION
AGE_VERSION = "v1.3.2"  # = the Makefile's AGE_VERSION
SOPS_ENV, AGE_KEYGEN_ENV = "FERRY_SOPS", "FERRY_AGE_KEYGEN"


class ToolMissing(RuntimeError):
    """sops or age-keygen is not where the worker looks: a setup problem of the worker, not of the release."""


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferry" / "tools"


def sops_cache_path() -> Path:
    return _cache() / "sops" / SOPS_VERSION / "sops"


def age_keygen_cache_path() -> Path:
    return _cache() / "age" / AGE_VERSION / "age-keygen"


def _tool(variable: str, default: Path, name: str, version: str) -> Path:
    configured = os.environ.get(variable)
    path = Path(configured) if configured else default
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = f"{variable}={configured}" if configured else str(path)
        raise ToolMissing(
            f"{name} {version} is missing ({where} is not an executable file): run `make sops` "
            f"(make setup builds it), or point {variable} at one"
        )
    return path


def sops_path() -> Path:
    return _tool(SOPS_ENV, sops_cache_path(), "sops", SOPS_VERSION)


def age_keygen_path() -> Path:
    return _tool(AGE_KEYGEN_ENV, age_keygen_cache_path(), "age-keygen", AGE_VERSION)
