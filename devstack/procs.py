"""Child-process plumbing shared by the stack's components."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from activities.tools import script_path

__all__ = ["StackError", "free_port", "script_path", "spawn", "stop_pid", "wait_healthy"]


class StackError(RuntimeError):
    """One line naming the component, what went wrong, and the fix."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    return port_taken(port, host)


def spawn(
    argv: Sequence[str], log_file: Path, env: dict[str, str] | None = None, die_with_parent: bool = False
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so a Ctrl-C in the parent's terminal does not reach it) with
    stdout/stderr to a log file. `die_with_parent`: the child gets SIGTERM when this process dies, even by
    SIGKILL (Linux PR_SET_PDEATHSIG) — for throwaway clusters of a test session, never for `ferry dev up`'s."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


_LIBC = ctypes.CDLL(None, use_errno=True)  # NB: loaded here, not between fork and exec


def _die_with_parent() -> None:
    _LIBC.prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def wait_healthy(
    component: str,
    proc: subprocess.Popen[bytes] | None,
    check: Callable[[], bool],
    timeout: float,
    log_file: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log_file)
            raise StackError(f"{component}: exited with code {proc.returncode} during start-up{tail}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise StackError(f"{component}: not healthy after {timeout:.0f}s{_tail(log_file)}")


def _tail(log_file: Path | None) -> str:
    if log_file is None or not log_file.is_file():
        return ""
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    return f" (last log line: {lines[-1][:300]}; full log: {log_file})" if lines else f" (log: {log_file})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
