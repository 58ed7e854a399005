"""`helm template` of a chart directory, hermetic and bounded (HELM-PLAN §2; helm v4.3.2).

Contract of ``render_chart``:
- Before helm runs, the chart is checked (``check_chart``): the bundles' file bounds (activities.manifests.scan: no
  link out of the chart, no device, 5 MiB per file, 10,000 files), every Chart.yaml dependency vendored under
  ``charts/`` (a remote one is refused with the ``helm dependency build`` fix: rendering has no network), and no
  values.schema.json of the chart or of a vendored subchart (directory or archive) with a ``$ref``/``$id`` that
  would load a file or a URL (ferry.helm_render.schema_refs_refused). Values files must be mappings inside the
  release root.
- helm runs with an environment built from nothing: a private temporary HOME and HELM_{CACHE,CONFIG,DATA}_HOME,
  HELM_NO_PLUGINS=1 and an empty HELM_PLUGINS (no plugin, so no post-renderer or getter, is ever loaded), absent
  registry and repository configs, an empty DOCKER_CONFIG (no credential store or helper), KUBECONFIG=/dev/null (so
  ``lookup`` has no cluster and returns an empty map), dead HTTP(S) proxies. The argv names only an absolute chart
  directory (never a repository or OCI reference) and absolute values files; the inline values go on stdin as JSON
  (``-f -``, last, so they merge last). ``--dry-run`` stays client (template's default); ``--no-hooks`` is never
  passed (Ferry runs the hooks), ``--skip-tests`` always is.
- Bounds: HELM_TIMEOUT seconds (the process group is killed), RLIMIT_AS of HELM_MAX_ADDRESS_SPACE (a looping
  template buffers everything before it prints), stdout read in 1 MiB chunks and killed past MAX_RENDER_BYTES, then
  the documents' and objects' bounds of ferry.helm_render.
- A failed render raises BundleError with Helm's own ``Error:`` line (``execution error at (shop/templates/x.yaml:3:4):
  …`` for ``fail`` and ``required``): the reconcile path classifies BundleError as RENDER_FAILED (non-retryable).
  HelmMissing (binary.py) when the worker has no helm. Idempotent and side-effect free (a temporary directory).
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

from activities.helm.binary import helm_path
from activities.helm.lookup import ClusterAccess
from activities.manifests import (
    MAX_BUNDLE_BYTES,
    MAX_MEMBERS,
    BundleError,
    _read_manifest,
    check_aliases,
    parse_documents,
    run_bounded,
    scan,
)
from ferry.helm_render import (
    MAX_RENDER_BYTES,
    HelmRenderInput,
    Rendered,
    RenderRefused,
    helm_error,
    redacted_error,
    schema_refs_refused,
    split_documents,
    split_rendered,
)
from ferry.release import MAX_BUNDLE_FILE_BYTES

HELM_TIMEOUT = 60  # seconds for one render: a 1,000-object chart renders in well under a second
# Go's runtime needs ~1 GiB of address space to start (tried with the real helm: 512 MiB fails at start with "failed
# to reserve page summary memory", 1 GiB renders); 2 GiB leaves a real chart room and stops a runaway template.
HELM_MAX_ADDRESS_SPACE = 2 * 1024 * 1024 * 1024
MAX_ARCHIVE_DEPTH = 4  # charts/a.tgz holding charts/b.tgz …: deeper is not a chart anyone vendors
_DEAD_PROXY = "http://127.0.0.1:9"
_DEPENDENCY_FIX = (
    "remote dependencies are refused (rendering has no network): run `helm dependency build` in CI "
    "and release the chart with its charts/ directory"
)


def helm_env(home: Path) -> dict[str, str]:
    """helm's whole environment: nothing of the worker's (no HELM_*, no credentials, no proxy settings)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "HELM_PLUGINS": "",
        "HELM_NO_PLUGINS": "1",
        "HELM_REGISTRY_CONFIG": str(home / "absent" / "registry.json"),
        "HELM_REPOSITORY_CONFIG": str(home / "absent" / "repositories.yaml"),
        "HELM_REPOSITORY_CACHE": str(home / "absent" / "repository"),
        "DOCKER_CONFIG": str(home / "docker"),
        "KUBECONFIG": "/dev/null",
        "HTTP_PROXY": _DEAD_PROXY,
        "HTTPS_PROXY": _DEAD_PROXY,
        "NO_PROXY": "",
        "http_proxy": _DEAD_PROXY,
        "https_proxy": _DEAD_PROXY,
        "no_proxy": "",
    }


