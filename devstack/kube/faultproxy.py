"""A fault-injecting TCP proxy in front of the real API server, for outage tests.

TLS passes through untouched, so clients keep their own identity (client certificate -> user, RBAC) and the
server's certificate (SAN 127.0.0.1) still matches. Faults on demand: when injected, every live connection is
cut, and the next `count` connections are reset at once ("error": the client sees the connection drop) or
accepted and never answered ("timeout": the client's read times out; held for `hang_seconds`).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.hang_seconds = 30.0
        self._fail_next = 0
        self._fail_mode = "error"
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._cut_all()

    def inject_faults(self, count: int, mode: str = "error") -> None:
        """The next `count` connections fail with `mode` ("error" or "timeout"); live ones are cut now."""
        if mode not in ("error", "timeout"):
            raise ValueError(f"fault mode {mode!r}: 'error' or 'timeout'")
        with self._lock:
            self._fail_next, self._fail_mode = count, mode
        if count > 0:
            self._cut_all()

    def _take_fault(self) -> str | None:
        with self._lock:
            if self._fail_next <= 0:
                return None
            self._fail_next -= 1
            return self._fail_mode

    def _cut_all(self) -> None:
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            _reset(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            fault = self._take_fault()
            if fault == "error":
                _reset(client)
            elif fault == "timeout":
                threading.Thread(target=self._hang, args=(client,), daemon=True).start()
            else:
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _hang(self, client: socket.socket) -> None:
        deadline = time.monotonic() + self.hang_seconds
        while time.monotonic() < deadline and not self._closed.is_set():
            time.sleep(0.05)
        _reset(client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)  # the API server itself is down: the client sees the connection drop
            return
        upstream.settimeout(None)
        with self._lock:
            self._live.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.discard(src)
                self._live.discard(dst)
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), as a dropped connection looks to the client."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a pump thread blocked in recv on it
    with contextlib.suppress(OSError):
        sock.close()
