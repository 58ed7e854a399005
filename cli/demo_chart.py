"""`make demo`, the Helm chart part: the same gate for a chart (cli/demo.py runs these steps after the main story).

CI releases a config repository that holds examples/charts/shop as a signed Ferry release. shop-staging follows the
range, rendering the chart with its staging values. shop-production is pinned: the chart's new version moves there
only on a signed approval, and so does a change of its values (`ferry diff --pending` renders it first).
"""

from __future__ import annotations

import shutil

from cli.demo_support import (
    FERRY,
    PUBLISHER,
    ROOT,
    SRE,
    Story,
    applied,
    ferry_json,
    fill_environments,
    revision,
    run,
    step,
    wait,
)
from workers.wiring import script_path

STAGING, PRODUCTION = "shop-staging", "shop-production"
CRD_GROUP = "shop.example.com"  # examples/charts/shop/crds/shopcaches.yaml
CHART_WORKFLOWS = (f"env/{STAGING}", f"env/{PRODUCTION}", f"promote/{PRODUCTION}/1.1.0")
# What the operator applies once: the environments' namespaces (a chart does not create its release namespace) and
# the worker's rights on the chart's custom resources (examples/rbac/ferry-worker.yaml's commented example).
OPERATOR_SETUP = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {STAGING}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {PRODUCTION}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: ferry-worker-{CRD_GROUP}}}
rules:
  - apiGroups: [{CRD_GROUP}]
    resources: ["*"]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: ferry-worker-{CRD_GROUP}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ferry-worker-{CRD_GROUP}}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: ferry-worker}}]
"""


def chart_repository(story: Story) -> str:
    return f"{story.repository}-chart"


def kubectl(story: Story, *args: str, check: bool = True, show: bool = True) -> str:
    argv = [script_path("kubectl") or "kubectl", "--kubeconfig", story.info.components["kube"]["kubeconfig"], *args]
    return run(argv, check=check, show=show).stdout


def release_chart(story: Story, version: str, image_tag: str) -> None:
    """A config repository holding the chart (charts/shop), released signed like any directory."""
    repo = story.tmp / f"shop-config-{version}"
    shutil.copytree(ROOT / "examples" / "charts", repo / "charts")
    values = repo / "charts" / "shop" / "values.yaml"
    values.write_text(values.read_text().replace('tag: "6.5.0"', f'tag: "{image_tag}"'))
    chart = repo / "charts" / "shop" / "Chart.yaml"
    chart.write_text(chart.read_text().replace("appVersion: ", f"# released as {version}\nappVersion: ", 1))
    out = ferry_json(
        "release",
        str(repo),
        "--repository",
        chart_repository(story),
        "--version",
        version,
        "--published-by",
        PUBLISHER,
        "--revision",
        revision(version),
        "--sign-key",
        str(story.keys["release"]),
    )
    print(f"released {chart_repository(story)}:{version} -> {out['digest']}\n  {out['temporal_ui']}")


def declare_chart_environments(story: Story) -> None:
    step(
        "15. a Helm chart through the same gate: CI releases a config repository holding examples/charts/shop "
        "(1.0.0, signed); an operator creates the namespaces and lets the worker write the chart's custom resources"
    )
    release_chart(story, "1.0.0", "6.5.0")
    setup = story.tmp / "operator-setup.yaml"
    setup.write_text(OPERATOR_SETUP)
    kubectl(story, "apply", "--server-side", "-f", str(setup))
    step(
        "16. declare shop-staging (tracks >=1.0.0, staging values) and shop-production (pinned, signed approval): "
        "examples/environments-helm.yaml; each renders the chart for the cluster, runs its pre-install hook Job, "
        "applies its CRD before the ShopCache"
    )
    environments = story.tmp / "environments-helm.yaml"
    environments.write_text(fill_environments(chart_repository(story), story.keys, "environments-helm.yaml"))
    run([*FERRY, "env", "apply", "-f", str(environments)])
    for name in (STAGING, PRODUCTION):
        wait(f"{name} on 1.0.0", lambda name=name: applied(name, "1.0.0"))
    kubectl(story, "get", "deployment,configmap,shopcache,pvc,job", "-n", PRODUCTION)  # the hook Job: run, deleted


def promote_chart(story: Story) -> None:
    step("17. CI releases the chart's 1.1.0: shop-staging follows by itself; shop-production waits for approval")
    release_chart(story, "1.1.0", "6.5.1")
    wait(f"{STAGING} on 1.1.0", lambda: applied(STAGING, "1.1.0"))
    run([*FERRY, "promote", PRODUCTION, "1.1.0", "--as", "carol", "--reason", "chart 1.1.0"])
    run([*FERRY, "approve", PRODUCTION, "1.1.0", "--as", SRE, "--key", str(story.keys[SRE])])
    wait(f"{PRODUCTION} on 1.1.0", lambda: applied(PRODUCTION, "1.1.0"))
    run([*FERRY, "status", PRODUCTION])


def change_production_values(story: Story) -> None:
    step(
        "18. someone changes production's values (replicaCount 5): a protected field, so it waits for a signed "
        "approval; `ferry diff --pending` shows what the rendered chart would change"
    )
    environments = story.tmp / "environments-helm.yaml"
    text = environments.read_text().replace(
        'values: {message: "Hello from production (approved)"}',
        'values: {message: "Hello from production (approved)", replicaCount: 5}',
    )
    environments.write_text(text)
    run([*FERRY, "env", "apply", "-f", str(environments), "--as", "carol"])
    run([*FERRY, "diff", PRODUCTION, "--pending"])
    run([*FERRY, "env", "approve", PRODUCTION, "--as", SRE, "--key", str(story.keys[SRE])])
    wait(
        f"{PRODUCTION} at 5 replicas",
        lambda: (
            kubectl(story, "get", "deployment/shop", "-n", PRODUCTION, "-o", "jsonpath={.spec.replicas}", show=False)
            == "5"
        ),
    )
    kubectl(story, "get", "deployment/shop", "-n", PRODUCTION)


CHART_STEPS = (declare_chart_environments, promote_chart, change_production_values)