def helm_argv(helm: Path, chart_dir: Path, input: HelmRenderInput, values_files: list[Path]) -> list[str]:
    """`helm template` as the plan has it; every value in ``--flag=value`` form, so none can read as a flag."""
    argv = [
        str(helm),
        "template",
        input.release_name,
        str(chart_dir.resolve()),
        f"--namespace={input.namespace}",
        f"--kube-version={input.kube_version}",
    ]
    argv += [f"--api-versions={gv}" for gv in sorted(set(input.api_versions))]
    argv += ["--include-crds", "--skip-tests"]
    if input.is_upgrade:
        argv.append("--is-upgrade")
    for path in values_files:
        argv.append(f"--values={path}")
    return [*argv, "--values=-"]


def _yaml_mapping(path: Path, where: str) -> dict[str, Any] | None:
    text = _read_manifest(path, where)
    check_aliases(text, where)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BundleError(f"{where}: YAML does not parse: {getattr(err, 'problem', err)}") from None
    if doc is not None and not isinstance(doc, dict):
        raise BundleError(f"{where}: is a {type(doc).__name__}, not a mapping")
    return doc


def _check_schema(data: bytes, where: str) -> None:
    try:
        schema = json.loads(data)
    except ValueError as err:
        raise BundleError(f"{where}: not JSON: {err}") from None
    reason = schema_refs_refused(schema, where)
    if reason:
        raise BundleError(reason)


def _archive_chart(data: bytes, where: str, depth: int) -> str:
    """Check a vendored chart archive (charts/x.tgz) like a directory: its schemas and the archives inside it.
    Returns its chart name (from its Chart.yaml)."""
    if depth > MAX_ARCHIVE_DEPTH:
        raise BundleError(f"{where}: chart archives nested more than {MAX_ARCHIVE_DEPTH} deep: refused")
    name, total = "", 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for count, member in enumerate(tar):
                total += member.size
                if count > MAX_MEMBERS or total > MAX_BUNDLE_BYTES:
                    raise BundleError(f"{where}: more than {MAX_MEMBERS} files or {MAX_BUNDLE_BYTES} bytes: refused")
                parts = member.name.split("/")
                wanted = parts[-1] in ("values.schema.json", "Chart.yaml") or member.name.endswith(".tgz")
                if not member.isfile() or not wanted:
                    continue
                if member.size > MAX_BUNDLE_FILE_BYTES:  # NB: helm itself no longer bounds a file: never skip one
                    raise BundleError(
                        f"{where}:{member.name}: over the {MAX_BUNDLE_FILE_BYTES}-byte limit per file: refused"
                    )
                handle = tar.extractfile(member)
                body = handle.read() if handle is not None else b""
                at = f"{where}:{member.name}"
                if parts[-1] == "values.schema.json":
                    _check_schema(body, at)
                elif member.name.endswith(".tgz"):
                    _archive_chart(body, at, depth + 1)
                elif len(parts) == 2:
                    meta = yaml.safe_load(body.decode("utf-8", errors="replace"))
                    name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
    except (tarfile.TarError, OSError, EOFError, yaml.YAMLError) as err:
        raise BundleError(f"{where}: not a readable chart archive: {err}") from None
    return name


def _chart_meta(chart_dir: Path, where: str) -> dict[str, Any]:
    chart_yaml = chart_dir / "Chart.yaml"
    if not chart_yaml.is_file():
        raise BundleError(f"{where}: no Chart.yaml: not a Helm chart directory")
    meta = _yaml_mapping(chart_yaml, f"{where}/Chart.yaml")
    if not meta:
        raise BundleError(f"{where}/Chart.yaml: empty")
    return meta


