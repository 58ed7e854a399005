"""Release signatures against the real registry and the real cosign (built by `make setup`); no mocks.

Ferry's signatures must verify with `cosign verify --key`, and cosign's with Ferry, so Flux's OCIRepository
`verify` and cosign users can check Ferry's releases and Ferry can check theirs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from temporalio.exceptions import ApplicationError

from activities.registry import Registries, RegistryActivities, SignatureActivities
from devstack.procs import free_port
from devstack.registry import Registry
from ferry.artifacts import PushArtifactInput
from ferry.cosign import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    PublisherKey,
    ReleaseSigner,
    SignArtifactInput,
    VerifyArtifactInput,
    signature_tag,
    simple_signing_payload,
)
from ferry.oci import FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE
from ferry.settings import RegistrySettings
from tests.kit.stack import settings_for

COSIGN_VERSION = "v2.6.5"


def cosign_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferry" / "tools" / "cosign" / COSIGN_VERSION / "cosign"


@pytest.fixture(scope="module")
def cosign() -> Path:
    path = cosign_path()
    assert path.is_file() and os.access(path, os.X_OK), (
        f"cosign {COSIGN_VERSION} is not built at {path}: run `make setup` (it builds cosign with Go)"
    )
    return path


def run_cosign(cosign: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COSIGN_PASSWORD": "", "HOME": str(cwd)}
    return subprocess.run([str(cosign), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


class Signing:
    """The adapter objects of one test: the CI host's signer and a verifying worker."""

    def __init__(self, registry: Registry, tmp_path: Path) -> None:
        self.registries = Registries(settings_for(registry, tmp_path).registry)
        self.registry = RegistryActivities(self.registries)
        self.signer = ReleaseSigner(ec.generate_private_key(ec.SECP256R1()))
        self.ci = SignatureActivities(self.registries, self.signer)
        self.worker = SignatureActivities(self.registries)
        self.repo = f"{registry.host}/signed/{uuid.uuid4().hex[:12]}"
        self.tmp = tmp_path
        self.base = f"http://{registry.host}/v2/{self.repo.split('/', 1)[1]}"

    def release(self, tag: str = "1.0.0", content: bytes = b"kind: ConfigMap\n") -> str:
        blob = self.tmp / f"{tag}.tar.gz"
        blob.write_bytes(content + tag.encode())
        return self.registry.push_artifact(
            PushArtifactInput(
                repository=self.repo,
                tag=tag,
                file_path=str(blob),
                layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
                config_media_type=FLUX_CONFIG_MEDIA_TYPE,
            )
        ).digest

    def sign(self, digest: str, publisher: str = "alice") -> Any:
        return self.ci.sign_artifact(
            SignArtifactInput(
                repository=self.repo, digest=digest, publisher=publisher, key_fingerprint=self.signer.fingerprint
            )
        )

    def trusted(self, name: str = "ci-main") -> PublisherKey:
        return PublisherKey(name=name, key=self.signer.public_key_pem)

    def verify(self, digest: str, *keys: PublisherKey) -> Any:
        return self.worker.verify_artifact(
            VerifyArtifactInput(repository=self.repo, digest=digest, publishers=list(keys) or [self.trusted()])
        )

    def refused(self, digest: str, *keys: PublisherKey) -> str:
        with pytest.raises(ApplicationError) as err:
            self.verify(digest, *keys)
        assert err.value.type == "VerificationFailed" and err.value.non_retryable
        return err.value.message

    # raw registry access, as an attacker with push rights has it
    def manifest(self, reference: str) -> dict[str, Any]:
        response = requests.get(
            f"{self.base}/manifests/{reference}", headers={"Accept": OCI_MANIFEST_MEDIA_TYPE}, timeout=5
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def put_manifest(self, reference: str, body: bytes) -> None:
        requests.put(
            f"{self.base}/manifests/{reference}",
            data=body,
            headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE},
            timeout=5,
        ).raise_for_status()

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = requests.post(f"{self.base}/blobs/uploads/", timeout=5)
        started.raise_for_status()
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.base.split("/v2/")[0] + location
        requests.put(
            location + ("&" if "?" in location else "?") + f"digest={digest}", data=data, timeout=5
        ).raise_for_status()
        return digest

    def blob(self, digest: str) -> bytes:
        response = requests.get(f"{self.base}/blobs/{digest}", timeout=5)
        response.raise_for_status()
        return response.content


