"""SOPS-encrypted releases through the reconcile activity, with the real sops and age-keygen on the real control
plane: an encrypted Secret (and a kustomize secretGenerator's encrypted .env, and a chart's encrypted values file)
decrypted on the worker and applied; drift on a Secret reverted with its keys and hashes, never its value; a
tampered file, a file for another key and a release that needs decryption its spec does not ask for refused with
nothing applied; key rotation across two recipients; and no plaintext in anything the activity returns or leaves
on disk."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api
from temporalio.exceptions import ApplicationError

from activities.bundle import BundleCache
from activities.cluster import ClusterActivities
from activities.registry import Registries, RegistryActivities
from activities.secrets.encrypt import encrypt, new_identity
from devstack.kube.session import KubeServer
from ferry.helm_spec import HelmSource
from ferry.reconcile import ReconcileInput, ReconcileResult
from ferry.settings import Settings
from tests.kit.charts import write_chart
from tests.kit.environments import publish_dir

PASSWORD = "s3cr3t-pa55word-9f2c"  # what no result, message or cache file may contain
TOKEN = "tok-7d1e5a0b8c"
SECRET = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: db
type: Opaque
stringData:
  password: {PASSWORD}
data:
  token: {base64.b64encode(TOKEN.encode()).decode()}
"""
CONFIG = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {mode: plain}\n"
KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [config.yaml]
generatorOptions: {disableNameSuffixHash: true}
secretGenerator:
  - name: api
    envs: [api.env]
