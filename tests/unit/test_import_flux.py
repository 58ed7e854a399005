"""`ferry import flux`: Flux OCIRepository + Kustomization objects -> environment specs, and what has no
equivalent listed. The example environments round-trip through their Flux form."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cli.importer import import_flux
from devstack.flux.objects import cosign_secret, kustomization, oci_repository
from ferry.spec import EnvironmentSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "environments.yaml"
# What a Flux Kustomization + OCIRepository can say of an environment (approvals have no Flux equivalent).
MAPPED = (
    "name",
    "repository",
    "path",
    "namespace",
    "version",
    "semver",
    "interval",
    "health_timeout",
    "prune",
    "verify",
)


def public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def examples() -> list[EnvironmentSpec]:
    text = EXAMPLES.read_text().replace("${REPOSITORY}", "registry.example:5000/team/app")
    text = text.replace("${RELEASE_PUBLIC_KEY}", public_key().replace("\n", "\\n"))
    raw = yaml.safe_load(text)
    for env in raw["environments"]:
        env.pop("approval", None)
    return [EnvironmentSpec.model_validate(e) for e in raw["environments"]]


def as_flux(env: EnvironmentSpec) -> list[dict[str, Any]]:
    """The Flux objects that do what `env` does (what a team on Flux has today)."""
    ref = {"semver": env.semver} if env.semver else {"tag": str(env.version)}
    docs = []
    secret = None
    if env.verify:
        secret = env.verify.publishers[0].name
        docs.append(cosign_secret(secret, "flux-system", env.verify.publishers[0].key))
    docs.append(oci_repository(env.name, "flux-system", f"oci://{env.repository}", ref, cosign_secret=secret))
    ks = kustomization(
        env.name,
        "flux-system",
        env.name,
        env.namespace,
        interval=str(env.interval),
        path=f"./{env.path}",
        prune=env.prune,
        timeout=str(env.health_timeout),
    )
    return [*docs, ks]


def mapped(env: EnvironmentSpec) -> dict[str, Any]:
    dumped = env.model_dump()
    return {k: dumped[k] for k in MAPPED}


def test_the_example_environments_round_trip() -> None:
    originals = examples()
    objects = [doc for env in originals for doc in as_flux(env)]
    imported = import_flux(objects)
    specs = [EnvironmentSpec.model_validate(e) for e in imported.environments]
    assert [mapped(s) for s in specs] == [mapped(o) for o in originals]
    assert all("insecure" in note for note in imported.notes), imported.notes  # the worker's registry settings


def test_what_has_no_equivalent_is_listed_not_dropped() -> None:
    source = oci_repository("app", "apps", "oci://reg/app", {"semver": "~1.2"}, insecure=False)
    pinned = oci_repository("pinned", "apps", "oci://reg/app", {"digest": "sha256:" + "a" * 64}, insecure=False)
    git = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "from-git", "namespace": "apps"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "repo"}, "path": "./"},
    }
    ks = kustomization("app", "apps", "app", "prod")
    ks["spec"].update(
        {
            "dependsOn": [{"name": "infra"}],
            "decryption": {"provider": "sops"},
            "healthChecks": [{"kind": "Deployment", "name": "x"}],
        }
    )
    result = import_flux([source, ks, git, pinned, kustomization("pinned", "apps", "pinned", "prod")])
    assert [e["name"] for e in result.environments] == ["app"]
    notes = "\n".join(result.notes)
    for expected in ("ref.digest", "dependsOn", "decryption", "healthChecks", "GitRepository"):
        assert expected in notes, notes


def test_keys_from_a_secret_in_data_form_and_the_cli(tmp_path: Path) -> None:
    pem = public_key()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pub", "namespace": "apps"},
        "data": {"cosign.pub": base64.b64encode(pem.encode()).decode()},
    }
    docs = [
        secret,
        oci_repository("app", "apps", "oci://reg/team/app", {"semver": ">=1.0.0"}, cosign_secret="pub"),
        kustomization("app", "apps", "app", "prod", interval="30s"),
    ]
    (tmp_path / "flux.yaml").write_text(yaml.safe_dump_all(docs))
    out = tmp_path / "environments.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "import", "flux", "-f", str(tmp_path / "flux.yaml"), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    env = EnvironmentSpec.model_validate(yaml.safe_load(out.read_text())["environments"][0])
    assert (env.repository, env.semver, env.namespace, str(env.interval)) == ("reg/team/app", ">=1.0.0", "prod", "30s")
    assert env.verify and env.verify.publishers[0].key.strip() == pem.strip()
    assert "1 environment(s)" in proc.stderr


def test_a_private_key_beside_the_public_one_is_never_read_and_a_bad_key_is_a_note() -> None:
    pem = public_key()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pub", "namespace": "apps"},
        "data": {
            "cosign.pub": base64.b64encode(pem.encode()).decode(),
            "cosign.key": base64.b64encode(b"\xff\xfe private key bytes").decode(),  # not text
            "other.pub": base64.b64encode(b"\xff\xfe").decode(),
        },
    }
    docs = [
        secret,
        oci_repository("app", "apps", "oci://reg/team/app", {"semver": ">=1.0.0"}, cosign_secret="pub"),
        kustomization("app", "apps", "app", "prod"),
    ]
    result = import_flux(docs)
    env = EnvironmentSpec.model_validate(result.environments[0])
    assert env.verify and [p.key.strip() for p in env.verify.publishers] == [pem.strip()]
    assert any("other.pub is not a base64 text key" in note for note in result.notes), result.notes
    assert not any("cosign.key" in note for note in result.notes)


def test_an_oversized_objects_file_is_refused_naming_it(tmp_path: Path) -> None:
    from cli.importer import MAX_INPUT_BYTES

    big = tmp_path / "flux.yaml"
    with big.open("wb") as out:
        out.truncate(MAX_INPUT_BYTES + 1)
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "import", "flux", "-f", str(big)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert f"{big}: larger than {MAX_INPUT_BYTES} bytes: refused" in proc.stderr
