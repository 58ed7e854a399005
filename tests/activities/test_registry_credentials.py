"""Registry credentials per host, and bounded downloads, against real registries (htpasswd ones included) seen
through a proxy that records what each host was sent."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from temporalio.exceptions import ApplicationError

from activities.registry import Registries, RegistryActivities, normalize_auth_key
from devstack.procs import free_port
from devstack.registry import Registry, htpasswd_line
from ferry.artifacts import ListTagsInput, PullArtifactInput, PushArtifactInput
from ferry.oci import FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE
from ferry.settings import RegistrySettings
from tests.activities.recording_proxy import RecordingProxy

PASSWORD = "s3cret-pass-for-A-only"


def _htpasswd_registry(root: Path, user: str, password: str) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    (root / "htpasswd").write_text(htpasswd_line(user, password) + "\n")
    reg = Registry(port=free_port(), root=root, htpasswd=root / "htpasswd")
    reg.start()
    return reg


@pytest.fixture(scope="module")
def registry_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry the worker has credentials for."""
    reg = _htpasswd_registry(tmp_path_factory.mktemp("reg-a"), "ci", PASSWORD)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def registry_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A second real htpasswd registry, on another port, for which the worker was given nothing."""
    reg = _htpasswd_registry(tmp_path_factory.mktemp("reg-b"), "someone-else", "other")
    yield reg
    reg.stop()


@pytest.fixture
def proxy_b(registry_b: Registry) -> Iterator[RecordingProxy]:
    with RecordingProxy(registry_b.host) as proxy:
        yield proxy


def _blob(tmp_path: Path, size: int = 64) -> Path:
    path = tmp_path / f"blob-{uuid.uuid4().hex[:6]}.tar.gz"
    path.write_bytes(os.urandom(size))
    return path


def _push(acts: RegistryActivities, repo: str, path: Path) -> str:
    return acts.push_artifact(
        PushArtifactInput(
            repository=repo,
            tag="1.0.0",
            file_path=str(path),
            layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
            config_media_type=FLUX_CONFIG_MEDIA_TYPE,
        )
    ).digest


def _docker_config(tmp_path: Path, body: dict[str, object]) -> Path:
    path = tmp_path / "docker" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(body))
    return path


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_are_never_sent_to_an_unlisted_host(
    registry_a: Registry, proxy_b: RecordingProxy, tmp_path: Path
) -> None:
    """Issue 11: the worker answered every registry's 401 with FERRY_REGISTRY_USERNAME/PASSWORD, whatever host
    an environment or release named. Registry B (real, htpasswd, another port) must get no Authorization
    header at all, whether the credentials come from settings or a docker config."""
    config = _docker_config(tmp_path, {"auths": {registry_a.host: {"auth": _auth("ci", PASSWORD)}}})
    settings = RegistrySettings(
        insecure_hosts=[registry_a.host, proxy_b.host],
        username="ci",
        password=SecretStr(PASSWORD),
        credentials_host=registry_a.host,
        docker_config=config,
        request_timeout_seconds=5,
    )
    acts = RegistryActivities(Registries(settings))
    _push(acts, f"{registry_a.host}/team/app", _blob(tmp_path))  # A: the credentials work
    with pytest.raises(ApplicationError) as err:
        acts.list_tags(ListTagsInput(repository=f"{proxy_b.host}/team/app"))
    assert err.value.type == "Unauthorized" and err.value.non_retryable
    assert proxy_b.seen, "registry B was asked"
    assert proxy_b.authorizations() == []
    assert all(PASSWORD not in json.dumps(s.headers) for s in proxy_b.seen)


def test_a_url_on_another_host_gets_no_credentials(registry_a: Registry, proxy_b: RecordingProxy) -> None:
    """A Link or Location header from registry A naming another host: the request goes without credentials
    and its 401 is not answered."""
    settings = RegistrySettings(
        insecure_hosts=[registry_a.host],
        username="ci",
        password=SecretStr(PASSWORD),
        credentials_host=registry_a.host,
        request_timeout_seconds=5,
    )
    reg = Registries(settings).client(registry_a.host)
    assert reg.do_request(f"http://{registry_a.host}/v2/", "GET").status_code == 200
    answer = reg.do_request(f"http://{proxy_b.host}/v2/", "GET", headers={"Authorization": "Basic leak"})
    assert answer.status_code == 401
    assert [s.path for s in proxy_b.seen] == ["/v2/"]
    assert proxy_b.authorizations() == []


def test_username_and_password_are_for_one_named_host() -> None:
    with pytest.raises(ValidationError, match="FERRY_REGISTRY_CREDENTIALS_HOST"):
        RegistrySettings(username="ci", password=SecretStr("x"))
    with pytest.raises(ValidationError, match="go together"):
        RegistrySettings(username="ci", default="r.example.com")
    assert RegistrySettings(username="ci", password=SecretStr("x"), default="r.example.com").credentials_for == (
        "r.example.com"
    )
    registries = Registries(
        RegistrySettings(
            username="ci",
            password=SecretStr("x"),
            credentials_host="a.example",
            docker_config=Path("/nonexistent/config.json"),
        )
    )
    assert registries.credentials("a.example") == ("ci", "x")
    assert registries.credentials("A.example") == ("ci", "x")
    assert registries.credentials("b.example") is None
    assert registries.credentials("a.example:5000") is None


@pytest.mark.parametrize("key", ["{host}", "http://{host}", "https://{host}/v1/", "{host}/some/path"])
def test_docker_config_auths_keys_match_as_docker_matches_them(registry_a: Registry, tmp_path: Path, key: str) -> None:
    config = _docker_config(
        tmp_path,
        {
            "auths": {
                key.format(host=registry_a.host): {"auth": _auth("ci", PASSWORD)},
                "other.example:5000": {"auth": _auth("x", "y")},
            }
        },
    )
    acts = RegistryActivities(
        Registries(RegistrySettings(insecure_hosts=[registry_a.host], docker_config=config, request_timeout_seconds=5))
    )
    _push(acts, f"{registry_a.host}/team/{uuid.uuid4().hex[:8]}", _blob(tmp_path))


def test_docker_hub_keys() -> None:
    assert normalize_auth_key("https://index.docker.io/v1/") == normalize_auth_key("registry-1.docker.io")
    assert normalize_auth_key("docker.io") == "docker.io"
    assert normalize_auth_key("ghcr.io") != normalize_auth_key("docker.io")


@pytest.fixture
def credential_helper(tmp_path: Path, registry_a: Registry, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real docker credential helper (docker's protocol: `get`, the host on stdin, JSON out) that knows only
    registry A and logs every host it was asked about."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "helper.log"
    helper = bin_dir / "docker-credential-ferrytest"
    helper.write_text(f"""#!/bin/sh
