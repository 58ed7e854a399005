"""activities.cluster.hooks against the real control plane, as the least-privileged ferry-worker user: a chart's
Helm hooks (built by ferry.hooks.parse_hook from the real helm v4.3.2's `helm template` output, so the annotations
are Helm's own) run in Helm's order, awaited, deleted by their policies, confined to the environment's bounds.

The simulated workload controller completes a Job 0.3 s after it is created and fails one whose image tag contains
"broken" (devstack/kube/controller.py). No skip: a missing helm fails every test here with the `make helm` hint."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import BatchV1Api, CoreV1Api
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.cluster.client import Cluster
from activities.cluster.hooks import Hooks
from activities.helm import render
from activities.helm.binary import helm_path
from devstack.kube.session import KubeServer
from ferry.helm_render import HelmRenderInput
from ferry.hooks import HOOK_EVENT_LABEL, HOOK_OF_LABEL, POST_INSTALL, PRE_INSTALL, TEST, Hook
from ferry.plan import ENVIRONMENT_LABEL
from tests.kit.charts import HOOK_JOB, TEST_POD, write_chart

ENV = "shop-staging"


@pytest.fixture(scope="module", autouse=True)
def helm() -> Path:
    """The helm render_chart runs; HelmMissing (with the `make helm` fix) fails every test here when it is absent."""
    return helm_path()


@pytest.fixture
def cluster(kube_server: KubeServer) -> Cluster:
    """The worker's own connection: user ferry-worker (examples/rbac/ferry-worker.yaml) through the fault proxy."""
    return Cluster(str(kube_server.worker_kubeconfig), None)


def hook_doc(
    kind: str, name: str, events: str, weight: int | None = None, delete: str | None = None, body: str = ""
) -> str:
    """A hook template as a chart writes one (annotations quoted as Helm needs them)."""
    notes = [f'    helm.sh/hook: "{events}"']
    if weight is not None:
        notes.append(f'    helm.sh/hook-weight: "{weight}"')
    if delete is not None:
        notes.append(f'    helm.sh/hook-delete-policy: "{delete}"')
    api = {"Job": "batch/v1", "ClusterRole": "rbac.authorization.k8s.io/v1"}.get(kind, "v1")
    head = f"apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n  annotations:\n" + "\n".join(notes) + "\n"
    return head + (body or ("data: {ran: 'yes'}\n" if kind == "ConfigMap" else ""))


def job_body(image: str = "busybox:1.36", annotations: str = "") -> str:
    meta = f"    metadata:\n      annotations: {{{annotations}}}\n" if annotations else ""
    return (
        f"spec:\n  backoffLimit: 0\n  template:\n{meta}    spec:\n      restartPolicy: Never\n"
        f"      containers:\n        - name: hook\n          image: {image}\n"
    )


def chart_hooks(tmp_path: Path, namespace: str, templates: dict[str, str]) -> tuple[Hook, ...]:
    """The hooks the real `helm template` of a chart with `templates` renders (the reconcile's own render)."""
    chart = write_chart(tmp_path, templates={"configmap.yaml": None, "deployment.yaml": None, **templates})
    rendered = render.render_chart(
        chart, HelmRenderInput(release_name="shop", namespace=namespace, kube_version="v1.35.4")
    )
    return rendered.hooks


def run(cluster: Cluster, hooks: tuple[Hook, ...], event: str, namespace: str, **kw: Any) -> list[str]:
    return Hooks()._run_hooks(
        cluster, hooks, event, environment=ENV, namespace=namespace, namespaces=[namespace], cluster_kinds=[], **kw
    )


