"""The worker's clusters file (FERRY_CLUSTERS): which clusters exist, by name, and how the worker may reach them.

Environment specs name a cluster; only this file, written by the worker's operator, names kubeconfig paths.
A kubeconfig's `exec` and `auth-provider` plugins run programs on the worker when the kubernetes client loads
it, so they are refused unless the cluster's entry allows them, checked before the client ever sees the file.

```yaml
clusters:
  default: {kubeconfig: /etc/ferry/local.kubeconfig}
  prod-eu:
    kubeconfig: /etc/ferry/prod-eu.kubeconfig
    context: prod-eu
    allow-auth: [exec]
    sops-age-keys: /etc/ferry/age/prod-eu    # optional: the age identities for SOPS files here
    prometheus: https://prometheus.prod-eu.example:9090   # optional: the Prometheus rollout analysis asks
    environments:             # optional: only these environments, only there, whatever their specs say
      production: {namespaces: [shop, shop-jobs], cluster-kinds: [CustomResourceDefinition]}
```
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ferry.settings import PrometheusUrl
from ferry.spec import CLUSTER_NAME, DEFAULT_CLUSTER

AuthPlugin = Literal["exec", "auth-provider"]


class TenantBounds(BaseModel):
    """Where one environment may write on a cluster, as the worker's operator (not the spec) says."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    namespaces: list[str] = Field(default_factory=list)
    cluster_kinds: list[str] = Field(default_factory=list, alias="cluster-kinds")
    service_account: str | None = Field(
        None,
        min_length=1,
        alias="service-account",
        description=(
            "when set, this environment's applies and prunes must run as this service account of its namespace: a spec "
            "that drops or changes `service-account` is refused"
        ),
    )
    sops_age_keys: str | None = Field(
        None,
        min_length=1,
        alias="sops-age-keys",
        description="the age identities (a file, or a directory of files) this environment's SOPS files are "
        "decrypted with on this cluster; default: the cluster's, else the worker's FERRY_SOPS_AGE_KEYS",
    )


class ClusterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kubeconfig: str | None = Field(None, description="path on the worker; default: $KUBECONFIG or ~/.kube/config")
    context: str | None = Field(None, min_length=1, description="default: the kubeconfig's current-context")
    allow_auth: list[AuthPlugin] = Field(
        default_factory=list,
        alias="allow-auth",
        description="kubeconfig plugins that may run for this cluster (default: none)",
    )
    sops_age_keys: str | None = Field(
        None,
        min_length=1,
        alias="sops-age-keys",
        description="the age identities (a file or a directory) for SOPS files of environments on this cluster; "
        "default: the worker's FERRY_SOPS_AGE_KEYS",
    )
    prometheus: PrometheusUrl | None = Field(
        None,
        description="the Prometheus (an http(s) URL) rollout analysis queries for environments on this cluster; "
        "default: the worker's FERRY_PROMETHEUS_URL",
    )
    environments: dict[str, TenantBounds] | None = Field(
        None,
        description="optional: the only environments that "
        "may use this cluster, each within these bounds (a spec "
        "that reaches further is refused)",
    )


class ClustersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clusters: dict[str, ClusterEntry] = Field(default_factory=dict)

    @field_validator("clusters")
    @classmethod
    def _names(cls, value: dict[str, ClusterEntry]) -> dict[str, ClusterEntry]:
        bad = [n for n in value if not re.match(CLUSTER_NAME, n) or len(n) > 63]
        if bad:
            raise ValueError(f"cluster name {bad[0]!r} must be a lowercase DNS label")
        return value

    @classmethod
    def implicit(cls, kubeconfig: str | None) -> ClustersFile:
        """No clusters file: one cluster, `default`, the worker's FERRY_KUBECONFIG (or the client's default
        kubeconfig), plugins refused."""
        return cls(clusters={DEFAULT_CLUSTER: ClusterEntry(kubeconfig=kubeconfig)})

    def by_kubeconfig(self, path: str, context: str | None) -> str | None:
        """Legacy states (before clusters by name) carry a kubeconfig path: the entry of this file with that path
        (and context), if the operator listed one."""
        for name, entry in self.clusters.items():
            if entry.kubeconfig == path and (context is None or entry.context in (None, context)):
                return name
        return None


def auth_plugin(kubeconfig: dict[str, Any], context: str | None) -> tuple[AuthPlugin, str] | None:
    """The plugin the kubernetes client would run to authenticate in `context` (default: current-context):
    ("exec", its command line) or ("auth-provider", its name and cmd-path), or None."""
    name = context or kubeconfig.get("current-context")
    ctx = next((c.get("context") or {} for c in kubeconfig.get("contexts") or [] if c.get("name") == name), None)
    if ctx is None:
        return None  # the client reports the missing context itself
    user = next((u.get("user") or {} for u in kubeconfig.get("users") or [] if u.get("name") == ctx.get("user")), {})
    if user.get("exec"):
        exec_ = user["exec"] or {}
        command = " ".join(str(p) for p in [exec_.get("command", "?"), *(exec_.get("args") or [])])
        return "exec", command[:300]
    if user.get("auth-provider"):
        provider = user["auth-provider"] or {}
        cmd = (provider.get("config") or {}).get("cmd-path")
        return "auth-provider", f"{provider.get('name', '?')}{f' (cmd-path {cmd})' if cmd else ''}"[:300]
    return None
