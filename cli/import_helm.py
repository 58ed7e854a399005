"""`ferry env import-helm RELEASE`: adopt an existing Helm release's objects without restarting its workloads.

Two steps around `ferry env apply`, like `ferry import flux` (cli/importer.py):
1. ``ferry env import-helm shop -n prod --chart oci://HOST/charts/shop -o shop.yaml`` reads the newest deployed
   revision from the cluster's Helm storage (ferry.helm_release) and writes an environments file: the release's
   name (``helm.release-name``), namespace and user values (``helm.values``), and the chart from where you say
   (Helm's storage does not record it: ``--chart oci://…``, or ``--repository/--path`` with ``--version`` or
   ``--semver`` for a chart inside a Ferry release).
2. ``ferry env apply -f shop.yaml``: the first reconcile renders the same chart with the same values and applies
   it (server-side apply, force): the same fields with the same values change no object's spec (same generation,
   no new ReplicaSet), and the unlabelled objects Helm made are adopted (labelled for the environment).
3. ``ferry env import-helm shop -n prod --finish [--forget-helm]``: once every object carries the environment's
   label, the ``helm`` field manager's managedFields entries are removed (as fluxcd/pkg ssa does after a
   takeover), so a field the chart drops later is not left co-owned by Helm; ``--forget-helm`` also deletes the
   release Secrets, so `helm ls` stops listing it (Ferry's inventory and history are the record from then on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.common import CommandError

NEXT = (
    "next: ferry env apply -f {file}; once its first reconcile is done: "
    "ferry env import-helm {release} -n {namespace} --finish [--forget-helm]"
)


def _storage(args: argparse.Namespace) -> Any:
    from workers.settings import SettingsInvalid, load_settings
    from workers.wiring import helm_storage

    try:
        settings = load_settings({})
    except SettingsInvalid as err:
        raise CommandError(f"import-helm: {err}") from None
    return helm_storage(settings, args.cluster, args.kubeconfig)


def _write(args: argparse.Namespace) -> int:
    import pydantic
    import yaml

    from ferry.declared import EnvironmentsFile
    from ferry.helm_release import ChartSource, ReleaseRefused, import_environment
    from ferry.model import PEOPLE

    source = ChartSource(
        chart=args.chart, repository=args.repository, path=args.path, version=args.version, semver=args.semver
    )
    if source.chart is None and source.repository is None:  # before reading the cluster: the storage cannot say
        raise CommandError(
            "import-helm: give --chart oci://HOST/PATH/NAME (an OCI Helm repository) or --repository HOST/PATH "
            "--path DIR with --version or --semver (a Ferry release holding the chart): Helm's release storage "
            "does not record where the chart came from"
        )
    read = _storage(args).read(args.release, args.helm_namespace)
    try:
        imported = import_environment(read.release, source, read.objects, args.name, args.cluster)
        EnvironmentsFile.model_validate({"environments": [imported.environment]}, context={PEOPLE: True})
    except ReleaseRefused as err:
        raise CommandError(f"import-helm: {err}") from None
    except pydantic.ValidationError as err:
        raise CommandError(f"import-helm: the environment does not validate: {err.errors()[0]['msg']}") from None
    text = yaml.safe_dump({"environments": [imported.environment]}, sort_keys=False)
    if args.output:
        out = Path(args.output)
        out.touch(mode=0o600, exist_ok=True)  # NB: the release's values can hold what its users typed with --set
        out.write_text(text)
    else:
        sys.stdout.write(text)
    for note in [*imported.notes, *read.notes]:
        print(f"ferry env import-helm: {note}", file=sys.stderr)
    print(NEXT.format(file=args.output or "FILE", release=args.release, namespace=args.helm_namespace), file=sys.stderr)
    return 0


def _finish(args: argparse.Namespace) -> int:
    done = _storage(args).finish(args.release, args.helm_namespace, args.name or args.release, forget=args.forget_helm)
    for oid in done.missing:
        print(f"ferry env import-helm: {oid}: in the release's manifest, not in the cluster", file=sys.stderr)
    print(
        f"ferry env import-helm: removed the helm field manager from {len(done.cleaned)} object(s) "
        f"({done.already} had none)"
        + (f"; deleted {len(done.forgotten)} release Secret(s): helm ls no longer lists it" if args.forget_helm else "")
    )
    return 0


def cmd_import_helm(args: argparse.Namespace) -> int:
    from workers.wiring import helm_storage_error

    try:
        return _finish(args) if args.finish or args.forget_helm else _write(args)
    except helm_storage_error() as err:
        raise CommandError(f"import-helm: {err}") from None