"""


class SopsWorld:
    def __init__(self, settings: Settings, kube: KubeServer, tmp: Path) -> None:
        self.settings, self.kube, self.tmp = settings, kube, tmp
        suffix = uuid.uuid4().hex[:8]
        self.env, self.namespace = f"env-{suffix}", f"ns-{suffix}"
        self.repository = f"{settings.registry.default}/team/sops-{suffix}"
        self.admin = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
        self.core = CoreV1Api(self.admin)
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        self.keys = {name: tmp / "keys" / f"{name}.key" for name in ("old", "new", "other")}
        self.recipients = {name: new_identity(path) for name, path in self.keys.items()}
        self.digests: dict[str, str] = {}

    def workers(self, keys: Path | None) -> ClusterActivities:
        pull = RegistryActivities(Registries(self.settings.registry)).pull_artifact
        cache = BundleCache(self.tmp / f"cache-{uuid.uuid4().hex[:6]}", pull)
        return ClusterActivities(cache, str(self.kube.worker_kubeconfig), sops_age_keys=keys)

    def release(self, version: str, files: dict[str, str], encrypted_for: tuple[str, ...] = ("old",)) -> Path:
        """A release of ``files`` where every name containing `.enc.` is encrypted with the real sops."""
        root = self.tmp / f"release-{version}"
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if ".enc." in name:
                path.write_bytes(encrypt(path, [self.recipients[r] for r in encrypted_for]))
        self.digests[version] = publish_dir(self.settings, self.repository, version, root)
        return root

    def reconcile(
        self,
        acts: ClusterActivities,
        version: str,
        *,
        baseline: bool = False,
        dry_run: bool = False,
        decryption: Any = "sops",
        helm: HelmSource | None = None,
    ) -> ReconcileResult:
        return acts.reconcile_environment(
            ReconcileInput(
                environment=self.env,
                repository=self.repository,
                digest=self.digests[version],
                version=version,
                path=".",
                namespace=self.namespace,
                drift_baseline=baseline,
                dry_run=dry_run,
                decryption=decryption,
                helm=helm,
            )
        )

    def secret(self, name: str) -> dict[str, str] | None:
        try:
            found = self.core.read_namespaced_secret(name, self.namespace)
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}


@pytest.fixture
def world(settings: Settings, kube_server: KubeServer, tmp_path: Path) -> SopsWorld:
    return SopsWorld(settings, kube_server, tmp_path)


def _no_plaintext(result: Any) -> None:
    text = result.model_dump_json() if hasattr(result, "model_dump_json") else str(result)
    for value in (PASSWORD, TOKEN, base64.b64encode(PASSWORD.encode()).decode(), "AGE-SECRET-KEY"):
        assert value not in text, value


def test_an_encrypted_secret_is_decrypted_on_the_worker_applied_and_named_by_hash(world: SopsWorld) -> None:
    world.release("1.0.0", {"secret.enc.yaml": SECRET, "config.yaml": CONFIG})
    acts = world.workers(world.keys["old"])
    planned = world.reconcile(acts, "1.0.0", dry_run=True)
    entry = next(e for e in planned.plan if e.object == f"Secret/{world.namespace}/db")
    assert [line.split("=")[0] for line in entry.secret] == ["data.password", "data.token"]
    assert all(line.split("=", 1)[1].startswith("hmac-sha256:") for line in entry.secret)
    first = world.reconcile(acts, "1.0.0")
    assert f"Secret/{world.namespace}/db" in first.changes.created
    assert world.secret("db") == {"password": PASSWORD, "token": TOKEN}
    assert first.changes.secrets[f"Secret/{world.namespace}/db"] == entry.secret  # one key, one hash per value
    _no_plaintext(planned)
    _no_plaintext(first)
    assert not world.reconcile(acts, "1.0.0", baseline=True).changes.changed
    # the worker's cache holds the ciphertext it pulled and nothing decrypted
    for path in acts._cache.directory.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_drift_on_a_secret_is_reverted_and_recorded_by_key_and_hash_only(world: SopsWorld) -> None:
    world.release("1.0.0", {"secret.enc.yaml": SECRET})
    acts = world.workers(world.keys["old"])
    first = world.reconcile(acts, "1.0.0")
    world.core.patch_namespaced_secret("db", world.namespace, {"stringData": {"password": "changed-by-hand"}})
    reverted = world.reconcile(acts, "1.0.0", baseline=True)
    key = f"Secret/{world.namespace}/db"
    hashed = dict(line.split("=", 1) for line in first.changes.secrets[key])
    assert reverted.changes.drift.get(key) == [f".data.password={hashed['data.password']}"], reverted.changes.drift
    assert reverted.changes.secrets[key] == first.changes.secrets[key]
    assert world.secret("db") == {"password": PASSWORD, "token": TOKEN}
    _no_plaintext(reverted)
    assert "changed-by-hand" not in reverted.model_dump_json()


def test_a_kustomize_secret_generator_reads_an_encrypted_env_file(world: SopsWorld) -> None:
    world.release(
        "1.0.0",
        {
            "kustomization.yaml": KUSTOMIZATION.replace("api.env", "api.enc.env"),
            "config.yaml": CONFIG,
            "api.enc.env": f"API_KEY={PASSWORD}\n",
        },
    )
    result = world.reconcile(world.workers(world.keys["old"]), "1.0.0")
    assert f"Secret/{world.namespace}/api" in result.changes.created
    assert world.secret("api") == {"API_KEY": PASSWORD}
    _no_plaintext(result)


def test_a_charts_encrypted_values_file_is_rendered_and_never_cached(world: SopsWorld) -> None:
    root = world.tmp / "chart-release"
    (root / "charts").mkdir(parents=True)
    template = (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: {{ .Release.Name }}-db}\n"
        "stringData: {password: {{ .Values.db.password | quote }}}\n"
    )
    write_chart(root / "charts", templates={"secret.yaml": template})
    files = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}
    files["values/prod.enc.yaml"] = f"db:\n  password: {PASSWORD}\n"
    world.release("1.0.0", files)
    acts = world.workers(world.keys["old"])
    helm = HelmSource(chart="charts/shop", release_name="shop", values_files=["values/prod.enc.yaml"])
    result = world.reconcile(acts, "1.0.0", helm=helm)
    assert f"Secret/{world.namespace}/shop-db" in result.changes.created
    assert world.secret("shop-db") == {"password": PASSWORD}
    _no_plaintext(result)
    renders = acts._cache.directory / "renders"
    assert not renders.exists() or not any(renders.iterdir()), "a decrypted render must not be cached"


def test_a_tampered_file_is_refused_on_the_record_and_the_previous_release_kept(world: SopsWorld) -> None:
    world.release("1.0.0", {"secret.enc.yaml": SECRET})
    acts = world.workers(world.keys["old"])
    world.reconcile(acts, "1.0.0")
    root = world.tmp / "tampered"
    good = world.tmp / "release-1.0.0" / "secret.enc.yaml"
    (root).mkdir()
    text = good.read_text()
    at = text.index("password: ENC[AES256_GCM,data:") + len("password: ENC[AES256_GCM,data:")
    swapped = "A" if text[at] != "A" else "B"
    (root / "secret.enc.yaml").write_text(text[:at] + swapped + text[at + 1 :])
    world.digests["1.1.0"] = publish_dir(world.settings, world.repository, "1.1.0", root)
    with pytest.raises(ApplicationError) as refused:
        world.reconcile(acts, "1.1.0", baseline=True)
    assert refused.value.type == "DecryptionFailed" and refused.value.non_retryable
    assert "secret.enc.yaml" in refused.value.message and "nothing was applied" in refused.value.message
    _no_plaintext(refused.value.message)
    assert world.secret("db") == {"password": PASSWORD, "token": TOKEN}


def test_a_file_for_another_key_is_refused_naming_its_recipient(world: SopsWorld) -> None:
    world.release("1.0.0", {"secret.enc.yaml": SECRET, "config.yaml": CONFIG}, encrypted_for=("other",))
    with pytest.raises(ApplicationError) as refused:
        world.reconcile(world.workers(world.keys["old"]), "1.0.0")
    assert refused.value.type == "DecryptionFailed"
    message = refused.value.message
    assert "secret.enc.yaml" in message and world.recipients["other"] in message
    assert world.recipients["old"] in message  # what the worker can decrypt for
    assert "AGE-SECRET-KEY" not in message
    assert world.core.list_namespaced_config_map(world.namespace).items == [] or all(
        c.metadata.name == "kube-root-ca.crt" for c in world.core.list_namespaced_config_map(world.namespace).items
    ), "nothing applied"


def test_ciphertext_is_never_applied_without_decryption_in_the_spec(world: SopsWorld) -> None:
    world.release("1.0.0", {"secret.enc.yaml": SECRET})
    with pytest.raises(ApplicationError) as refused:
        world.reconcile(world.workers(world.keys["old"]), "1.0.0", decryption=None)
    assert refused.value.type == "DecryptionFailed"
    assert "decryption: {provider: sops}" in refused.value.message
    assert world.secret("db") is None
    with pytest.raises(ApplicationError) as no_keys:
        world.reconcile(world.workers(None), "1.0.0")
    assert no_keys.value.type == "DecryptionFailed" and "FERRY_SOPS_AGE_KEYS" in no_keys.value.message


def test_key_rotation_a_release_for_two_recipients_applies_with_either_key(world: SopsWorld) -> None:
    world.release("1.0.0", {"secret.enc.yaml": SECRET}, encrypted_for=("old", "new"))
    assert f"Secret/{world.namespace}/db" in world.reconcile(world.workers(world.keys["old"]), "1.0.0").changes.created
    # the old key retired from the worker: the release re-encrypted for both still applies with the new one
    rotated = world.reconcile(world.workers(world.keys["new"]), "1.0.0", baseline=True)
    assert not rotated.changes.changed
    assert world.secret("db") == {"password": PASSWORD, "token": TOKEN}
    # a directory of identities (both keys) decrypts too
    both = world.tmp / "keys"
    world.keys["other"].unlink()
    assert not world.reconcile(world.workers(both), "1.0.0", baseline=True).changes.changed


def test_an_unchanged_iteration_runs_no_sops_and_other_identities_decrypt_anew(
    world: SopsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import activities.secrets.decrypt as decrypt

    runs: list[str] = []
    real = decrypt._decrypt

    def counted(file: Any, *args: Any) -> bytes:
        runs.append(file.path)
        return real(file, *args)

    monkeypatch.setattr(decrypt, "_decrypt", counted)
    world.release("1.0.0", {"secret.enc.yaml": SECRET, "other.enc.yaml": SECRET.replace("name: db", "name: db2")})
    acts = world.workers(world.keys["old"])
    world.reconcile(acts, "1.0.0")
    assert sorted(runs) == ["other.enc.yaml", "secret.enc.yaml"]
    assert not world.reconcile(acts, "1.0.0", baseline=True).changes.changed
    assert len(runs) == 2, "the worker remembers what it decrypted for this release and these identities"
    world.release("1.0.1", {"secret.enc.yaml": SECRET}, encrypted_for=("old", "new"))
    both = world.workers(world.keys["old"])
    world.reconcile(both, "1.0.1", baseline=True)
    world.reconcile(both, "1.0.1", baseline=True)
    assert len(runs) == 3
    # the same release (the same cache entry) under other identities is decrypted again, by them
    both._sops_age_keys = world.keys["new"]
    world.reconcile(both, "1.0.1", baseline=True)
    assert len(runs) == 4


def test_a_large_release_is_linked_beside_the_cache_and_every_private_copy_is_removed(
    world: SopsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    import activities.secrets.decrypt as decrypt

    monkeypatch.setattr(decrypt, "MAX_IN_MEMORY_RELEASE", 0)  # every release is "large"
    world.release("1.0.0", {"secret.enc.yaml": SECRET, "config.yaml": CONFIG})
    acts = world.workers(world.keys["old"])
    stale = acts._cache.directory / f"{decrypt.PRIVATE_PREFIX}left-by-a-killed-worker"
    stale.mkdir(parents=True)
    os.utime(stale, (0, 0))
    assert f"Secret/{world.namespace}/db" in world.reconcile(acts, "1.0.0").changes.created
    assert world.secret("db") == {"password": PASSWORD, "token": TOKEN}
    assert not list(acts._cache.directory.glob(f"{decrypt.PRIVATE_PREFIX}*")), "copies removed, the stale one too"
    cached = next(acts._cache.directory.rglob("secret.enc.yaml"))
    assert b"ENC[AES256_GCM" in cached.read_bytes(), "the cached file is still the ciphertext"


def test_identities_come_from_the_environments_entry_then_the_clusters_then_the_workers(tmp_path: Path) -> None:
    from ferry.clusters import ClustersFile

    clusters = ClustersFile.model_validate(
        {
            "clusters": {
                "default": {"kubeconfig": "/k", "sops-age-keys": "/age/cluster"},
                "prod-eu": {
                    "kubeconfig": "/k2",
                    "environments": {"payments": {"namespaces": ["payments"], "sops-age-keys": "/age/payments"}},
                },
            }
        }
    )
    acts = ClusterActivities(BundleCache(tmp_path, None), None, clusters, sops_age_keys=Path("/age/worker"))

    def keys(environment: str, cluster: str) -> Path | None:
        return acts.age_keys_for(
            ReconcileInput(
                environment=environment,
                repository="r/x",
                digest="sha256:" + "0" * 64,
                version="1.0.0",
                path=".",
                namespace="payments",
                cluster=cluster,
            )
        )

    assert keys("payments", "prod-eu") == Path("/age/payments")
    assert keys("shop", "prod-eu") == Path("/age/worker")
    assert keys("shop", "default") == keys("shop", "") == Path("/age/cluster")