@pytest.fixture
def s(registry: Registry, tmp_path: Path) -> Signing:
    return Signing(registry, tmp_path)


def test_ferry_signature_verifies_with_real_cosign(s: Signing, cosign: Path) -> None:
    digest = s.release()
    signed = s.sign(digest, publisher="github-actions[bot]")
    assert signed.signature_tag == signature_tag(digest) and signed.key_fingerprint == s.signer.fingerprint
    (s.tmp / "ferry.pub").write_text(s.signer.public_key_pem)
    out = run_cosign(
        cosign,
        s.tmp,
        "verify",
        "--key",
        "ferry.pub",
        "--insecure-ignore-tlog",
        "--allow-insecure-registry",
        f"{s.repo}@{digest}",
    )
    assert out.returncode == 0, out.stderr
    claims = json.loads(out.stdout)
    assert claims[0]["critical"]["image"]["docker-manifest-digest"] == digest
    assert claims[0]["critical"]["identity"]["docker-reference"] == s.repo
    assert claims[0]["optional"]["dev.ferry.publisher"] == "github-actions[bot]"
    # and cosign refuses it with another key: the check above is not vacuous
    stranger = ReleaseSigner(ec.generate_private_key(ec.SECP256R1()))
    (s.tmp / "stranger.pub").write_text(stranger.public_key_pem)
    out = run_cosign(
        cosign,
        s.tmp,
        "verify",
        "--key",
        "stranger.pub",
        "--insecure-ignore-tlog",
        "--allow-insecure-registry",
        f"{s.repo}@{digest}",
    )
    assert out.returncode != 0

    verified = s.verify(digest)
    assert (verified.key_name, verified.publisher, verified.fingerprint) == (
        "ci-main",
        "github-actions[bot]",
        s.signer.fingerprint,
    )


def test_cosign_signature_verifies_with_ferry(s: Signing, cosign: Path) -> None:
    generated = run_cosign(cosign, s.tmp, "generate-key-pair")
    assert generated.returncode == 0, generated.stderr
    attested, plain = s.release("1.0.0"), s.release("2.0.0")
    for digest, extra in ((attested, ["-a", "dev.ferry.publisher=alice"]), (plain, [])):
        out = run_cosign(
            cosign,
            s.tmp,
            "sign",
            "--key",
            "cosign.key",
            "--tlog-upload=false",
            "--allow-insecure-registry",
            "--yes",
            *extra,
            f"{s.repo}@{digest}",
        )
        assert out.returncode == 0, out.stderr
    key = PublisherKey(name="cosign-ci", key=(s.tmp / "cosign.pub").read_text())
    got = s.verify(attested, key)
    assert (got.key_name, got.publisher, got.fingerprint) == ("cosign-ci", "alice", key.fingerprint)
    assert s.verify(plain, key).publisher == "cosign-ci"  # nobody attested: the trusted signer's name
    assert "unknown key" in s.refused(attested, s.trusted())
    # Ferry writes the payload cosign writes, byte for byte
    layer = s.manifest(signature_tag(plain))["layers"][0]
    assert s.blob(layer["digest"]) == simple_signing_payload(s.repo, plain, None)

    # Ferry appends its signature to cosign's: both verify, with Ferry and with cosign
    s.sign(plain, publisher="bob")
    assert len(s.manifest(signature_tag(plain))["layers"]) == 2
    assert s.verify(plain).publisher == "bob"
    assert s.verify(plain, key).publisher == "cosign-ci"
    out = run_cosign(
        cosign,
        s.tmp,
        "verify",
        "--key",
        "cosign.pub",
        "--insecure-ignore-tlog",
        "--allow-insecure-registry",
        f"{s.repo}@{plain}",
    )
    assert out.returncode == 0, out.stderr


