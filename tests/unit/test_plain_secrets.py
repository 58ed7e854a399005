"""`ferry release` refuses a secret in the clear (issue 28, item 5): a core v1 Secret with data and no SOPS
metadata in any YAML document of the directory (manifests, kustomize inputs, a chart's crds/ and values; not a
chart's templates/), and a kustomize secretGenerator with literals or with envs/files that are not SOPS-encrypted.
Each refusal names the file (and document or generator) and the fix; `--allow-plain-secrets` lets them through;
a SOPS-encrypted Secret passes. Nothing here runs sops: the SOPS files are SOPS's format, written out."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from activities.manifests import BundleError, scan
from activities.validate import check_plain_secrets, plain_secrets, validate
from cli.common import CommandError
from cli.release import prepare_chart_release, prepare_release
from ferry.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PLAIN = """apiVersion: v1
kind: Secret
metadata: {name: db, namespace: app}
stringData: {password: hunter2hunter2}
"""
CONFIG = """apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
"""
# What sops v3.13.3 writes for PLAIN with --encrypted-regex '^(data|stringData)$' (values shortened)
ENCRYPTED = """apiVersion: v1
kind: Secret
metadata:
    name: db
    namespace: app
stringData:
    password: ENC[AES256_GCM,data:6/WcR+SFcLBi6KFna6U=,iv:o+UwAtLDuh9SaT=,tag:WTKk5o19W/HtOv4Ik6Crgg==,type:str]
sops:
    age:
        - recipient: age1e429tphrw7cgjk78kzqw8axyd7wqn6rcstwnh307y068u74hzvrsuq0yhw
          enc: |
            -----BEGIN AGE ENCRYPTED FILE-----
            YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSAxZlVMa3hHK0VGTndiekgr
            -----END AGE ENCRYPTED FILE-----
    encrypted_regex: ^(data|stringData)$
    lastmodified: "2026-12-07T16:41:20Z"
    mac: ENC[AES256_GCM,data:CrozlAyHGbzIHPfsORXp,iv:tk7mpkfGvcUxekvap=,tag:6vtHiqnCv84BheQH+oIjVg==,type:str]
    version: 3.13.3