read host
echo "$1 $host" >> {log}
if [ "$host" = "{registry_a.host}" ]; then
  printf '{{"ServerURL":"%s","Username":"ci","Secret":"{PASSWORD}"}}' "$host"
else
  echo "credentials not found in native keychain"; exit 1
fi
""")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.parametrize("how", ["credHelpers", "credsStore"])
def test_credential_helpers_are_asked_for_their_own_host(
    registry_a: Registry, proxy_b: RecordingProxy, tmp_path: Path, credential_helper: Path, how: str
) -> None:
    body: dict[str, object] = (
        {"credHelpers": {registry_a.host: "ferrytest"}} if how == "credHelpers" else {"credsStore": "ferrytest"}
    )
    settings = RegistrySettings(
        insecure_hosts=[registry_a.host, proxy_b.host],
        request_timeout_seconds=5,
        docker_config=_docker_config(tmp_path, body),
    )
    acts = RegistryActivities(Registries(settings))
    _push(acts, f"{registry_a.host}/team/{uuid.uuid4().hex[:8]}", _blob(tmp_path))
    with pytest.raises(ApplicationError) as err:
        acts.list_tags(ListTagsInput(repository=f"{proxy_b.host}/team/app"))
    assert err.value.type == "Unauthorized"
    assert proxy_b.authorizations() == []
    asked = credential_helper.read_text().split("\n")
    assert f"get {registry_a.host}" in asked
    # a credsStore is asked for any host and answers for its own; credHelpers are asked only for theirs
    assert (f"get {proxy_b.host}" in asked) == (how == "credsStore")


# ------------------------------------------------------------------------------------ download bounds ---


def test_download_over_the_cap_is_refused_before_reading(registry: Registry, tmp_path: Path) -> None:
    """Issue 11: downloads had no size cap before the digest check. The manifest's declared layer size is
    checked against the worker's maximum before the blob is requested at all."""
    with RecordingProxy(registry.host) as proxy:
        settings = RegistrySettings(
            insecure_hosts=[proxy.host], request_timeout_seconds=5, max_download_bytes=1024 * 1024
        )
        acts = RegistryActivities(Registries(settings))
        repo = f"{proxy.host}/team/{uuid.uuid4().hex[:8]}"
        digest = _push(acts, repo, _blob(tmp_path, 2 * 1024 * 1024))
        proxy.seen.clear()
        with pytest.raises(ApplicationError) as err:
            acts.pull_artifact(
                PullArtifactInput(
                    repository=repo,
                    digest=digest,
                    dest_dir=str(tmp_path / "out"),
                    layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
                )
            )
        assert err.value.type == "UnsafeArchive" and err.value.non_retryable
        assert "over the 1048576-byte download limit" in str(err.value)
        assert not any("/blobs/" in s.path for s in proxy.seen), "the blob was requested"
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_blob_longer_than_its_manifest_declares_is_refused_while_reading(registry: Registry, tmp_path: Path) -> None:
    """A manifest that under-declares its layer's size cannot make the worker read more than it declared."""
    settings = RegistrySettings(insecure_hosts=[registry.host], request_timeout_seconds=5)
    acts = RegistryActivities(Registries(settings))
    repo = f"{registry.host}/team/{uuid.uuid4().hex[:8]}"
    data = os.urandom(300_000)
    layer = "sha256:" + hashlib.sha256(data).hexdigest()
    reg = Registries(settings).client(registry.host)
    for blob in (data, b"{}"):
        started = reg.do_request(f"http://{registry.host}/v2/{repo.split('/', 1)[1]}/blobs/uploads/", "POST")
        location = started.headers["Location"]
        location = location if location.startswith("http") else f"http://{registry.host}{location}"
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        sep = "&" if "?" in location else "?"
        assert reg.do_request(f"{location}{sep}digest={digest}", "PUT", data=blob).status_code == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": FLUX_CONFIG_MEDIA_TYPE,
                "size": 2,
                "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
            },
            "layers": [{"mediaType": FLUX_CONTENT_MEDIA_TYPE, "size": 1000, "digest": layer}],
        }
    ).encode()
    put = reg.do_request(
        f"http://{registry.host}/v2/{repo.split('/', 1)[1]}/manifests/1.0.0",
        "PUT",
        data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert put.status_code == 201, put.text
    with pytest.raises(ApplicationError) as err:
        acts.pull_artifact(
            PullArtifactInput(
                repository=repo,
                digest="sha256:" + hashlib.sha256(manifest).hexdigest(),
                dest_dir=str(tmp_path / "out"),
                layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
            )
        )
    assert err.value.type == "DigestMismatch" and err.value.non_retryable
    assert "the manifest says 1000" in str(err.value) or "longer than the 1000 bytes" in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


class _TokenRegistry:
    """A registry front that speaks the token protocol (401 with `Bearer realm=…`) and a token endpoint, both
    recording the headers they get; the realm may be named on this host or on another one."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.seen: list[tuple[str, str, str | None]] = []  # (host, path, Authorization)
        self.realm_host = ""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                me = f"127.0.0.1:{self.server.server_address[1]}"  # type: ignore[index]
                outer.seen.append((me, self.path, self.headers.get("Authorization")))
                if self.path.startswith("/token"):
                    self._answer(200, {"token": "tok-" + me})
                elif self.headers.get("Authorization", "").startswith("Bearer tok-"):
                    self._answer(200, {"name": "team/app", "tags": ["1.0.0"]})
                else:
                    self._answer(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED"}]},
                        {
                            "WWW-Authenticate": (
                                f'Bearer realm="http://{outer.realm_host}/token",service="reg",'
                                'scope="repository:team/app:pull"'
                            )
                        },
                    )

            def _answer(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.registry, self.elsewhere = (f"127.0.0.1:{s.server_address[1]}" for s in self.servers)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("realm_on", ["registry", "elsewhere"])
def test_a_token_realm_on_another_host_gets_no_credentials(realm_on: str) -> None:
    """The registry's 401 names the token server; the registry's credentials go there only when it is the
    registry's own host. A realm elsewhere is asked anonymously."""
    front = _TokenRegistry()
    try:
        front.realm_host = front.registry if realm_on == "registry" else front.elsewhere
        settings = RegistrySettings(
            insecure_hosts=[front.registry],
            username="ci",
            password=SecretStr(PASSWORD),
            credentials_host=front.registry,
            request_timeout_seconds=5,
        )
        acts = RegistryActivities(Registries(settings))
        tags = acts.list_tags(ListTagsInput(repository=f"{front.registry}/team/app"))
        assert tags.tags == ["1.0.0"]
        token_requests = [auth for host, path, auth in front.seen if path.startswith("/token")]
        assert len(token_requests) == 1
        basic = "Basic " + _auth("ci", PASSWORD)
        assert token_requests == ([basic] if realm_on == "registry" else [None])
        assert not any(auth for host, _, auth in front.seen if host == front.elsewhere)
    finally:
        front.close()