def test_signing_twice_is_idempotent_and_other_signatures_are_kept(s: Signing, cosign: Path) -> None:
    digest = s.release()
    first, second = s.sign(digest), s.sign(digest)
    assert not first.already_signed and second.already_signed
    assert first.signature_digest == second.signature_digest
    assert len(s.manifest(signature_tag(digest))["layers"]) == 1
    # a second signer appends a layer, as cosign does; each signer's key verifies
    other = Signing.__new__(Signing)
    other.__dict__.update(s.__dict__)
    other.signer = ReleaseSigner(ec.generate_private_key(ec.SECP256R1()))
    other.ci = SignatureActivities(s.registries, other.signer)
    other.sign(digest, publisher="bob")
    assert len(s.manifest(signature_tag(digest))["layers"]) == 2
    assert s.verify(digest).publisher == "alice"
    assert other.verify(digest, other.trusted("ci-other")).publisher == "bob"
    (s.tmp / "first.pub").write_text(s.signer.public_key_pem)
    out = run_cosign(
        cosign,
        s.tmp,
        "verify",
        "--key",
        "first.pub",
        "--insecure-ignore-tlog",
        "--allow-insecure-registry",
        f"{s.repo}@{digest}",
    )
    assert out.returncode == 0, out.stderr


def test_unsigned_artifact_is_refused(s: Signing) -> None:
    digest = s.release()
    message = s.refused(digest)
    assert "unsigned" in message and signature_tag(digest) in message


def test_unknown_key_is_refused(s: Signing) -> None:
    digest = s.release()
    s.sign(digest)
    stranger = PublisherKey(name="ci-main", key=ReleaseSigner(ec.generate_private_key(ec.SECP256R1())).public_key_pem)
    message = s.refused(digest, stranger)
    assert "unknown key" in message and stranger.fingerprint in message


def test_tampered_payload_is_refused(s: Signing) -> None:
    digest = s.release()
    s.sign(digest, publisher="alice")
    tag = signature_tag(digest)
    manifest = s.manifest(tag)
    layer = manifest["layers"][0]
    forged = s.blob(layer["digest"]).replace(b"alice", b"mallory")
    layer.update(digest=s.put_blob(forged), size=len(forged))
    s.put_manifest(tag, json.dumps(manifest).encode())
    message = s.refused(digest)
    assert "bad signature or unknown key" in message and "altered" in message


def test_signature_copied_to_another_digest_is_refused(s: Signing) -> None:
    signed, other = s.release("1.0.0"), s.release("2.0.0")
    s.sign(signed)
    s.put_manifest(signature_tag(other), json.dumps(s.manifest(signature_tag(signed))).encode())
    message = s.refused(other)
    assert "another artifact" in message and signed in message and other in message


def test_signature_layer_without_annotation_or_with_junk_is_refused(s: Signing) -> None:
    digest = s.release()
    s.sign(digest)
    tag = signature_tag(digest)
    manifest = s.manifest(tag)
    manifest["layers"][0]["annotations"] = {SIGNATURE_ANNOTATION: "%%%"}
    s.put_manifest(tag, json.dumps(manifest).encode())
    assert "not base64" in s.refused(digest)
    manifest["layers"][0]["annotations"] = {}
    s.put_manifest(tag, json.dumps(manifest).encode())
    assert "no dev.cosignproject.cosign/signature annotation" in s.refused(digest)


def test_oversized_signature_manifest_is_refused(s: Signing) -> None:
    digest = s.release()
    s.sign(digest)
    tag = signature_tag(digest)
    manifest = s.manifest(tag)
    manifest["annotations"] = {"padding": "x" * (70 * 1024)}
    s.put_manifest(tag, json.dumps(manifest).encode())
    message = s.refused(digest)
    assert "larger than 65536 bytes" in message


