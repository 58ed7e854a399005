"""The OCI registry adapter, over oras-py. The only module that imports oras.

Contract for every activity here:
- one pydantic model in, one out; credentials are never inputs (read from worker settings / docker config);
- oras-py's own retry loop (5 tries, ~131 s of sleeps) and urllib3 retries are off; every HTTP request has
  a timeout, so a failure surfaces at once and Temporal's retry policy decides;
- failures are raised as ``ApplicationError`` typed by ``ferry.errors.ErrorType``: Unauthorized, NotFound,
  BadInput, DigestMismatch are non-retryable; RegistryUnavailable (connection refused, timeout, 429, 5xx)
  is retryable.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import oras.auth
import oras.provider
import requests
from requests.adapters import HTTPAdapter
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import classified
from ferry.artifacts import (
    FetchManifestInput,
    Layer,
    ListTagsInput,
    ListTagsResult,
    Manifest,
    PullArtifactInput,
    PullArtifactResult,
    PushArtifactInput,
    PushArtifactResult,
    ResolveTagInput,
    ResolveTagResult,
)
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
from ferry.environment import ResolveInput, ResolveResult, VersionRef
from ferry.errors import ErrorType, classify_http_status
from ferry.oci import OCI_MANIFEST_MEDIA_TYPE, is_digest, split_repository
from ferry.settings import RegistrySettings
from ferry.versions import SemverRange, select

MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_CHUNK = 1 << 20

# The undecorated request method: oras wraps it in @retry(attempts=5) whose sleeps total ~131 s.
_DO_REQUEST_ONCE = oras.provider.Registry.do_request.__wrapped__


class _RegistryHTTPError(Exception):
    def __init__(self, status: int, url: str, body: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:300]}")
        self.status = status


class _TimeoutAdapter(HTTPAdapter):
    """Every request gets a timeout (requests has none by default) and urllib3 retries stay at zero."""

    def __init__(self, timeout: float, connections: int) -> None:
        super().__init__(max_retries=0, pool_maxsize=connections)
        self._timeout = timeout

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class _OneShotRegistry(oras.provider.Registry):  # type: ignore[misc]
    """oras Registry with its retry decorator removed and the last HTTP status remembered.

    NB: oras turns non-2xx answers into a bare ValueError; remembering the status lets us classify it.
    """

    last_status: int | None = None
    bare_session: requests.Session

    def do_request(self, url: str, method: str = "GET", data: Any = None, headers: Any = None,
                   json: Any = None, stream: bool = False) -> requests.Response:
        self.last_status = None
        _heartbeat(method, urlsplit(url).path[-80:])  # NB: per request: a push of blob, config, manifest is 3+
        if urlsplit(url).netloc.lower() != str(self.hostname).lower():
            # NB: a Location or Link header may name another host; it gets no credential, token or 401 answer.
            bare = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
            foreign = self.bare_session.request(method, url, data=data, headers=bare, json=json, stream=stream,
                                                verify=self._tls_verify)
            self.last_status = foreign.status_code
            if foreign.status_code == 429 or foreign.status_code >= 500:
                raise _RegistryHTTPError(foreign.status_code, url, foreign.text[:300])
            return foreign
        try:
            response: requests.Response = _DO_REQUEST_ONCE(self, url, method, data, headers, json, stream)
        except ValueError as err:
            # oras raises a bare ValueError when it cannot answer a 401/403 challenge (no credentials).
            raise _RegistryHTTPError(401, url, str(err)) from err
        self.last_status = response.status_code
        if response.status_code == 429 or response.status_code >= 500:
            raise _RegistryHTTPError(response.status_code, url, response.text)
        return response


MAX_DOCKER_CONFIG = 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what the OCI distribution spec asks registries to accept at least
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def normalize_auth_key(key: str) -> str:
    """A docker config ``auths`` key as the host it is for (docker's own rule: scheme and path dropped;
    ``https://index.docker.io/v1/`` is Docker Hub)."""
    host = key.strip()
    for prefix in ("https://", "http://"):
        if host.lower().startswith(prefix):
            host = host[len(prefix):]
    host = host.split("/", 1)[0].lower()
    return "docker.io" if host in _DOCKER_HUB else host


def _load_docker_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_DOCKER_CONFIG + 1)
        if len(raw) > MAX_DOCKER_CONFIG:
            return {}
        config = json.loads(raw)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _credential_helper(helper: str, host: str, timeout: float) -> tuple[str, str] | None:
    """``docker-credential-<helper> get`` for host (docker's credential-helper protocol), or None."""
    if not _HELPER_NAME.fullmatch(helper):
        return None
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        return None
    try:
        proc = subprocess.run([binary, "get"], input=host.encode(), capture_output=True, timeout=timeout,
                              check=False)
        payload = json.loads(proc.stdout[:MAX_DOCKER_CONFIG]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if isinstance(payload, dict) and payload.get("Username") and payload.get("Secret"):
        return str(payload["Username"]), str(payload["Secret"])
    return None


def _docker_config_credentials(path: Path, host: str, timeout: float = 10.0) -> tuple[str, str] | None:
    """username/password for exactly ``host`` from a docker config.json: its ``auths`` entry (keys compared as
    docker does), else its ``credHelpers`` entry, else its ``credsStore``. Never another host's."""
    config = _load_docker_config(path)
    want = normalize_auth_key(host)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key, entry in (auths or {}).items():
        if normalize_auth_key(str(key)) != want or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except ValueError:
                continue
            if user:
                return user, password
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    helper = next((str(v) for k, v in (helpers or {}).items() if normalize_auth_key(str(k)) == want), None)
    if helper is not None:
        return _credential_helper(helper, host, timeout)
    if isinstance(config.get("credsStore"), str):
        return _credential_helper(config["credsStore"], host, timeout)
    return None


class _HostBoundTokenAuth(oras.auth.TokenAuth):  # type: ignore[misc]
    """oras's token auth, except that the registry's credentials go to a token realm only on the registry's own
    host (or Docker Hub's auth.docker.io): a challenge naming any other realm gets an anonymous token request."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self._host = host

    def request_token(self, h: Any) -> Any:
        realm = str(h.realm or "")
        realm_host = urlsplit(realm if "://" in realm else f"{self.prefix}://{realm}").netloc.lower()
        if realm_host == self._host.lower() or (normalize_auth_key(self._host) == "docker.io"
                                                and realm_host == "auth.docker.io"):
            return super().request_token(h)
        saved = getattr(self, "_basic_auth", None)
        self._basic_auth = None
        try:
            return super().request_token(h)
        finally:
            self._basic_auth = saved


class Registries:
    """A client per registry host, configured from worker settings; thread-safe.

    `connections`: kept-alive connections per host, one per caller that may run at once (the worker's activity and
    local-activity slots). requests keeps 10; more concurrent callers discard a connection after each request.
    """

    def __init__(self, settings: RegistrySettings, connections: int = 10) -> None:
        self._settings = settings
        self._connections = connections
        self._clients: dict[str, _OneShotRegistry] = {}
        self._lock = threading.Lock()

    def credentials(self, host: str) -> tuple[str, str] | None:
        """The credentials given for exactly this host, or None: FERRY_REGISTRY_USERNAME/PASSWORD only for
        their credentials host, else the docker config's entry for this host."""
        s = self._settings
        if s.username and s.password and s.credentials_for is not None:
            if normalize_auth_key(host) == normalize_auth_key(s.credentials_for):
                return s.username, s.password.get_secret_value()
        config = s.docker_config or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
        if config.is_dir():
            config = config / "config.json"
        return _docker_config_credentials(config, host, s.request_timeout_seconds)

    @property
    def max_download_bytes(self) -> int:
        return self._settings.max_download_bytes

    def client(self, host: str) -> _OneShotRegistry:
        with self._lock:
            if host not in self._clients:
                self._clients[host] = self._build(host)
            return self._clients[host]

    def _build(self, host: str) -> _OneShotRegistry:
        insecure = host in self._settings.insecure_hosts
        creds = self.credentials(host)
        # NB: an htpasswd registry answers 401 with `WWW-Authenticate: Basic`; oras's default token backend
        # would treat that realm as a token server. Ask the registry which scheme it speaks.
        backend = "token"
        if creds:
            scheme = "http" if insecure else "https"
            with contextlib.suppress(requests.RequestException):
                probe = requests.get(f"{scheme}://{host}/v2/", timeout=self._settings.request_timeout_seconds)
                if probe.headers.get("WWW-Authenticate", "").lower().startswith("basic"):
                    backend = "basic"
        reg = _OneShotRegistry(hostname=host, insecure=insecure, auth_backend=backend)
        if backend == "token":
            auth = _HostBoundTokenAuth(host)
            auth.session, auth.prefix, auth._tls_verify = reg.session, reg.prefix, reg._tls_verify
            reg.auth = auth
        adapter = _TimeoutAdapter(self._settings.request_timeout_seconds, self._connections)
        reg.session.mount("http://", adapter)
        reg.session.mount("https://", adapter)
        reg.bare_session = requests.Session()
        reg.bare_session.mount("http://", adapter)
        reg.bare_session.mount("https://", adapter)
        if creds:
            reg.auth.set_basic_auth(*creds)
        return reg


@contextlib.contextmanager
def _classified(reg: _OneShotRegistry | None, what: str) -> Iterator[None]:
    """Translate whatever oras/requests raise into the taxonomy."""
    try:
        yield
    except _RegistryHTTPError as err:
        raise classified(classify_http_status(err.status, unavailable=ErrorType.REGISTRY_UNAVAILABLE),
                         f"{what}: {err}") from err
    except (requests.ConnectionError, requests.Timeout) as err:
        raise classified(ErrorType.REGISTRY_UNAVAILABLE, f"{what}: registry unreachable: {err}") from err
    except ValueError as err:
        status = reg.last_status if reg is not None else None
        if status is not None and status >= 400:
            raise classified(classify_http_status(status, unavailable=ErrorType.REGISTRY_UNAVAILABLE),
                             f"{what}: HTTP {status}: {err}") from err
        raise classified(ErrorType.BAD_INPUT, f"{what}: {err}") from err


def _heartbeat(*details: Any) -> None:
    if activity.in_activity() and not activity.info().is_local:  # NB: local activities cannot heartbeat
        activity.heartbeat(*details)


class RegistryActivities:
    """Registry activities, registered as bound methods on the worker."""

    def __init__(self, registries: Registries) -> None:
        self._registries = registries

    def _client(self, repository: str) -> tuple[_OneShotRegistry, str, str]:
        host, path = split_repository(repository)
        return self._registries.client(host), host, path

    @staticmethod
    def _check(reg: _OneShotRegistry, response: requests.Response, what: str) -> None:
        if response.status_code >= 400:
            raise _RegistryHTTPError(response.status_code, what, response.text)

    def _get_manifest(self, reg: _OneShotRegistry, host: str, path: str, reference: str) -> Manifest:
        url = f"{reg.prefix}://{host}/v2/{path}/manifests/{reference}"
        try:
            raw = _read_bounded(reg, url, MAX_MANIFEST_BYTES, {"Accept": MANIFEST_ACCEPT})
        except _Oversized as err:
            raise classified(ErrorType.BAD_INPUT, f"{url}: manifest larger than {MAX_MANIFEST_BYTES} bytes "
                                                  f"({err}): refused") from None
        if raw is None:
            raise _RegistryHTTPError(404, url, "manifest unknown")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise classified(ErrorType.DIGEST_MISMATCH, f"{url} served a manifest whose digest is {digest}")
        try:
            body = json.loads(raw)
            manifest = Manifest(
                digest=digest,
                media_type=body.get("mediaType", OCI_MANIFEST_MEDIA_TYPE),
                config_media_type=body["config"]["mediaType"],
                config_digest=body["config"]["digest"],
                layers=[
                    Layer(media_type=layer["mediaType"], digest=layer["digest"], size=layer["size"],
                          annotations=layer.get("annotations") or {})
                    for layer in body.get("layers", [])
                ],
                annotations=body.get("annotations") or {},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise classified(ErrorType.BAD_INPUT, f"{url}: not an OCI manifest: {str(err)[:300]}") from None
        return manifest

    @activity.defn(name="push_artifact")
    def push_artifact(self, input: PushArtifactInput) -> PushArtifactResult:
        """Push one file as a single-layer artifact and tag it. Idempotent for identical content (same
        digests); it does not check immutability — the release workflow does that first. Heartbeats on every
        registry request (blob upload, config, manifest)."""
        reg, host, path = self._client(input.repository)
        source = Path(input.file_path)
        if not source.is_file():
            raise classified(ErrorType.BUNDLE_SOURCE_GONE, f"{source} does not exist on this worker")
        target = f"{host}/{path}:{input.tag}"
        with tempfile.TemporaryDirectory(prefix="ferry-push-") as tmp, _classified(reg, f"push {target}"):
            config = Path(tmp) / "config.json"
            config.write_text(input.config_json)
            response = reg.push(
                target,
                files=[f"{source}:{input.layer_media_type}"],
                manifest_config=f"{config}:{input.config_media_type}",
                manifest_annotations=dict(input.annotations),
                disable_path_validation=True,
                quiet=True,
            )
            digest = response.headers.get("Docker-Content-Digest")
            if not digest:
                digest = self._get_manifest(reg, host, path, input.tag).digest
        return PushArtifactResult(digest=digest, layer_digest=_file_digest(source), size=source.stat().st_size)

    @activity.defn(name="resolve_desired")
    def resolve_desired(self, input: ResolveInput) -> ResolveResult:
        """What an environment should run now: the pinned version's digest, or the highest tag in the
        range that is not held. Read-only; NotFound when a pinned version does not exist."""
        if input.version is not None:
            digest = self.resolve_tag(ResolveTagInput(repository=input.repository, tag=input.version)).digest
            assert digest is not None
            return ResolveResult(ref=VersionRef(version=input.version, digest=digest), candidates=1)
        tags = self.list_tags(ListTagsInput(repository=input.repository)).tags
        chosen = select(tags, SemverRange(input.semver or ""), input.prereleases, frozenset(input.held))
        if chosen is None:
            return ResolveResult(ref=None, candidates=0)
        digest = self.resolve_tag(ResolveTagInput(repository=input.repository, tag=chosen)).digest
        assert digest is not None
        return ResolveResult(ref=VersionRef(version=chosen, digest=digest), candidates=len(tags))

    @activity.defn(name="list_tags")
    def list_tags(self, input: ListTagsInput) -> ListTagsResult:
        """All tags of a repository (paginated by oras); an absent repository has no tags. Read-only."""
        reg, host, path = self._client(input.repository)
        with _classified(reg, f"list tags of {input.repository}"):
            url = f"{reg.prefix}://{host}/v2/{path}/tags/list"
            tags: list[str] = []
            while url:
                response = reg.do_request(url, "GET")
                if response.status_code == 404:
                    return ListTagsResult(tags=[])
                self._check(reg, response, url)
                tags.extend(response.json().get("tags") or [])
                link = response.links.get("next", {}).get("url")
                url = f"{reg.prefix}://{host}{link}" if link and link.startswith("/") else (link or "")
        return ListTagsResult(tags=sorted(set(tags)))

    @activity.defn(name="resolve_tag")
    def resolve_tag(self, input: ResolveTagInput) -> ResolveTagResult:
        """The manifest digest a tag points to now (HEAD, no body). NotFound unless missing_ok. Read-only."""
        reg, host, path = self._client(input.repository)
        url = f"{reg.prefix}://{host}/v2/{path}/manifests/{input.tag}"
        with _classified(reg, f"resolve {input.repository}:{input.tag}"):
            response = reg.do_request(url, "HEAD", headers={"Accept": MANIFEST_ACCEPT})
            if response.status_code == 404 and input.missing_ok:
                return ResolveTagResult(digest=None)
            if response.status_code == 404:
                raise classified(ErrorType.NOT_FOUND, f"{input.repository}:{input.tag} does not exist")
            self._check(reg, response, url)
            digest = response.headers.get("Docker-Content-Digest")
            if not digest:
                digest = self._get_manifest(reg, host, path, input.tag).digest
        return ResolveTagResult(digest=digest)

    @activity.defn(name="fetch_manifest")
    def fetch_manifest(self, input: FetchManifestInput) -> Manifest:
        """The manifest at a tag or digest, digest-verified when fetched by digest. Read-only."""
        reg, host, path = self._client(input.repository)
        with _classified(reg, f"fetch manifest {input.repository}@{input.reference}"):
            return self._get_manifest(reg, host, path, input.reference)

    @activity.defn(name="pull_artifact")
    def pull_artifact(self, input: PullArtifactInput) -> PullArtifactResult:
        """Download the layer of the given media type from the manifest at ``digest`` into ``dest_dir``,
        verifying its sha256 while streaming. Idempotent (the file is named by its digest; an existing,
        verified file is not downloaded again). Heartbeats per MiB."""
        reg, host, path = self._client(input.repository)
        with _classified(reg, f"pull {input.repository}@{input.digest}"):
            manifest = self._get_manifest(reg, host, path, input.digest)
            layer = self._pullable_layer(input, manifest)
            dest = Path(input.dest_dir)
            dest.mkdir(parents=True, exist_ok=True)
            final = dest / (layer.digest.replace(":", "-") + ".tar.gz")
            if final.is_file() and _file_digest(final) == layer.digest:
                return PullArtifactResult(path=str(final), layer_digest=layer.digest, size=layer.size,
                                          manifest=manifest)
            size = self._download(reg, f"{reg.prefix}://{host}/v2/{path}/blobs/{layer.digest}", layer, final,
                                  input.repository)
        return PullArtifactResult(path=str(final), layer_digest=layer.digest, size=size, manifest=manifest)

    def _pullable_layer(self, input: PullArtifactInput, manifest: Manifest) -> Layer:
        """The manifest's layer of ``input.layer_media_type``, refused unread unless its digest is a sha256
        digest and its declared size is within the download limit."""
        layer = manifest.layer(input.layer_media_type)
        if layer is None:
            raise classified(
                ErrorType.BAD_INPUT,
                f"{input.repository}@{input.digest} has no layer of media type {input.layer_media_type} "
                f"(it has: {', '.join(sorted({x.media_type for x in manifest.layers})) or 'none'})",
            )
        limit = self._registries.max_download_bytes
        if not is_digest(layer.digest):
            raise classified(ErrorType.BAD_INPUT, f"{input.repository}@{input.digest}: layer digest "
                                                  f"{layer.digest[:80]!r} is not a sha256 digest")
        if layer.size < 0 or layer.size > limit:
            raise classified(ErrorType.UNSAFE_ARCHIVE, f"{input.repository}@{input.digest}: layer of "
                             f"{layer.size} bytes is over the {limit}-byte download limit: refused unread")
        return layer

    def _download(self, reg: _OneShotRegistry, url: str, layer: Layer, final: Path, repository: str) -> int:
        """Stream the blob at ``url`` into ``final`` (through a partial file beside it, replaced only once its
        sha256 is the layer's digest); never more than the layer's declared size on disk. Returns its size."""
        response = reg.do_request(url, "GET", stream=True)
        self._check(reg, response, url)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > layer.size:
            response.close()
            raise classified(ErrorType.DIGEST_MISMATCH, f"blob {layer.digest} is served as {declared} bytes; "
                                                        f"the manifest says {layer.size}: refused unread")
        fd, partial = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out, contextlib.closing(response):
                size, got = _stream(response, out, layer)
            if got != layer.digest:
                raise classified(ErrorType.DIGEST_MISMATCH, f"blob {layer.digest} from {repository} hashed to {got}")
            os.replace(partial, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        return size


def _stream(response: requests.Response, out: IO[bytes], layer: Layer) -> tuple[int, str]:
    """Copy the response body to ``out`` while hashing it: (bytes written, "sha256:..."). Heartbeats per chunk."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > layer.size:
            # NB: checked before writing: never more than the declared (and capped) size on disk
            raise classified(ErrorType.DIGEST_MISMATCH, f"blob {layer.digest} is longer than the "
                                                        f"{layer.size} bytes its manifest declares")
        hasher.update(chunk)
        out.write(chunk)
        _heartbeat(size)
    return size, "sha256:" + hasher.hexdigest()


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


# ------------------------------------------------------------------------------------ signatures ---

# Bounds on what a signature lookup reads: cosign's signature manifests are ~1 KiB per signature and their
# payload blobs a few hundred bytes; anything far larger is hostile or broken.
MAX_SIGNATURE_MANIFEST = 64 * 1024
MAX_SIGNATURE_BLOB = 64 * 1024
MAX_SIGNATURE_LAYERS = 16


class _Oversized(Exception):
    pass


def _verification_failed(message: str) -> ApplicationError:
    return classified(ErrorType.VERIFICATION_FAILED, message)


def _read_bounded(reg: _OneShotRegistry, url: str, limit: int, headers: dict[str, str] | None = None
                  ) -> bytes | None:
    """GET ``url`` reading at most ``limit`` bytes while streaming: the body, None for 404, _Oversized when
    the body is larger; any other answer is raised as _RegistryHTTPError (classified by ``_classified``)."""
    response = reg.do_request(url, "GET", headers=dict(headers or {}), stream=True)
    with contextlib.closing(response):
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            snippet = next(response.iter_content(1024), b"").decode(errors="replace")
            raise _RegistryHTTPError(response.status_code, url, snippet)
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _Oversized(f"{declared} bytes")
        body = bytearray()
        for chunk in response.iter_content(8192):
            body.extend(chunk)
            if len(body) > limit:
                raise _Oversized(f"more than {limit} bytes")
        return bytes(body)


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

    def _signature_manifest(self, reg: _OneShotRegistry, host: str, path: str, tag: str
                            ) -> tuple[dict[str, Any], str] | None:
        """The signature manifest at ``tag`` and the digest of its bytes (None when absent), read with a size
        bound."""
        url = f"{reg.prefix}://{host}/v2/{path}/manifests/{tag}"
        try:
            got = _read_bounded(reg, url, MAX_SIGNATURE_MANIFEST, {"Accept": MANIFEST_ACCEPT})
        except _Oversized as err:
            raise _verification_failed(f"the signature manifest {tag} is larger than {MAX_SIGNATURE_MANIFEST} "
                                       f"bytes ({err}): refused") from None
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
                raise _verification_failed(f"unsigned: {input.repository}@{input.digest} has no signature "
                                           f"({input.repository}:{tag} does not exist)")
            manifest = found[0]
            layers = [layer for layer in manifest.get("layers", []) if isinstance(layer, dict)]
            if len(manifest.get("layers", [])) > MAX_SIGNATURE_LAYERS:
                raise _verification_failed(f"{input.repository}:{tag} has {len(manifest['layers'])} signature "
                                           f"layers, more than {MAX_SIGNATURE_LAYERS}: refused")
            reasons: list[str] = []
            for index, layer in enumerate(layers):
                outcome = self._verify_layer(reg, host, path, layer, input, tag)
                if isinstance(outcome, VerifyArtifactResult):
                    return outcome
                reasons.append(f"layer {index}: {outcome}")
            if not reasons:
                reasons.append("the signature manifest has no layers")
            raise _verification_failed(f"{input.repository}@{input.digest} is not signed by a trusted key: "
                                       + "; ".join(reasons))

    def _verify_layer(self, reg: _OneShotRegistry, host: str, path: str, layer: dict[str, Any],
                      input: VerifyArtifactInput, tag: str) -> VerifyArtifactResult | str:
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
        return VerifyArtifactResult(publisher=verified.publisher, key_name=verified.key_name,
                                    fingerprint=verified.fingerprint, signature_tag=tag)

    @activity.defn(name="sign_artifact")
    def sign_artifact(self, input: SignArtifactInput) -> SignArtifactResult:
        """Sign manifest ``input.digest`` in cosign's format with the key this process holds: push the payload
        blob, the config blob and the ``sha256-<hex>.sig`` manifest, keeping signatures already there (as
        cosign appends). Idempotent: signing is deterministic, and a signature by this key over the same
        payload is recognised and not added twice. BadInput (non-retryable) when this process holds no key or
        another key than the release was started with; RegistryUnavailable is retryable. A few small
        requests: not heartbeating, bounded by the start-to-close timeout."""
        signer = self._signer
        if signer is None:
            raise classified(ErrorType.BAD_INPUT, "this worker holds no signing key (ferry release --sign-key)")
        if input.key_fingerprint != signer.fingerprint:
            raise classified(ErrorType.BAD_INPUT, f"this worker's signing key is {signer.fingerprint}, the release "
                                                  f"asked for {input.key_fingerprint}")
        reg, host, path = self._client(input.repository)
        tag = signature_tag(input.digest)
        payload = simple_signing_payload(input.repository, input.digest, input.publisher)
        payload_digest = _sha256(payload)
        me = [PublisherKey(name="self", key=signer.public_key_pem)]
        with _classified(reg, f"sign {input.repository}@{input.digest}"):
            found = self._signature_manifest(reg, host, path, tag)
            layers: list[dict[str, Any]] = list(found[0].get("layers", [])) if found else []
            for layer in layers:
                signature = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
                if found is None or layer.get("digest") != payload_digest:
                    continue
                with contextlib.suppress(SignatureError):
                    verify_release_signature(payload, str(signature), input.digest, me)
                    return SignArtifactResult(signature_tag=tag, signature_digest=found[1],
                                              key_fingerprint=signer.fingerprint, payload_digest=payload_digest,
                                              already_signed=True)
            if len(layers) >= MAX_SIGNATURE_LAYERS:
                raise classified(ErrorType.BAD_INPUT, f"{input.repository}:{tag} already has {len(layers)} "
                                                      f"signatures; readers stop at {MAX_SIGNATURE_LAYERS}")
            self._upload_blob(reg, host, path, payload)
            layers.append({"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "size": len(payload), "digest": payload_digest,
                           "annotations": {SIGNATURE_ANNOTATION: signer.sign(payload)}})
            digest = self._push_signature_manifest(reg, host, path, tag, layers)
        return SignArtifactResult(signature_tag=tag, signature_digest=digest, key_fingerprint=signer.fingerprint,
                                  payload_digest=payload_digest)

    def _push_signature_manifest(self, reg: _OneShotRegistry, host: str, path: str, tag: str,
                                 layers: list[dict[str, Any]]) -> str:
        """PUT the signature manifest with these layers (and cosign's kind of config); its digest. NB: two
        signers appending at the same moment can lose one signature (last write wins), as with cosign."""
        # NB: the image config go-containerregistry writes for cosign's signature images.
        config = _canonical({
            "architecture": "", "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers], "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}, "config": {}})
        self._upload_blob(reg, host, path, config)
        manifest = _canonical({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": SIGNATURE_CONFIG_MEDIA_TYPE, "size": len(config), "digest": _sha256(config)},
            "layers": layers})
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


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
