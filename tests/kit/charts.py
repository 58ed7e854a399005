"""Helm chart fixtures: small valid charts written to a directory, for the render and OCI tests.

``write_chart(tmp_path)`` writes ``tmp_path/shop/`` (Chart.yaml apiVersion v2, values.yaml, a ConfigMap and a
Deployment that read values, ``.Release`` and ``.Capabilities``) and returns the chart directory. Every part can be
replaced or extended: ``templates`` (file name -> text, merged over the defaults; ``None`` as a value removes a
default), ``values``, ``crds`` (file name -> text under crds/), ``schema`` (values.schema.json), ``chart`` (extra
Chart.yaml fields, e.g. ``dependencies``), ``files`` (any other relative path -> text). ``HOOK_JOB`` and ``CRD``
are ready-made documents.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from activities.helm.binary import helm_path
from activities.helm.render import helm_env

HELM_VERSION = "v4.3.2"

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
  namespace: {{ .Release.Namespace }}
  labels:
    app.kubernetes.io/name: {{ .Chart.Name }}
data:
  greeting: {{ .Values.greeting | quote }}
  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
  isUpgrade: {{ .Release.IsUpgrade | quote }}
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: app
          image: {{ .Values.image | quote }}
"""

HOOK_JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  namespace: {{ .Release.Namespace }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-5"
    helm.sh/hook-delete-policy: hook-succeeded
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: busybox:1.36
"""

TEST_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations:
    helm.sh/hook: test
spec:
  restartPolicy: Never
  containers:
    - name: test
      image: busybox:1.36
"""

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""

DEFAULT_VALUES: dict[str, Any] = {"replicaCount": 1, "greeting": "hello", "image": "nginx:1.27"}


def write_chart(
    parent: Path,
    name: str = "shop",
    version: str = "1.4.2",
    *,
    templates: dict[str, str | None] | None = None,
    values: dict[str, Any] | str | None = None,
    crds: dict[str, str] | None = None,
    schema: dict[str, Any] | str | None = None,
    chart: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """A valid chart at ``parent/name``; returns that directory."""
    root = parent / name
    (root / "templates").mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "apiVersion": "v2",
        "name": name,
        "version": version,
        "type": "application",
        "appVersion": "1.0.0",
        "description": f"{name}: a test chart",
    }
    meta.update(chart or {})
    (root / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    chosen = values if values is not None else DEFAULT_VALUES
    (root / "values.yaml").write_text(chosen if isinstance(chosen, str) else yaml.safe_dump(chosen, sort_keys=False))
    merged: dict[str, str | None] = {"configmap.yaml": CONFIGMAP, "deployment.yaml": DEPLOYMENT}
    merged.update(templates or {})
    for file, text in merged.items():
        if text is not None:
            (root / "templates" / file).write_text(text)
    for file, text in (crds or {}).items():
        (root / "crds").mkdir(exist_ok=True)
        (root / "crds" / file).write_text(text)
    if schema is not None:
        (root / "values.schema.json").write_text(schema if isinstance(schema, str) else json.dumps(schema))
    for rel, text in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def helm_binary_path() -> Path:
    """Where `make helm` caches the binary (FERRY_HELM is not consulted: the tests check the cached build)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferry" / "tools" / "helm" / HELM_VERSION / "helm"


def helm(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real helm with a private HOME and HELM_* dirs (nothing read from or written to the user's home); no
    proxy, so it reaches the local registry."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in helm_env(home).items() if "proxy" not in k.lower()}
    out = subprocess.run(
        [str(helm_path()), *args], env=env, cwd=cwd or home, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"
    return out


def helm_push(tmp: Path, base: str, version: str, **chart: Any) -> Path:
    """`helm package` + `helm push X.tgz oci://BASE --plain-http` of a test chart; returns its source directory."""
    source = write_chart(tmp / f"src-{version}", version=version, **chart)
    out = tmp / f"pkg-{version}"
    helm(tmp / "home", "package", str(source), "-d", str(out))
    archive = next(out.glob("*.tgz"))
    helm(tmp / "home", "push", str(archive), f"oci://{base}", "--plain-http")
    return source
