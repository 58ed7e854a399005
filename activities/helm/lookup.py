"""`lookup` opted in (`helm.lookup: true`): `helm template --dry-run=server` reading the target cluster, read-only, as
the environment's service account.

Helm v4.3.2 with ``--dry-run=server`` reads live discovery for ``.Capabilities`` and runs the real ``lookup``
(pkg/action/install.go:306-311), then returns before any write ("Bail out here if it is a dry run",
install.go:433-436); ``--take-ownership`` skips the check that would refuse objects Ferry already owns
(install.go:422-431). The worker's credentials go to helm in a kubeconfig of 0600 in the render's private
temporary directory (removed with it), naming only the cluster's own API server (NO_PROXY is that host, every
other host goes to the dead proxy), and every request is impersonated as ``system:serviceaccount:NS:SA``
(``--kube-as-user``): a template reads what the environment may read, never what the worker may. Only credentials
in files or a bearer token are lent; a cluster whose client needs an exec plugin is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from activities.manifests import BundleError


@dataclass(frozen=True)
class ClusterAccess:
    """What helm needs to read one cluster as one identity; never logged, never in a payload."""

    server: str
    as_user: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    insecure: bool = False

    def kubeconfig(self) -> dict[str, object]:
        cluster: dict[str, object] = {"server": self.server}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        if self.insecure:
            cluster["insecure-skip-tls-verify"] = True
        user: dict[str, object] = {}
        if self.cert_file and self.key_file:
            user.update({"client-certificate": self.cert_file, "client-key": self.key_file})
        if self.token:
            user["token"] = self.token
        if not user:
            raise BundleError("helm.lookup: the cluster's credentials are not a certificate or a token: refused")
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "target", "cluster": cluster}],
            "users": [{"name": "worker", "user": user}],
            "contexts": [{"name": "target", "context": {"cluster": "target", "user": "worker"}}],
            "current-context": "target",
        }

    def prepare(self, home: Path, env: dict[str, str]) -> list[str]:
        """Write the kubeconfig into ``home`` (0600), point ``env`` at it with the API server's host the only one
        reached directly; the extra argv."""
        path = home / "lookup.kubeconfig"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.kubeconfig(), out)
        host = urlsplit(self.server).hostname or ""
        env.update({"KUBECONFIG": str(path), "NO_PROXY": host, "no_proxy": host})
        return ["--dry-run=server", "--take-ownership", f"--kube-as-user={self.as_user}"]
