"""Kubernetes list-merge semantics shared by the reconciler's diff and the emulator's field management.

Lists with a merge key (Kubernetes' patchMergeKey / listMapKeys) are compared item by item; other lists
are atomic. Tokens follow managedFields' FieldsV1: ``f:<field>``, ``k:<json key>``, ``v:<json value>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

Path = tuple[str, ...]

MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",), "ephemeralContainers": ("name",),
    "env": ("name",), "volumes": ("name",), "volumeMounts": ("mountPath",), "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",), "hostAliases": ("ip",), "conditions": ("type",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}
SET_LISTS = frozenset({"finalizers"})
# Key fields the API server defaults before merging, so a manifest that omits them still matches.
KEY_DEFAULTS = {"protocol": "TCP"}


def merge_keys(parent: str, name: str) -> tuple[str, ...] | None:
    if name == "ports":
        return ("port", "protocol") if parent == "spec" else ("containerPort", "protocol")
    return MERGE_KEYS.get(name)


def key_token(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    values = {k: item.get(k, KEY_DEFAULTS.get(k)) for k in keys}
    return "k:" + json.dumps({k: v for k, v in values.items() if v is not None}, separators=(",", ":"),
                             sort_keys=True)


def dotted(path: Path) -> str:
    """``('f:spec', 'f:template', 'k:{"name":"app"}', 'f:image')`` -> ``.spec.template[name=app].image``."""
    out = ""
    for token in path:
        kind, _, rest = token.partition(":")
        if kind == "f":
            out += "." + rest
        elif kind == "k":
            out += "[" + ",".join(f"{k}={v}" for k, v in json.loads(rest).items()) + "]"
        elif kind == "v":
            out += f"[{rest}]"
    return out


def differences(desired: Any, live: Any, path: Path = (), parent: str = "", name: str = "") -> Iterator[Path]:
    """Paths where `live` does not carry what `desired` specifies. Fields only `live` has (server
    defaults, fields owned by others such as replicas under an HPA) are not differences."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            yield path
            return
        for key, value in desired.items():
            if key not in live:
                yield (*path, "f:" + key)
            else:
                yield from differences(value, live[key], (*path, "f:" + key), name, key)
        return
    if isinstance(desired, list) and (keys := merge_keys(parent, name)) and all(isinstance(i, dict) for i in desired):
        if not isinstance(live, list):
            yield path
            return
        by_key = {key_token(i, keys): i for i in live if isinstance(i, dict)}
        for item in desired:
            token = key_token(item, keys)
            if token not in by_key:
                yield (*path, token)
            else:
                yield from differences(item, by_key[token], (*path, token), name, name)
        return
    if isinstance(desired, list) and name in SET_LISTS:
        missing = [v for v in desired if not isinstance(live, list) or v not in live]
        if missing:
            yield path
        return
    if not _same_scalar(desired, live):
        yield path


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    # Kubernetes stores e.g. a port given as "80" in an int-or-string field as given, but quantities and
    # booleans written as strings in YAML are common: compare textual forms for scalars.
    if isinstance(desired, (int, float, str, bool)) and isinstance(live, (int, float, str, bool)):
        return str(desired).lower() == str(live).lower() and not isinstance(desired, bool) ^ isinstance(live, bool)
    return False
