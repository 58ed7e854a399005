"""The catalogue of served resources: built-in kinds, plus whatever CRDs register."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False
    crd: bool = False  # custom resources refuse strategic merge patch, like a real server
    verbs: tuple[str, ...] = tuple(ALL_VERBS)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


def _r(group: str, version: str, kind: str, plural: str, namespaced: bool, *short: str,
       status: bool = False) -> ResourceType:
    return ResourceType(group, version, kind, plural, namespaced, tuple(short), has_status=status)


BUILTINS: list[ResourceType] = [
    _r("", "v1", "Namespace", "namespaces", False, "ns", status=True),
    _r("", "v1", "ConfigMap", "configmaps", True, "cm"),
    _r("", "v1", "Secret", "secrets", True),
    _r("", "v1", "Service", "services", True, "svc", status=True),
    _r("", "v1", "ServiceAccount", "serviceaccounts", True, "sa"),
    _r("", "v1", "Pod", "pods", True, "po", status=True),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, "pvc", status=True),
    _r("apps", "v1", "Deployment", "deployments", True, "deploy", status=True),
    _r("apps", "v1", "StatefulSet", "statefulsets", True, "sts", status=True),
    _r("apps", "v1", "DaemonSet", "daemonsets", True, "ds", status=True),
    _r("apps", "v1", "ReplicaSet", "replicasets", True, "rs", status=True),
    _r("batch", "v1", "Job", "jobs", True, status=True),
    _r("batch", "v1", "CronJob", "cronjobs", True, "cj", status=True),
    _r("networking.k8s.io", "v1", "Ingress", "ingresses", True, "ing", status=True),
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, "netpol"),
    _r("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, "hpa", status=True),
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, "crd", "crds",
       status=True),
]


@dataclass
class Catalogue:
    """Resource types by (group, version, plural); CRDs add and remove entries at run time."""

    types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> Catalogue:
        cat = cls()
        for rt in BUILTINS:
            cat.add(rt)
        return cat

    def add(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt

    def remove_group_plural(self, group: str, plural: str) -> None:
        for key in [k for k in self.types if k[0] == group and k[2] == plural]:
            del self.types[key]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        return next((rt for rt in self.types.values()
                     if rt.group == group and rt.version == version and rt.kind == kind), None)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for group, version, _ in self.types:
            if group and version not in out.setdefault(group, []):
                out[group].append(version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self.types.items() if g == group and v == version]


def crd_resource_types(crd: dict[str, object]) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    assert isinstance(spec, dict)
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        out.append(ResourceType(
            group=spec["group"], version=version["name"], kind=names["kind"], plural=names["plural"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            has_status="status" in (version.get("subresources") or {}), crd=True,
        ))
    return out