def live(api: Any, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as the admin sees it, or None."""
    try:
        if kind == "Job":
            return BatchV1Api(api).read_namespaced_job(name, namespace).to_dict()  # type: ignore[no-any-return]
        if kind == "Pod":
            return CoreV1Api(api).read_namespaced_pod(name, namespace).to_dict()  # type: ignore[no-any-return]
        return CoreV1Api(api).read_namespaced_config_map(name, namespace).to_dict()  # type: ignore[no-any-return]
    except kubernetes.client.ApiException as err:
        if err.status == 404:
            return None
        raise


def test_hooks_run_by_weight_then_name_each_awaited_before_the_next(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    hooks = chart_hooks(
        tmp_path,
        namespace,
        {
            "b.yaml": hook_doc("ConfigMap", "shop-b", "pre-install", 1, "hook-failed"),
            "a.yaml": hook_doc("ConfigMap", "shop-a", "pre-install", 1, "hook-failed"),
            # a lower weight runs first whatever its kind (Helm sorts by weight, then name; kind only breaks ties)
            "z.yaml": hook_doc("ConfigMap", "shop-z", "pre-install", -3, "hook-failed"),
            "job.yaml": hook_doc("Job", "shop-job", "pre-install", 0, "hook-failed", job_body()),
        },
    )
    started = time.monotonic()
    ran = run(cluster, hooks, PRE_INSTALL, namespace)
    print(f"4 pre-install hooks (one Job): {time.monotonic() - started:.2f} s")
    assert ran == [
        f"ConfigMap/{namespace}/shop-z pre-install",
        f"Job/{namespace}/shop-job pre-install",
        f"ConfigMap/{namespace}/shop-a pre-install",
        f"ConfigMap/{namespace}/shop-b pre-install",
    ]
    objs = {
        n: live(kube_api, "Job" if n == "shop-job" else "ConfigMap", namespace, n)
        for n in ("z", "job", "a", "b")
        for n in [f"shop-{n}"]
    }
    job = objs["shop-job"]
    assert job is not None and any(c["type"] == "Complete" for c in job["status"]["conditions"])
    # the Job's last write (the controller's Complete) comes before the next hook's creation: it was awaited
    versions = [int(o["metadata"]["resource_version"]) for o in objs.values() if o is not None]
    assert versions == sorted(versions) and len(versions) == 4
    for obj in objs.values():
        assert obj is not None
        labels = obj["metadata"]["labels"]
        assert labels[HOOK_OF_LABEL] == ENV and labels[HOOK_EVENT_LABEL] == PRE_INSTALL
        assert ENVIRONMENT_LABEL not in labels  # out of the inventory, prune, drift and health listing


def test_a_pre_install_job_is_awaited_then_deleted_by_hook_succeeded(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    hooks = chart_hooks(tmp_path, namespace, {"job.yaml": HOOK_JOB})  # pre-install,pre-upgrade; hook-succeeded
    batch = BatchV1Api(kube_api)
    since = batch.list_namespaced_job(namespace).metadata.resource_version
    seen: list[tuple[str, list[str]]] = []

    def watch() -> None:
        for event in kubernetes.watch.Watch().stream(
            batch.list_namespaced_job, namespace, resource_version=since, timeout_seconds=30
        ):
            conditions = [c.type for c in (event["object"].status.conditions or []) if c.status == "True"]
            seen.append((event["type"], conditions))
            if event["type"] == "DELETED":
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    assert run(cluster, hooks, PRE_INSTALL, namespace) == [f"Job/{namespace}/shop-migrate pre-install"]
    elapsed = time.monotonic() - started
    print(f"pre-install Job awaited and deleted: {elapsed:.2f} s")
    assert live(kube_api, "Job", namespace, "shop-migrate") is None
    watcher.join(30)
    assert seen[0][0] == "ADDED" and seen[-1][0] == "DELETED"
    # it completed before it was deleted, and before _run_hooks returned
    assert any("Complete" in conditions for kind, conditions in seen if kind == "MODIFIED")
    assert elapsed >= 0.3


def test_before_hook_creation_replaces_the_old_copy(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    hooks = chart_hooks(
        tmp_path, namespace, {"job.yaml": hook_doc("Job", "shop-migrate", "post-install", body=job_body())}
    )
    assert hooks[0].delete_policies == ()  # none named: before-hook-creation
    run(cluster, hooks, POST_INSTALL, namespace)
    old = live(kube_api, "Job", namespace, "shop-migrate")
    assert old is not None  # the default policy keeps it after it ran
    assert run(cluster, hooks, POST_INSTALL, namespace) == [f"Job/{namespace}/shop-migrate post-install"]
    new = live(kube_api, "Job", namespace, "shop-migrate")
    assert new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]
    assert any(c["type"] == "Complete" for c in new["status"]["conditions"])


def test_a_failing_job_raises_hook_failed_and_applies_the_delete_policies(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    hooks = chart_hooks(
        tmp_path,
        namespace,
        {
            "first.yaml": hook_doc("ConfigMap", "shop-first", "pre-install", -10, "hook-succeeded"),
            "kept.yaml": hook_doc("ConfigMap", "shop-kept", "pre-install", -5, "hook-failed"),
            "job.yaml": hook_doc(
                "Job", "shop-broken", "pre-install", 0, "hook-failed", job_body("busybox:1.36-broken")
            ),
            "never.yaml": hook_doc("ConfigMap", "shop-never", "pre-install", 10, "hook-succeeded"),
        },
    )
    with pytest.raises(ApplicationError) as failed:
        run(cluster, hooks, PRE_INSTALL, namespace)
    assert failed.value.type == "HookFailed" and failed.value.non_retryable
    assert failed.value.message == (
        f"pre-install hook Job/{namespace}/shop-broken failed: BackoffLimitExceeded: "
        "Job has reached the specified backoff limit"
    )
    assert failed.value.details == (
        [
            f"ConfigMap/{namespace}/shop-first pre-install",
            f"ConfigMap/{namespace}/shop-kept pre-install",
            f"Job/{namespace}/shop-broken pre-install",
        ],
    )  # the hooks run, for the record
    assert live(kube_api, "Job", namespace, "shop-broken") is None  # hook-failed
    assert live(kube_api, "ConfigMap", namespace, "shop-first") is None  # hook-succeeded of the one before it
    assert live(kube_api, "ConfigMap", namespace, "shop-kept") is not None  # hook-failed only: it succeeded
    assert live(kube_api, "ConfigMap", namespace, "shop-never") is None  # after the failure: never applied


def test_a_configmap_hook_is_ready_at_once(cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path) -> None:
    hooks = chart_hooks(tmp_path, namespace, {"cm.yaml": hook_doc("ConfigMap", "shop-note", "post-install")})
    cluster.resource("v1", "ConfigMap")  # discovery warmed: what follows counts the hook's own requests
    cluster.counter.requests = 0
    assert run(cluster, hooks, POST_INSTALL, namespace) == [f"ConfigMap/{namespace}/shop-note post-install"]
    # a GET (is the name taken?), a GET (an old copy to delete?) and the apply: no wait
    assert cluster.counter.requests == 3
    obj = live(kube_api, "ConfigMap", namespace, "shop-note")
    assert obj is not None and obj["data"] == {"ran": "yes"} and obj["metadata"]["namespace"] == namespace


def test_a_hook_outside_the_environments_bounds_refuses_the_event_before_anything_is_applied(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    elsewhere = hook_doc("ConfigMap", "shop-away", "pre-install", 5).replace(
        "  name: shop-away\n", "  name: shop-away\n  namespace: kube-system\n"
    )
    hooks = chart_hooks(
        tmp_path,
        namespace,
        {
            "ok.yaml": hook_doc("ConfigMap", "shop-ok", "pre-install", -5),
            "away.yaml": elsewhere,
            "role.yaml": hook_doc("ClusterRole", "shop-role", "pre-install", 1, body="rules: []\n"),
        },
    )
    with pytest.raises(ApplicationError) as refused:
        run(cluster, hooks, PRE_INSTALL, namespace)
    assert refused.value.type == "OutOfBounds" and refused.value.non_retryable
    message = refused.value.message
    assert message.startswith(
        f"2 pre-install hook(s) outside environment {ENV}'s bounds; no pre-install hook was applied"
    )
    assert "ConfigMap/kube-system/shop-away: namespace 'kube-system' is not this environment's" in message
    assert (
        "ClusterRole/shop-role: cluster-scoped kind ClusterRole is not in this environment's cluster-kinds" in message
    )
    assert live(kube_api, "ConfigMap", namespace, "shop-ok") is None


def test_a_name_taken_by_another_environment_is_refused_and_never_deleted(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    core = CoreV1Api(kube_api)
    for name, labels in (("shop-theirs", {HOOK_OF_LABEL: "other"}), ("shop-release", {ENVIRONMENT_LABEL: ENV})):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels}, "data": {"x": "1"}})
    hooks = chart_hooks(
        tmp_path,
        namespace,
        {
            "mine.yaml": hook_doc("ConfigMap", "shop-mine", "pre-install", -1),
            "theirs.yaml": hook_doc("ConfigMap", "shop-theirs", "pre-install"),
            "release.yaml": hook_doc("ConfigMap", "shop-release", "pre-install"),
        },
    )
    with pytest.raises(ApplicationError) as refused:
        run(cluster, hooks, PRE_INSTALL, namespace)
    assert refused.value.type == "OutOfBounds"
    assert f"ConfigMap/{namespace}/shop-theirs: it is a hook of environment other" in refused.value.message
    assert f"ConfigMap/{namespace}/shop-release: it is a release object of environment {ENV}, not a hook" in str(
        refused.value
    )
    for name in ("shop-theirs", "shop-release"):
        obj = live(kube_api, "ConfigMap", namespace, name)
        assert obj is not None and obj["data"] == {"x": "1"}
    assert live(kube_api, "ConfigMap", namespace, "shop-mine") is None


def test_a_test_hook_never_runs(cluster: Cluster, kube_api: Any, helm: Path, namespace: str, tmp_path: Path) -> None:
    # the reconcile renders with --skip-tests, which drops test hooks; `helm template` without it keeps them
    chart = write_chart(
        tmp_path,
        templates={
            "configmap.yaml": None,
            "deployment.yaml": None,
            "test.yaml": TEST_POD,
            "both.yaml": hook_doc("ConfigMap", "shop-both", "pre-install,test"),
            "pre.yaml": hook_doc("ConfigMap", "shop-pre", "pre-install"),
        },
    )
    out = subprocess.run(
        [str(helm), "template", "shop", str(chart), f"--namespace={namespace}", "--kube-version=v1.35.4"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": "/dev/null", "HELM_NO_PLUGINS": "1"},
    )
    hooks = render.parse_rendered(out.stdout, "shop").hooks
    assert sorted(h.name for h in hooks if h.is_test) == ["shop-both", "shop-test"]
    assert run(cluster, hooks, TEST, namespace) == []
    assert run(cluster, hooks, PRE_INSTALL, namespace) == [f"ConfigMap/{namespace}/shop-pre pre-install"]
    assert live(kube_api, "Pod", namespace, "shop-test") is None
    assert live(kube_api, "ConfigMap", namespace, "shop-both") is None


def test_a_hook_past_its_timeout_fails_naming_the_timeout(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    hanging = job_body(annotations="emulator.ferry.dev/rollout: hang")
    hooks = chart_hooks(tmp_path, namespace, {"job.yaml": hook_doc("Job", "shop-slow", "pre-install", body=hanging)})
    started = time.monotonic()
    with pytest.raises(ApplicationError) as failed:
        run(cluster, hooks, PRE_INSTALL, namespace, timeout=1.0)
    assert time.monotonic() - started < 10
    assert failed.value.type == "HookFailed"
    assert failed.value.message == (
        f"pre-install hook Job/{namespace}/shop-slow failed: timed out after 1 s waiting for it to finish "
        "(Helm's --timeout): Job in progress"
    )
    assert live(kube_api, "Job", namespace, "shop-slow") is not None  # before-hook-creation only: kept to look at


def test_a_hook_wait_heartbeats_and_stops_when_the_activity_is_cancelled(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    hanging = job_body(annotations="emulator.ferry.dev/rollout: hang")
    hooks = chart_hooks(tmp_path, namespace, {"job.yaml": hook_doc("Job", "shop-slow", "pre-install", body=hanging)})
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    threading.Timer(1.5, env.cancel).start()
    started = time.monotonic()
    with pytest.raises(CancelledError):  # raised by the SDK at a heartbeat, or by the Cluster after it
        env.run(run, cluster, hooks, PRE_INSTALL, namespace)
    elapsed = time.monotonic() - started
    print(f"cancelled after {elapsed:.2f} s, {len(beats)} heartbeats")
    assert 1.5 <= elapsed < 5  # the next request after the cancellation stops the wait, not the 300 s timeout
    assert len(beats) >= 4  # one per request of the wait (the SDK throttles what it sends)


def test_a_pod_hook_is_awaited_until_its_phase_says_it_finished(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    # as the worker (examples/rbac/ferry-worker.yaml grants pods for this), with this test as the kubelet no machine
    # here runs (it writes the pod's phase)
    admin = cluster
    core = CoreV1Api(kube_api)
    hooks = chart_hooks(
        tmp_path, namespace, {"pod.yaml": TEST_POD.replace("helm.sh/hook: test", "helm.sh/hook: pre-install")}
    )

    def kubelet(phase: str) -> None:
        deadline = time.monotonic() + 20
        while live(kube_api, "Pod", namespace, "shop-test") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        core.patch_namespaced_pod_status("shop-test", namespace, {"status": {"phase": phase}})

    threading.Thread(target=kubelet, args=("Succeeded",), daemon=True).start()
    started = time.monotonic()
    assert run(admin, hooks, PRE_INSTALL, namespace) == [f"Pod/{namespace}/shop-test pre-install"]
    assert time.monotonic() - started >= 0.5
    threading.Thread(target=kubelet, args=("Failed",), daemon=True).start()
    with pytest.raises(ApplicationError) as failed:
        run(admin, hooks, PRE_INSTALL, namespace)  # before-hook-creation: the old Pod goes, a new one is awaited
    assert failed.value.message == f"pre-install hook Pod/{namespace}/shop-test failed: phase Failed"


def test_a_hook_of_a_kind_the_cluster_does_not_serve_is_bad_input_before_anything_is_applied(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    widget = hook_doc("ConfigMap", "shop-widget", "pre-install", 5).replace(
        "apiVersion: v1\nkind: ConfigMap", "apiVersion: example.com/v1\nkind: Widget"
    )
    hooks = chart_hooks(
        tmp_path, namespace, {"ok.yaml": hook_doc("ConfigMap", "shop-ok", "pre-install", -5), "w.yaml": widget}
    )
    with pytest.raises(ApplicationError) as refused:
        run(cluster, hooks, PRE_INSTALL, namespace)
    assert refused.value.type == "BadInput"
    assert refused.value.message == (
        "pre-install hook Widget/shop-widget (shop/templates/w.yaml): Widget (example.com/v1) is not served by the "
        "cluster; no pre-install hook was applied"
    )
    assert live(kube_api, "ConfigMap", namespace, "shop-ok") is None


def test_a_hook_never_takes_over_an_object_nobody_labelled_its_hook(
    cluster: Cluster, kube_api: Any, namespace: str, tmp_path: Path
) -> None:
    """An operator's unlabelled ConfigMap of the hook's name: deleting it (before-hook-creation) would destroy what
    the environment never owned; a Namespace hook would take everything in it. Both are refused, nothing deleted."""
    CoreV1Api(kube_api).create_namespaced_config_map(
        namespace, {"metadata": {"name": "shop-settings"}, "data": {"owner": "operator"}}
    )
    hooks = chart_hooks(tmp_path, namespace, {"cm.yaml": hook_doc("ConfigMap", "shop-settings", "pre-install")})
    with pytest.raises(ApplicationError) as refused:
        run(cluster, hooks, PRE_INSTALL, namespace)
    assert refused.value.type == "OutOfBounds" and "is not a hook of this environment" in refused.value.message
    kept = CoreV1Api(kube_api).read_namespaced_config_map("shop-settings", namespace)
    assert kept.data == {"owner": "operator"}
    ns_hook = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n  annotations:\n"
    ns_hook += '    helm.sh/hook: "pre-install"\n'
    hooks = chart_hooks(tmp_path / "ns", namespace, {"ns.yaml": ns_hook})
    with pytest.raises(ApplicationError) as refused:
        run(cluster, hooks, PRE_INSTALL, namespace)
    assert refused.value.type == "OutOfBounds" and "a Namespace is never a hook" in refused.value.message
