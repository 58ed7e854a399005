"""The registry adapter against the real CNCF distribution registry (no mocks)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path

import oras.provider
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from activities.registry import Registries, RegistryActivities
from devstack.procs import free_port
from devstack.registry import Registry, htpasswd_line
from ferry.artifacts import FetchManifestInput, ListTagsInput, PullArtifactInput, PushArtifactInput, ResolveTagInput
from ferry.oci import ANNOTATION_REVISION, FLUX_CONFIG_MEDIA_TYPE, FLUX_CONTENT_MEDIA_TYPE
from ferry.settings import RegistrySettings
from tests.kit.pools import pool_overflowed
from tests.kit.stack import settings_for


def _blob(tmp_path: Path, content: bytes = b"kind: ConfigMap\n") -> Path:
    path = tmp_path / "bundle.tar.gz"
    path.write_bytes(content)
    return path


def _push_input(repository: str, tag: str, path: Path) -> PushArtifactInput:
    return PushArtifactInput(
        repository=repository,
        tag=tag,
        file_path=str(path),
        layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
        config_media_type=FLUX_CONFIG_MEDIA_TYPE,
        annotations={ANNOTATION_REVISION: "main@sha1:abc"},
    )


def _repo(registry: Registry) -> str:
    return f"{registry.host}/test/{uuid.uuid4().hex[:12]}"


def test_push_list_resolve_fetch_pull(registry: Registry, tmp_path: Path) -> None:
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    repo = _repo(registry)
    blob = _blob(tmp_path)
    pushed = acts.push_artifact(_push_input(repo, "1.0.0", blob))
    assert pushed.layer_digest == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    assert pushed.size == blob.stat().st_size

    assert acts.list_tags(ListTagsInput(repository=repo)).tags == ["1.0.0"]
    assert acts.resolve_tag(ResolveTagInput(repository=repo, tag="1.0.0")).digest == pushed.digest

    manifest = acts.fetch_manifest(FetchManifestInput(repository=repo, reference=pushed.digest))
    assert manifest.digest == pushed.digest
    assert manifest.config_media_type == FLUX_CONFIG_MEDIA_TYPE
    assert manifest.annotations[ANNOTATION_REVISION] == "main@sha1:abc"
    assert [layer.media_type for layer in manifest.layers] == [FLUX_CONTENT_MEDIA_TYPE]

    pulled = acts.pull_artifact(
        PullArtifactInput(
            repository=repo,
            digest=pushed.digest,
            dest_dir=str(tmp_path / "out"),
            layer_media_type=FLUX_CONTENT_MEDIA_TYPE,
        )
    )
    assert Path(pulled.path).read_bytes() == blob.read_bytes()
    assert pulled.layer_digest == pushed.layer_digest


def test_independent_oras_client_reads_what_we_pushed(registry: Registry, tmp_path: Path) -> None:
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    repo = _repo(registry)
    acts.push_artifact(_push_input(repo, "2.0.0", _blob(tmp_path)))
    plain = oras.provider.Registry(hostname=registry.host, insecure=True)
    manifest = plain.get_manifest(f"{repo}:2.0.0")
    assert manifest["config"]["mediaType"] == FLUX_CONFIG_MEDIA_TYPE
    assert manifest["layers"][0]["mediaType"] == FLUX_CONTENT_MEDIA_TYPE


def test_absent_tag_and_repository(registry: Registry, tmp_path: Path) -> None:
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    repo = _repo(registry)
    assert acts.list_tags(ListTagsInput(repository=repo)).tags == []
    assert acts.resolve_tag(ResolveTagInput(repository=repo, tag="9.9.9", missing_ok=True)).digest is None
    with pytest.raises(ApplicationError) as err:
        acts.resolve_tag(ResolveTagInput(repository=repo, tag="9.9.9"))
    assert err.value.type == "NotFound" and err.value.non_retryable
    with pytest.raises(ApplicationError) as err:
        acts.fetch_manifest(FetchManifestInput(repository=repo, reference="9.9.9"))
    assert err.value.type == "NotFound" and err.value.non_retryable


def test_pull_refuses_missing_layer_type(registry: Registry, tmp_path: Path) -> None:
    acts = RegistryActivities(Registries(settings_for(registry, tmp_path).registry))
    repo = _repo(registry)
    pushed = acts.push_artifact(_push_input(repo, "1.0.0", _blob(tmp_path)))
    with pytest.raises(ApplicationError) as err:
        acts.pull_artifact(
            PullArtifactInput(
                repository=repo,
                digest=pushed.digest,
                dest_dir=str(tmp_path / "o"),
                layer_media_type="application/x-other",
            )
        )
    assert err.value.type == "BadInput" and err.value.non_retryable
    assert FLUX_CONTENT_MEDIA_TYPE in str(err.value)


def test_stopped_registry_fails_fast_and_retryable(tmp_path: Path) -> None:
    """oras-py's own ~131 s retry loop must be off: a refused connection surfaces at once."""
    port = free_port()  # nothing listens here
    acts = RegistryActivities(Registries(RegistrySettings(insecure_hosts=[f"127.0.0.1:{port}"])))
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        acts.list_tags(ListTagsInput(repository=f"127.0.0.1:{port}/team/app"))
    assert time.monotonic() - started < 5, "oras's retry loop is still on"
    assert err.value.type == "RegistryUnavailable"
    assert not err.value.non_retryable


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    htpasswd.write_text(htpasswd_line("ci", "s3cret-pass") + "\n")
    reg = Registry(port=free_port(), root=root, htpasswd=htpasswd)
    reg.start()
    yield reg  # type: ignore[misc]
    reg.stop()