def test_too_many_signature_layers_are_refused(s: Signing) -> None:
    digest = s.release()
    s.sign(digest)
    tag = signature_tag(digest)
    manifest = s.manifest(tag)
    manifest["layers"] = manifest["layers"] * 17
    s.put_manifest(tag, json.dumps(manifest).encode())
    assert "17 signature layers, more than 16" in s.refused(digest)


def test_oversized_payload_layer_is_not_read(s: Signing) -> None:
    digest = s.release()
    tag = signature_tag(digest)
    big = b"{" + b" " * (65 * 1024) + b"}"
    config = s.put_blob(b"{}")
    s.put_manifest(
        tag,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config},
                "layers": [
                    {
                        "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
                        "size": len(big),
                        "digest": s.put_blob(big),
                        "annotations": {SIGNATURE_ANNOTATION: "AAAA"},
                    }
                ],
            }
        ).encode(),
    )
    assert "exceeds 65536" in s.refused(digest)


def test_signing_with_another_key_than_the_release_asked_is_refused(s: Signing) -> None:
    digest = s.release()
    with pytest.raises(ApplicationError) as err:
        s.ci.sign_artifact(
            SignArtifactInput(repository=s.repo, digest=digest, publisher="alice", key_fingerprint="SHA256:" + "0" * 64)
        )
    assert err.value.type == "BadInput" and err.value.non_retryable
    with pytest.raises(ApplicationError, match="holds no signing key"):
        s.worker.sign_artifact(
            SignArtifactInput(repository=s.repo, digest=digest, publisher="alice", key_fingerprint=s.signer.fingerprint)
        )


def test_registry_outage_during_verification_is_retryable() -> None:
    port = free_port()  # nothing listens here
    acts = SignatureActivities(Registries(RegistrySettings(insecure_hosts=[f"127.0.0.1:{port}"])))
    key = PublisherKey(name="ci", key=ReleaseSigner(ec.generate_private_key(ec.SECP256R1())).public_key_pem)
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        acts.verify_artifact(
            VerifyArtifactInput(repository=f"127.0.0.1:{port}/team/app", digest="sha256:" + "a" * 64, publishers=[key])
        )
    assert time.monotonic() - started < 5
    assert err.value.type == "RegistryUnavailable" and not err.value.non_retryable


def test_sign_and_verify_on_an_htpasswd_registry(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Credentials come from the worker's settings; without them verification is Unauthorized (non-retryable),
    not a verdict on the signature."""
    from pydantic import SecretStr

    from devstack.registry import htpasswd_line

    root = tmp_path_factory.mktemp("sig-auth-registry")
    (root / "htpasswd").write_text(htpasswd_line("ci", "s3cret-pass") + "\n")
    reg = Registry(port=free_port(), root=root, htpasswd=root / "htpasswd")
    reg.start()
    try:
        s = Signing(reg, tmp_path)
        s.registries = Registries(
            RegistrySettings(
                insecure_hosts=[reg.host], username="ci", password=SecretStr("s3cret-pass"), credentials_host=reg.host
            )
        )
        s.registry = RegistryActivities(s.registries)
        s.ci = SignatureActivities(s.registries, s.signer)
        s.worker = SignatureActivities(s.registries)
        digest = s.release()
        s.sign(digest)
        assert s.verify(digest).publisher == "alice"
        anonymous = SignatureActivities(Registries(RegistrySettings(insecure_hosts=[reg.host])))
        with pytest.raises(ApplicationError) as err:
            anonymous.verify_artifact(VerifyArtifactInput(repository=s.repo, digest=digest, publishers=[s.trusted()]))
        assert err.value.type == "Unauthorized" and err.value.non_retryable
    finally:
        reg.stop()