"""
ENCRYPTED_ENV = (
    "PASSWORD=ENC[AES256_GCM,data:aGk=,iv:aGk=,tag:aGk=,type:str]\n"
    "sops_age__list_0__map_recipient=age1e429tphrw7cgjk78kzqw8axyd7wqn6rcstwnh307y068u74hzvrsuq0yhw\n"
    "sops_mac=ENC[AES256_GCM,data:aGk=,iv:aGk=,tag:aGk=,type:str]\n"
    "sops_version=3.13.3\n"
)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _found(root: Path) -> list[str]:
    return plain_secrets(root, scan(root))


def _release_args(directory: Path | None, chart: Path | None = None, allow: bool = False) -> argparse.Namespace:
    return argparse.Namespace(
        dir=str(directory) if directory else None,
        chart=str(chart) if chart else None,
        repository="127.0.0.1:1/team/app",
        version="1.0.0" if directory else None,
        revision="r",
        source="s",
        published_by="ci",
        timeout="1m",
        allow_plain_secrets=allow,
    )


def test_a_plain_secret_is_refused_naming_the_file_document_and_fix(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"app/config.yaml": CONFIG, "app/all.yaml": CONFIG + "---\n" + PLAIN})
    with pytest.raises(BundleError) as err:
        validate(root, allow_plain_secrets=False)  # NB: the old validate() had no such keyword
    message = str(err.value)
    assert "app/all.yaml: document 1: Secret db holds data in the clear" in message
    assert "ferry secrets encrypt" in message and "--allow-plain-secrets" in message
    assert "hunter2" not in message


def test_validate_keeps_its_old_behaviour_by_default_and_with_the_flag(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"secret.yaml": PLAIN})
    assert validate(root) == 1
    assert validate(root, allow_plain_secrets=True) == 1


@pytest.mark.parametrize(
    "text",
    [
        ENCRYPTED,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: empty}\n",  # no data: nothing to leak
        "apiVersion: v1\nkind: Secret\nmetadata: {name: e}\ndata: {}\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: sa-token}\ntype: kubernetes.io/service-account-token\n",
        "apiVersion: example.com/v1\nkind: Secret\nmetadata: {name: other}\ndata: {a: b}\n",  # not core v1
        CONFIG,
    ],
)
def test_what_passes(tmp_path: Path, text: str) -> None:
    root = _tree(tmp_path, {"x.yaml": text})
    assert _found(root) == []
    assert validate(root, allow_plain_secrets=False) == 1


def test_a_secret_inside_a_list_and_in_json_is_found(tmp_path: Path) -> None:
    listed = "apiVersion: v1\nkind: List\nitems:\n- " + PLAIN.replace("\n", "\n  ").rstrip() + "\n"
    as_json = '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "j"}, "data": {"k": "aGk="}}'
    root = _tree(tmp_path, {"list.yaml": listed, "j.json": as_json})
    assert _found(root) == [
        "j.json: document 0: Secret j holds data in the clear",
        "list.yaml: document 0 item 0: Secret db holds data in the clear",
    ]


def test_kustomize_inputs_are_scanned_as_files(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {"base/kustomization.yaml": "resources: [secret.yaml]\n", "base/secret.yaml": PLAIN, "base/ok.yaml": CONFIG},
    )
    assert _found(root) == ["base/secret.yaml: document 0: Secret db holds data in the clear"]


def test_a_secret_generator_with_literals_is_refused(tmp_path: Path) -> None:
    kustomization = "secretGenerator:\n- name: db\n  literals: [password=hunter2hunter2]\n"
    root = _tree(tmp_path, {"overlay/kustomization.yaml": kustomization})
    with pytest.raises(BundleError) as err:
        check_plain_secrets(root)
    assert "overlay/kustomization.yaml: secretGenerator 0 (db) has literals" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_secret_generator_files_must_be_sops_encrypted(tmp_path: Path) -> None:
    kustomization = (
        "secretGenerator:\n"
        "- name: plain\n  envs: [plain.env]\n  files: [tls.key=keys/tls.key]\n"
        "- name: sealed\n  envs: [sealed.env]\n  files: [missing.txt]\n"
    )
    root = _tree(
        tmp_path,
        {
            "k/kustomization.yaml": kustomization,
            "k/plain.env": "PASSWORD=hunter2hunter2\n",
            "k/keys/tls.key": "-----BEGIN PRIVATE KEY-----\n",
            "k/sealed.env": ENCRYPTED_ENV,
        },
    )
    assert _found(root) == [
        "k/kustomization.yaml: secretGenerator 0 (plain) envs: k/plain.env is not SOPS-encrypted",
        "k/kustomization.yaml: secretGenerator 0 (plain) files: k/keys/tls.key is not SOPS-encrypted",
    ]  # the encrypted env passes; a missing file is kustomize's to name


def test_a_charts_templates_are_not_manifests_but_its_other_files_are(tmp_path: Path) -> None:
    chart = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "charts" / "shop", chart)
    _tree(chart, {"templates/secret.yaml": PLAIN.replace("hunter2hunter2", "{{ .Values.password }}")})
    assert _found(chart) == []
    _tree(chart, {"crds/secret.yaml": PLAIN})
    assert _found(chart) == ["crds/secret.yaml: document 0: Secret db holds data in the clear"]


def test_many_findings_are_counted_not_all_listed(tmp_path: Path) -> None:
    root = _tree(tmp_path, {f"s{n:02}.yaml": PLAIN for n in range(12)})
    with pytest.raises(BundleError, match=r"s04.yaml: document 0.*\(and 7 more\)") as err:
        check_plain_secrets(root)
    assert "s05.yaml" not in str(err.value)


def test_ferry_release_refuses_unless_allowed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app", {"secret.yaml": PLAIN, "config.yaml": CONFIG})
    with pytest.raises(CommandError, match=r"invalid bundle: secret.yaml: document 0: Secret db .*--allow-plain"):
        prepare_release(_release_args(root), Settings())
    input, _, objects = prepare_release(_release_args(root, allow=True), Settings())
    assert objects == 2 and input.bundle_dir == str(root)


def test_ferry_release_chart_refuses_unless_allowed(tmp_path: Path) -> None:
    chart = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "charts" / "shop", chart)
    _tree(chart, {"crds/secret.yaml": PLAIN})
    with pytest.raises(CommandError, match=r"invalid chart: crds/secret.yaml: document 0: Secret db"):
        prepare_chart_release(_release_args(None, chart), Settings())
    input, _ = prepare_chart_release(_release_args(None, chart, allow=True), Settings())
    assert input.chart


def test_an_older_callers_namespace_without_the_flag_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app", {"secret.yaml": PLAIN})
    args = _release_args(root)
    del args.allow_plain_secrets
    with pytest.raises(CommandError, match="holds data in the clear"):
        prepare_release(args, Settings())