def test_htpasswd_registry_with_settings_credentials(auth_registry: Registry, tmp_path: Path) -> None:
    settings = RegistrySettings(
        insecure_hosts=[auth_registry.host],
        username="ci",
        password=SecretStr("s3cret-pass"),
        credentials_host=auth_registry.host,
    )
    acts = RegistryActivities(Registries(settings))
    repo = _repo(auth_registry)
    pushed = acts.push_artifact(_push_input(repo, "1.0.0", _blob(tmp_path)))
    assert acts.resolve_tag(ResolveTagInput(repository=repo, tag="1.0.0")).digest == pushed.digest


def test_htpasswd_registry_with_docker_config(auth_registry: Registry, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    token = base64.b64encode(b"ci:s3cret-pass").decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    acts = RegistryActivities(Registries(RegistrySettings(insecure_hosts=[auth_registry.host], docker_config=config)))
    repo = _repo(auth_registry)
    acts.push_artifact(_push_input(repo, "1.0.0", _blob(tmp_path)))
    assert acts.list_tags(ListTagsInput(repository=repo)).tags == ["1.0.0"]


@pytest.mark.parametrize("password", [None, "wrong"])
def test_htpasswd_registry_refuses_bad_credentials_non_retryably(
    auth_registry: Registry, tmp_path: Path, password: str | None
) -> None:
    settings = RegistrySettings(
        insecure_hosts=[auth_registry.host],
        docker_config=tmp_path / "none.json",
        username="ci" if password else None,
        password=SecretStr(password) if password else None,
        credentials_host=auth_registry.host,
    )
    acts = RegistryActivities(Registries(settings))
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        acts.list_tags(ListTagsInput(repository=_repo(auth_registry)))
    assert err.value.type == "Unauthorized" and err.value.non_retryable
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("connections", "discarded"), [(2, True), (24, False)])
def test_the_connection_pool_holds_one_connection_per_concurrent_caller(
    registry: Registry, tmp_path: Path, connections: int, discarded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """24 activities resolving at once (the worker's activity + local-activity slots) keep their connections to the
    registry alive when the pool is sized for them; requests' default of 10 discarded a connection 146 times in a
    2,000-environment rollout, which urllib3 reports."""
    settings = settings_for(registry, tmp_path).registry
    repo = _repo(registry)
    RegistryActivities(Registries(settings)).push_artifact(_push_input(repo, "1.0.0", _blob(tmp_path)))
    acts = RegistryActivities(Registries(settings, connections=connections))
    digests: list[str] = []

    def call() -> None:
        digests.append(acts.resolve_tag(ResolveTagInput(repository=repo, tag="1.0.0")).digest)

    assert pool_overflowed(call, caplog, callers=24, calls=3) is discarded
    assert len(digests) == 72 and len(set(digests)) == 1
