"""PostgreSQL for the cluster topology: Debian's PostgreSQL 15 (initdb, postgres), its data under the state dir.

PostgreSQL refuses to run as root. Run as root (containers, CI), the server starts inside a user namespace
(`unshare --user --map-user`) that maps root to an unprivileged id: postgres sees a non-root owner of a data
directory it owns, while the kernel still checks every file access as the real root. So the data stays where
the state dir is (even under a 0700 directory the `postgres` user could not enter) and no chown is needed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.procs import StackError, pid_alive, spawn, stop_pid, wait_healthy

INSTALL_HINT = (
    "install PostgreSQL >= 12 (`sudo apt-get install postgresql`; the server binaries are in "
    "/usr/lib/postgresql/<version>/bin) or put its initdb and postgres on PATH"
)
SUPERUSER = "temporal"  # initdb's superuser, the role Temporal connects as (trust auth, 127.0.0.1 only)
# One Temporal server process runs four services, each with its own pools (up to 20 + 10 connections per
# service against the two databases); the default of 100 leaves no room for the schema tool and a restart.
MAX_CONNECTIONS = 200


def postgres_bin_dir() -> Path:
    """The directory holding Debian's server binaries (initdb, postgres, pg_isready)."""
    for candidate in (shutil.which("postgres"), shutil.which("initdb")):
        if candidate:
            return Path(os.path.realpath(candidate)).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    raise StackError(f"postgresql: the postgres server binary is missing; {INSTALL_HINT}")


def _as_unprivileged() -> list[str]:
    """argv prefix that runs a command as a non-root user id when we are root (see the module docstring)."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        raise StackError(
            "postgresql: running as root needs util-linux's `unshare` (PostgreSQL refuses root); "
            "install util-linux or run `ferry dev up` as an ordinary user"
        )
    try:
        entry = pwd.getpwnam("postgres")
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        uid = gid = 65534
    return [unshare, "--user", f"--map-user={uid}", f"--map-group={gid}"]


@dataclass
class Postgres:
    """One PostgreSQL server rooted at `root` (data/, the Unix socket, postgresql.log)."""

    root: Path
    port: int
    throwaway: bool = False  # a test session's: dies with the process that started it
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgresql.log"

    def init(self) -> None:
        """initdb once: a later `ferry dev up` finds the data directory and keeps it."""
        if (self.data / "PG_VERSION").is_file():
            return
        bindir = postgres_bin_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.data.exists():  # a half-made data dir (initdb interrupted): initdb wants an empty one
            shutil.rmtree(self.data)
        result = subprocess.run(
            [
                *_as_unprivileged(),
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["(no output)"]
            raise StackError(f"postgresql: initdb failed: {lines[-1][:300]}")

    def argv(self) -> list[str]:
        return [
            *_as_unprivileged(),
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"max_connections={MAX_CONNECTIONS}",
            "-c",
            "log_min_messages=warning",
        ]

    def start(self, timeout: float = 30.0) -> None:
        self.init()
        self._forget_dead_postmaster()
        self.proc = spawn(self.argv(), self.log_file, die_with_parent=self.throwaway)
        wait_healthy("postgresql", self.proc, self.ready, timeout, self.log_file)

    def _forget_dead_postmaster(self) -> None:
        """A server killed with SIGKILL leaves postmaster.pid behind. Postgres ignores it when that pid is dead,
        but refuses to start ("lock file already exists") when the pid was recycled by another process, so a
        pid file whose process is not a postgres on this data directory is removed."""
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid_alive(pid) else b""
            if str(self.data).encode() not in cmdline:
                pidfile.unlink()

    def ready(self) -> bool:
        """pg_isready: accepting connections (not merely listening while it replays its WAL)."""
        result = subprocess.run(
            [
                str(postgres_bin_dir() / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-t",
                "1",
            ],
            capture_output=True,
            timeout=5,
        )
        return result.returncode == 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_postgres(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            self.proc = None


def stop_postgres(pid: int, timeout: float = 20.0) -> None:
    """Fast shutdown (SIGINT: roll back open transactions, disconnect clients, checkpoint). SIGTERM is
    "smart" shutdown, which waits for every client to disconnect, and the Temporal server never does."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    stop_pid(pid)
