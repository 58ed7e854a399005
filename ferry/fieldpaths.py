"""Kubernetes list-merge semantics and managedFields paths for the reconciler's plan.

Lists with a merge key (Kubernetes' patchMergeKey / listMapKeys) are compared item by item; other lists
are atomic. Tokens follow managedFields' FieldsV1: ``f:<field>``, ``k:<json key>``, ``v:<json value>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

Path = tuple[str, ...]

MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
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
    return "k:" + json.dumps({k: v for k, v in values.items() if v is not None}, separators=(",", ":"), sort_keys=True)


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
    if isinstance(desired, list):
        # An atomic list: the same items in the same order, each item as set (the server defaults fields inside
        # items too, e.g. a NetworkPolicy port's protocol).
        if (
            not isinstance(live, list)
            or len(live) != len(desired)
            or any(
                next(differences(d, li, path, parent, name), None) is not None
                for d, li in zip(desired, live, strict=True)
            )
        ):
            yield path
        return
    if not _same_scalar(desired, live, parent):
        yield path


def _same_scalar(desired: Any, live: Any, parent: str = "") -> bool:
    if desired == live:
        return True
    # Kubernetes stores e.g. a port given as "80" in an int-or-string field as given, but quantities and
    # booleans written as strings in YAML are common: compare textual forms for scalars.
    if isinstance(desired, (int, float, str, bool)) and isinstance(live, (int, float, str, bool)):
        if str(desired).lower() == str(live).lower() and not isinstance(desired, bool) ^ isinstance(live, bool):
            return True
        # the API server canonicalises quantities (cpu 0.5 -> 500m, 1000m -> 1); the same amount is no change.
        if parent in QUANTITY_MAPS:
            left, right = quantity(desired), quantity(live)
            return left is not None and left == right
    return False


# Maps whose values are resource quantities (container resources, quotas, limit ranges, PVC capacity).
QUANTITY_MAPS = frozenset(
    {
        "requests",
        "limits",
        "hard",
        "capacity",
        "default",
        "defaultRequest",
        "max",
        "min",
        "maxLimitRequestRatio",
        "overhead",
    }
)
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_SUFFIX = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity's amount (``0.5`` == ``500m``), or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError):
        return None


# --------------------------------------------------------------------------------- managedFields paths
MISSING = object()


def leaf_paths(obj: Any, path: Path = (), parent: str = "", name: str = "") -> Iterator[Path]:
    """The field set an apply of `obj` claims, as managedFields records it (without its "." entries): one path
    per scalar, atomic list or empty map, list items by their merge key."""
    if isinstance(obj, dict):
        if not obj:
            yield path
        for key, value in obj.items():
            yield from leaf_paths(value, (*path, "f:" + key), name, key)
        return
    if isinstance(obj, list) and (keys := merge_keys(parent, name)) and obj and all(isinstance(i, dict) for i in obj):
        for item in obj:
            item_path = (*path, key_token(item, keys))
            yield from leaf_paths(item, item_path, name, name)
        return
    if isinstance(obj, list) and name in SET_LISTS:
        for value in obj:
            yield (*path, "v:" + json.dumps(value, separators=(",", ":")))
        return
    yield path


def managed_paths(obj: Mapping[str, Any], manager: str) -> set[Path] | None:
    """The leaf paths `manager` owns through apply (managedFields, "." entries left out); None when it owns none."""
    entries = [
        e
        for e in (obj.get("metadata") or {}).get("managedFields") or []
        if e.get("manager") == manager and e.get("operation") == "Apply" and not e.get("subresource")
    ]
    if not entries:
        return None
    paths: set[Path] = set()

    def walk(node: Mapping[str, Any], path: Path) -> None:
        children = [k for k in node if k != "."]
        if not children:
            paths.add(path)
        for key in children:
            walk(node[key] or {}, (*path, key))

    for entry in entries:
        walk(entry.get("fieldsV1") or {}, ())
    return paths


def value_at(obj: Any, path: Path) -> Any:
    """The value at a managedFields path (``f:`` map keys, ``k:`` list items by merge key, ``v:`` set
    members), or MISSING."""
    node = obj
    for token in path:
        kind, _, rest = token.partition(":")
        if kind == "f" and isinstance(node, dict) and rest in node:
            node = node[rest]
        elif kind == "k" and isinstance(node, list):
            want = json.loads(rest)
            node = next(
                (
                    i
                    for i in node
                    if isinstance(i, dict) and all(i.get(k, KEY_DEFAULTS.get(k)) == v for k, v in want.items())
                ),
                MISSING,
            )
        elif kind == "v" and isinstance(node, list):
            value = json.loads(rest)
            node = value if value in node else MISSING
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node