def _check_chart_dir(chart_dir: Path, where: str) -> None:
    """A chart directory and its vendored subcharts: schemas local, dependencies vendored."""
    meta = _chart_meta(chart_dir, where)
    schema = chart_dir / "values.schema.json"
    if schema.is_file():
        _check_schema(_read_manifest(schema, f"{where}/values.schema.json").encode(), f"{where}/values.schema.json")
    vendored: set[str] = set()
    charts = chart_dir / "charts"
    for sub in sorted(charts.iterdir()) if charts.is_dir() else []:
        at = f"{where}/charts/{sub.name}"
        if sub.is_dir() and (sub / "Chart.yaml").is_file():
            _check_chart_dir(sub, at)
            vendored.add(str(_chart_meta(sub, at).get("name", "")))
        elif sub.is_file() and sub.name.endswith(".tgz"):
            vendored.add(_archive_chart(sub.read_bytes(), at, 1))
    for dep in meta.get("dependencies") or []:
        if not isinstance(dep, dict):
            raise BundleError(f"{where}/Chart.yaml: a dependency is not a mapping")
        name, repo = str(dep.get("name", "")), str(dep.get("repository") or "")
        if name not in vendored:
            source = f" (repository {repo[:200]})" if repo else ""
            raise BundleError(
                f"{where}/Chart.yaml: dependency {name[:100]!r}{source} is not vendored under "
                f"charts/: {_DEPENDENCY_FIX}"
            )


def check_chart(chart_dir: Path) -> None:
    """Everything refused before helm runs (see the module's contract); BundleError naming the file."""
    if not chart_dir.is_dir():
        raise BundleError(f"{chart_dir.name}: chart directory does not exist in the artifact")
    scan(chart_dir)  # the bundles' bounds: links that stay inside, no devices, 5 MiB per file, 10,000 files
    _check_chart_dir(chart_dir, chart_dir.name)


def _values_paths(root: Path, files: list[str]) -> list[Path]:
    root = root.resolve()
    out: list[Path] = []
    for rel in files:
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise BundleError(f"values file {rel}: points outside the release")
        if not path.is_file():
            raise BundleError(f"values file {rel}: not a file in the release")
        _yaml_mapping(path, f"values file {rel}")
        out.append(path)
    return out


def parse_rendered(text: str, where: str) -> Rendered:
    """Split `helm template` output (ferry.helm_render) and parse each document with the bundles' YAML bounds."""
    try:
        pairs = [
            (doc.source, obj) for doc in split_documents(text) for obj in parse_documents(doc.text, doc.source or where)
        ]
        return split_rendered(pairs)
    except RenderRefused as err:
        raise BundleError(f"{where}: {err}") from None


def render_chart(
    chart_dir: Path, input: HelmRenderInput, root: Path | None = None, access: ClusterAccess | None = None
) -> Rendered:
    """The objects ``chart_dir`` renders to for ``input`` (values files relative to ``root``, the release root;
    default the chart directory). See the module's contract for what is refused and how. ``access``: `lookup` opted
    in, reading the cluster read-only as one identity (activities.helm.lookup)."""
    where = chart_dir.name
    check_chart(chart_dir)
    values = _values_paths(root or chart_dir, input.values_files)
    helm = helm_path()
    with tempfile.TemporaryDirectory(prefix="ferry-helm-") as tmp:
        home = Path(tmp)
        (home / "docker").mkdir()
        env, argv = helm_env(home), helm_argv(helm, chart_dir, input, values)
        if access is not None:
            argv += access.prepare(home, env)
        run = run_bounded(
            argv,
            f"{where}: helm template",
            env,
            MAX_RENDER_BYTES,
            HELM_TIMEOUT,
            stdin=json.dumps(input.values).encode(),
            max_address_space=HELM_MAX_ADDRESS_SPACE,
            cwd=home,
        )
    if run.code != 0:
        stderr = run.stderr.decode(errors="replace")
        if "runtime: out of memory" in stderr or "failed to reserve page summary memory" in stderr:
            raise BundleError(
                f"{where}: helm template ran out of memory under the {HELM_MAX_ADDRESS_SPACE >> 30} GiB "
                f"address-space bound (a template that loops or builds huge values): "
                f"{helm_error(stderr)}"
            )
        message = helm_error(stderr)
        if access is not None:
            # NB: with lookup a template can `fail` with what it read (a Secret): the record keeps where and a digest
            message = redacted_error(message)
        raise BundleError(f"{where}: helm template failed: {message}")
    try:
        text = run.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{where}: helm template output is not UTF-8") from None
    return parse_rendered(text, where)
