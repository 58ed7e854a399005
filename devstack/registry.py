"""The CNCF distribution registry (Debian's docker-registry) with a config we write ourselves.

Debian's shipped /etc/docker/registry/config.yml listens on every interface and points htpasswd at a
directory, so every request is 401; it is never used.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devstack.procs import StackError, spawn, wait_healthy

INSTALL_HINT = "install Debian's docker-registry package (`sudo apt-get install docker-registry`, or `make setup`)"


def registry_binary() -> str:
    path = shutil.which("docker-registry")
    if path is None:
        raise StackError(f"registry: the docker-registry binary is missing; {INSTALL_HINT}")
    return path


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry — the only hash distribution accepts."""
    import bcrypt  # dev dependency: only tests and the auth demo write htpasswd files

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


@dataclass
class Registry:
    port: int
    root: Path  # storage + config + logs live under here
    htpasswd: Path | None = None
    readonly: bool = False
    notify_url: str | None = None  # `ferry receiver`'s /hooks/registry: pushes are announced to it
    notify_token: str | None = None  # sent as `Authorization: Bearer TOKEN` (the receiver's FERRY_RECEIVER_TOKEN)
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    throwaway: bool = False  # a test session's: dies with the process that started it
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.root / "config.yml"

    @property
    def log_file(self) -> Path:
        return self.root / "registry.log"

    def config(self) -> dict[str, object]:
        storage: dict[str, object] = {
            "filesystem": {"rootdirectory": str(self.root / "data")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        }
        if self.readonly:
            storage["maintenance"] = {"readonly": {"enabled": True}}
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": {"addr": self.host, "secret": self.secret},
        }
        if self.htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "ferry", "path": str(self.htpasswd)}}
        if self.notify_url:
            endpoint: dict[str, object] = {
                "name": "ferry-receiver",
                "url": self.notify_url,
                "timeout": "2s",
                "threshold": 3,
                "backoff": "1s",
                # pulls (every reconcile's fetch) would only be noise; pushes of layers are skipped by the receiver
                "ignore": {"actions": ["pull"]},
            }
            if self.notify_token:
                endpoint["headers"] = {"Authorization": [f"Bearer {self.notify_token}"]}
            config["notifications"] = {"endpoints": [endpoint]}
        return config

    def start(self, timeout: float = 20.0) -> None:
        binary = registry_binary()
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.proc = spawn([binary, "serve", str(self.config_file)], self.log_file, die_with_parent=self.throwaway)
        wait_healthy("registry", self.proc, self.answers, timeout, self.log_file)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as err:
            return err.code == 401  # up, and asking for credentials
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
