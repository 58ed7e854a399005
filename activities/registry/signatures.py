"""Release signature activities (cosign's format, see ferry.cosign) and the bounds on what a lookup reads."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import classified
from activities.registry.artifacts import RegistryActivities
from activities.registry.client import (
    MANIFEST_ACCEPT,
    _classified,
    _OneShotRegistry,
    _Oversized,
    _read_bounded,
    _RegistryHTTPError,
)
from activities.registry.credentials import Registries
from ferry.cosign import (
    SIGNATURE_ANNOTATION,
    SIGNATURE_CONFIG_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    PublisherKey,
    ReleaseSigner,
    SignArtifactInput,
    SignArtifactResult,
    SignatureError,
    VerifyArtifactInput,
    VerifyArtifactResult,
    signature_tag,
    simple_signing_payload,
    verify_release_signature,
)
from ferry.errors import ErrorType
from ferry.oci import OCI_MANIFEST_MEDIA_TYPE, is_digest, split_repository

# Bounds on what a signature lookup reads: cosign's signature manifests are ~1 KiB per signature and their
# payload blobs a few hundred bytes; anything far larger is hostile or broken.
MAX_SIGNATURE_MANIFEST = 64 * 1024
MAX_SIGNATURE_BLOB = 64 * 1024
MAX_SIGNATURE_LAYERS = 16


def _verification_failed(message: str) -> ApplicationError:
    return classified(ErrorType.VERIFICATION_FAILED, message)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class SignatureActivities:
    """Release signatures in cosign's format (see ferry.cosign). ``sign_artifact`` exists only in the
    `ferry release` process that was given ``--sign-key``: the private key is held by this object, never an
    input, a result, a log line or an error text. ``verify_artifact`` needs no key and runs on any worker."""

    def __init__(self, registries: Registries, signer: ReleaseSigner | None = None) -> None:
        self._registries = registries
        self._signer = signer

    def _client(self, repository: str) -> tuple[_OneShotRegistry, str, str]:
        host, path = split_repository(repository)
        return self._registries.client(host), host, path

    def _signature_manifest(
        self, reg: _OneShotRegistry, host: str, path: str, tag: str
    ) -> tuple[dict[str, Any], str] | None:
        """The signature manifest at ``tag`` and the digest of its bytes (None when absent), read with a size
        bound."""
        url = f"{reg.prefix}://{host}/v2/{path}/manifests/{tag}"
        try:
            got = _read_bounded(reg, url, MAX_SIGNATURE_MANIFEST, {"Accept": MANIFEST_ACCEPT})
        except _Oversized as err:
            raise _verification_failed(
                f"the signature manifest {tag} is larger than {MAX_SIGNATURE_MANIFEST} bytes ({err}): refused"
            ) from None
        if got is None:
            return None
        try:
            body = json.loads(got)
        except ValueError:
            raise _verification_failed(f"the signature manifest {tag} is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("layers", []), list):
            raise _verification_failed(f"the signature manifest {tag} is not an OCI manifest")
        return body, _sha256(got)

    def _blob(self, reg: _OneShotRegistry, host: str, path: str, digest: str) -> bytes:
        """A blob of at most MAX_SIGNATURE_BLOB bytes whose sha256 is ``digest``; ValueError says why not."""
        if not is_digest(digest):
            raise ValueError(f"layer digest {digest[:80]!r} is not a sha256 digest")
        url = f"{reg.prefix}://{host}/v2/{path}/blobs/{digest}"
        try:
            got = _read_bounded(reg, url, MAX_SIGNATURE_BLOB)
        except _Oversized as err:
            raise ValueError(f"payload blob {digest} is larger than {MAX_SIGNATURE_BLOB} bytes ({err})") from None
        if got is None:
            raise ValueError(f"payload blob {digest} does not exist")
        if _sha256(got) != digest:
            raise ValueError(f"payload blob {digest} hashed to {_sha256(got)}")
        return got

    @activity.defn(name="verify_artifact")
    def verify_artifact(self, input: VerifyArtifactInput) -> VerifyArtifactResult:
        """Is the manifest ``input.digest`` signed, in cosign's format, by one of ``input.publishers``?
        Read-only. VerificationFailed (non-retryable) names why not: unsigned, oversized, unknown key or bad
        signature, a payload for another digest; registry outages are RegistryUnavailable (retryable).
        Reads are bounded (manifest, blobs, layer count) and every blob's digest is checked; one verifying
        layer is enough (cosign appends a layer per signature)."""
        reg, host, path = self._client(input.repository)
        tag = signature_tag(input.digest)
        with _classified(reg, f"verify {input.repository}@{input.digest}"):
            found = self._signature_manifest(reg, host, path, tag)
            if found is None:
                raise _verification_failed(
                    f"unsigned: {input.repository}@{input.digest} has no signature "
                    f"({input.repository}:{tag} does not exist)"
                )
            manifest = found[0]
            layers = [layer for layer in manifest.get("layers", []) if isinstance(layer, dict)]
            if len(manifest.get("layers", [])) > MAX_SIGNATURE_LAYERS:
                raise _verification_failed(
                    f"{input.repository}:{tag} has {len(manifest['layers'])} signature "
                    f"layers, more than {MAX_SIGNATURE_LAYERS}: refused"
                )
            reasons: list[str] = []
            for index, layer in enumerate(layers):
                outcome = self._verify_layer(reg, host, path, layer, input, tag)
                if isinstance(outcome, VerifyArtifactResult):
                    return outcome
                reasons.append(f"layer {index}: {outcome}")
            if not reasons:
                reasons.append("the signature manifest has no layers")
            raise _verification_failed(
                f"{input.repository}@{input.digest} is not signed by a trusted key: " + "; ".join(reasons)
            )

    def _verify_layer(
        self, reg: _OneShotRegistry, host: str, path: str, layer: dict[str, Any], input: VerifyArtifactInput, tag: str
    ) -> VerifyArtifactResult | str:
        """One layer of the signature manifest at ``tag``: the verified publisher, or why it does not verify.
        Its payload blob is read only when its media type and declared size are acceptable."""
        if layer.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            return f"media type {str(layer.get('mediaType'))[:80]!r} is not a simple-signing payload"
        size = layer.get("size")
        if not isinstance(size, int) or size > MAX_SIGNATURE_BLOB:
            return f"payload of {size} bytes exceeds {MAX_SIGNATURE_BLOB}"
        annotations = layer.get("annotations") or {}
        signature = annotations.get(SIGNATURE_ANNOTATION, "") if isinstance(annotations, dict) else ""
        try:
            payload = self._blob(reg, host, path, str(layer.get("digest", "")))
            verified = verify_release_signature(payload, str(signature), input.digest, input.publishers)
        except SignatureError as err:
            return err.reason
        except ValueError as err:
            return str(err)
        return VerifyArtifactResult(
            publisher=verified.publisher,
            key_name=verified.key_name,
            fingerprint=verified.fingerprint,
            signature_tag=tag,
        )

    @activity.defn(name="sign_artifact")
    def sign_artifact(self, input: SignArtifactInput) -> SignArtifactResult:
        """Sign manifest ``input.digest`` in cosign's format with the key this process holds: push the payload
        blob, the config blob and the ``sha256-<hex>.sig`` manifest, keeping signatures already there (as
        cosign appends). Idempotent: signing is deterministic, and a signature by this key over the same
        payload is recognised and not added twice. BadInput (non-retryable) when this process holds no key or
        another key than the release was started with; RegistryUnavailable is retryable. A few small
        requests: not heartbeating, bounded by the start-to-close timeout."""
        signer = self._held_signer(input.key_fingerprint)
        reg, host, path = self._client(input.repository)
        tag = signature_tag(input.digest)
        payload = simple_signing_payload(input.repository, input.digest, input.publisher)
        payload_digest = _sha256(payload)
        me = [PublisherKey(name="self", key=signer.public_key_pem)]
        with _classified(reg, f"sign {input.repository}@{input.digest}"):
            found = self._signature_manifest(reg, host, path, tag)
            layers: list[dict[str, Any]] = list(found[0].get("layers", [])) if found else []
            if found is not None and _signed_already(layers, payload, payload_digest, input.digest, me):
                return SignArtifactResult(
                    signature_tag=tag,
                    signature_digest=found[1],
                    key_fingerprint=signer.fingerprint,
                    payload_digest=payload_digest,
                    already_signed=True,
                )
            if len(layers) >= MAX_SIGNATURE_LAYERS:
                raise classified(
                    ErrorType.BAD_INPUT,
                    f"{input.repository}:{tag} already has {len(layers)} "
                    f"signatures; readers stop at {MAX_SIGNATURE_LAYERS}",
                )
            self._upload_blob(reg, host, path, payload)
            layers.append(
                {
                    "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
                    "size": len(payload),
                    "digest": payload_digest,
                    "annotations": {SIGNATURE_ANNOTATION: signer.sign(payload)},
                }
            )
            digest = self._push_signature_manifest(reg, host, path, tag, layers)
        return SignArtifactResult(
            signature_tag=tag,
            signature_digest=digest,
            key_fingerprint=signer.fingerprint,
            payload_digest=payload_digest,
        )

    def _held_signer(self, key_fingerprint: str) -> ReleaseSigner:
        """The key this process holds, when it is the one the release was started with (else BadInput)."""
        signer = self._signer
        if signer is None:
            raise classified(ErrorType.BAD_INPUT, "this worker holds no signing key (ferry release --sign-key)")
        if key_fingerprint != signer.fingerprint:
            raise classified(
                ErrorType.BAD_INPUT,
                f"this worker's signing key is {signer.fingerprint}, the release asked for {key_fingerprint}",
            )
        return signer

    def _push_signature_manifest(
        self, reg: _OneShotRegistry, host: str, path: str, tag: str, layers: list[dict[str, Any]]
    ) -> str:
        """PUT the signature manifest with these layers (and cosign's kind of config); its digest. Two
        signers appending at the same moment can lose one signature (last write wins), as with cosign."""
        # NB: the image config go-containerregistry writes for cosign's signature images.
        config = _canonical(
            {
                "architecture": "",
                "created": "0001-01-01T00:00:00Z",
                "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
                "os": "",
                "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
                "config": {},
            }
        )
        self._upload_blob(reg, host, path, config)
        manifest = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "config": {"mediaType": SIGNATURE_CONFIG_MEDIA_TYPE, "size": len(config), "digest": _sha256(config)},
                "layers": layers,
            }
        )
        url = f"{reg.prefix}://{host}/v2/{path}/manifests/{tag}"
        response = reg.do_request(url, "PUT", data=manifest, headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE})
        RegistryActivities._check(reg, response, url)
        return _sha256(manifest)

    @staticmethod
    def _upload_blob(reg: _OneShotRegistry, host: str, path: str, data: bytes) -> None:
        """A monolithic blob upload (POST then PUT ?digest=), skipped when the registry has it."""
        digest = _sha256(data)
        base = f"{reg.prefix}://{host}/v2/{path}/blobs"
        head = reg.do_request(f"{base}/{digest}", "HEAD")
        if head.status_code == 200:
            return
        started = reg.do_request(f"{base}/uploads/", "POST")
        RegistryActivities._check(reg, started, f"{base}/uploads/")
        location = started.headers.get("Location", "")
        if location.startswith("/"):
            location = f"{reg.prefix}://{host}{location}"
        if not location:
            raise _RegistryHTTPError(502, f"{base}/uploads/", "no Location in the upload answer")
        url = location + ("&" if "?" in location else "?") + f"digest={digest}"
        put = reg.do_request(url, "PUT", data=data, headers={"Content-Type": "application/octet-stream"})
        RegistryActivities._check(reg, put, url)


def _signed_already(
    layers: list[dict[str, Any]], payload: bytes, payload_digest: str, digest: str, me: list[PublisherKey]
) -> bool:
    """One of the signature manifest's layers is this payload with a signature by this key (signing is
    deterministic, so signing again would append the same layer twice)."""
    for layer in layers:
        signature = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
        if layer.get("digest") != payload_digest:
            continue
        with contextlib.suppress(SignatureError):
            verify_release_signature(payload, str(signature), digest, me)
            return True
    return False


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
