"""examples/charts/shop, the example chart, through the real helm v4.3.2 (`make helm`): it lints, renders through
activities.helm.render.render_chart with each environment's values file (CRDs, manifests and hooks split as Helm
installs them; the values' effect), its ShopCache is valid for its own CRD on the real API server, and
examples/environments-helm.yaml loads through `ferry env apply`'s loader and names files that exist in the release.

No skip: a missing helm fails every test here with the `make helm` hint."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from activities.helm.binary import helm_path
from activities.helm.render import helm_env, render_chart
from activities.manifests import BundleError
from cli.demo_support import make_keys
from cli.environments import load_environments
from ferry.helm_render import HelmRenderInput, Rendered
from ferry.helm_spec import HelmSource

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # the release root: `ferry release examples`
CHART = EXAMPLES / "charts" / "shop"
ENVIRONMENTS = EXAMPLES / "environments-helm.yaml"
VALUES = {env: f"charts/shop/values/{env}.yaml" for env in ("staging", "production")}


@pytest.fixture(scope="module")
def helm() -> Path:
    """The helm the adapter runs: HelmMissing naming `make helm` when it is not built (a failure, never a skip; the
    render tests meet the same error from render_chart)."""
    return helm_path()


def render(env: str, **update: Any) -> Rendered:
    input = HelmRenderInput(
        release_name="shop", namespace=env, kube_version="v1.35.4", values_files=[VALUES[env]]
    ).model_copy(update=update)
    return render_chart(CHART, input, root=EXAMPLES)


def by_kind(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {m.object["kind"]: m.object for m in rendered.manifests}


@pytest.mark.parametrize("env", ["staging", "production"])
def test_helm_lint_passes_with_each_values_file(helm: Path, env: str) -> None:
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "docker").mkdir()
        run = subprocess.run(
            [str(helm), "lint", str(CHART), "--strict", f"--values={EXAMPLES / VALUES[env]}"],
            env=helm_env(Path(home)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 chart(s) failed" in run.stdout


@pytest.mark.parametrize("env", ["staging", "production"])
def test_the_render_splits_crds_manifests_and_hooks(env: str) -> None:
    started = time.monotonic()
    out = render(env)
    print(f"{env}: render {time.monotonic() - started:.3f} s, {out.count} objects")
    assert [c.object["metadata"]["name"] for c in out.crds] == ["shopcaches.shop.example.com"]
    assert [c.source for c in out.crds] == ["shop/crds/shopcaches.yaml"]
    assert sorted(by_kind(out)) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ShopCache"]
    assert all(m.object["metadata"]["namespace"] == env for m in out.manifests)
    assert out.dropped == ()
    [hook] = out.hooks
    assert (hook.kind, hook.name, hook.path) == ("Job", "shop-migrate", "shop/templates/migrate-job.yaml")
    assert hook.events == ("pre-install", "pre-upgrade")
    assert hook.weight == -5
    assert hook.delete_policies == ("before-hook-creation", "hook-succeeded")
    assert not hook.is_test
    pvc = by_kind(out)["PersistentVolumeClaim"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_the_values_files_make_the_environments_differ() -> None:
    staging, production = by_kind(render("staging")), by_kind(render("production"))
    assert staging["Deployment"]["spec"]["replicas"] == 1
    assert production["Deployment"]["spec"]["replicas"] == 3
    assert staging["ConfigMap"]["data"]["message"] == "Hello from staging"
    assert production["ConfigMap"]["data"]["message"] == "Hello from production"
    assert (staging["ShopCache"]["spec"], production["ShopCache"]["spec"]) == (
        {"size": 64, "ttl": "5m"},
        {"size": 512, "ttl": "30m"},
    )
    assert production["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    # A config change rolls the pods: the ConfigMap's checksum is in the pod template.
    checksum = "checksum/config"
    assert (
        staging["Deployment"]["spec"]["template"]["metadata"]["annotations"][checksum]
        != production["Deployment"]["spec"]["template"]["metadata"]["annotations"][checksum]
    )
    image = production["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/stefanprodan/podinfo:6.5.0"  # the image examples/app delivers


def test_a_missing_message_is_refused_with_helms_required_message() -> None:
    with pytest.raises(BundleError, match="message is required"):
        render("staging", values={"message": None})


def test_the_shopcache_is_valid_for_its_crd_on_the_real_api_server(kube_api: object, namespace: str) -> None:
    import kubernetes

    out = render("production", namespace=namespace)
    ext = kubernetes.client.ApiextensionsV1Api(kube_api)
    crd = out.crds[0].object
    ext.create_custom_resource_definition(crd)
    deadline = time.monotonic() + 30
    while not any(
        c.type == "Established" and c.status == "True"
        for c in ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []
    ):
        assert time.monotonic() < deadline, "the example CRD never became Established"
        time.sleep(0.2)
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    cr = by_kind(out)["ShopCache"]

    def create(body: dict[str, Any]) -> object:
        return custom.create_namespaced_custom_object(
            "shop.example.com", "v1", namespace, "shopcaches", body, dry_run="All"
        )

    try:
        create(cr)  # accepted by the CRD's schema (a dry run: nothing is stored)
        for bad in ({"size": 0}, {"size": 64, "ttl": "forever"}):  # the schema bites: the check can fail
            with pytest.raises(kubernetes.client.ApiException) as err:
                create({**cr, "spec": bad})
            assert err.value.status == 422
    finally:
        ext.delete_custom_resource_definition(crd["metadata"]["name"])


def test_the_environments_file_loads_and_names_files_in_the_release(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    text = ENVIRONMENTS.read_text()
    for name, value in {
        "REPOSITORY": "localhost:5000/examples/shop",
        "RELEASE_PUBLIC_KEY": keys["release.pub"].read_text(),
        "SRE_ALICE_KEY": Path(f"{keys['sre-alice']}.pub").read_text().strip(),
        "SRE_BOB_KEY": Path(f"{keys['sre-bob']}.pub").read_text().strip(),
    }.items():
        text = text.replace("${" + name + "}", json.dumps(value)[1:-1])  # as `make demo` fills them
    filled = tmp_path / "environments.yaml"
    filled.write_text(text)
    staging, production = load_environments(filled)  # what `ferry env apply -f` reads
    assert (staging.name, staging.semver, staging.version) == ("shop-staging", ">=1.0.0", None)
    assert (production.name, production.version, production.approval.required) == ("shop-production", "1.0.0", True)
    assert production.approval.requires_healthy_in == ["shop-staging"]
    assert production.verify is not None and [p.name for p in production.verify.publishers] == ["ci-main"]
    for spec in (staging, production):
        assert spec.helm is not None and spec.cluster_kinds == ["CustomResourceDefinition"]
        source = HelmSource.of(spec.helm, spec.name, spec.path)
        assert (source.chart, source.manifests, source.release_name) == ("charts/shop", "", "shop")
        env = spec.name.removeprefix("shop-")
        assert source.values_files == [VALUES[env]]
        rendered = render_chart(
            EXAMPLES / source.chart,
            HelmRenderInput(
                release_name=source.release_name,
                namespace=spec.namespace,
                kube_version="v1.35.4",
                values_files=source.values_files,
                values=source.values,
            ),
            root=EXAMPLES,
        )
        message = by_kind(rendered)["ConfigMap"]["data"]["message"]
        assert message == {"staging": "Hello from staging", "production": "Hello from production (approved)"}[env]
