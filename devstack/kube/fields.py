"""Field paths and merges: managedFields (FieldsV1), server-side apply, strategic/JSON merge and JSON patch.

A path is a tuple of FieldsV1 tokens: ``f:<field>``, ``k:<json of the merge key>`` for an item of a keyed
list, ``v:<json>`` for a member of a set-like scalar list, and ``.`` for "this list item exists".
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ferry.fieldpaths import KEY_DEFAULTS as _KEY_DEFAULTS
from ferry.fieldpaths import SET_LISTS as _SET_LISTS
from ferry.fieldpaths import Path, key_token, merge_keys

__all__ = ["Path", "key_token", "merge_keys"]


# Not owned by anyone through apply; maintained by the server.
_SERVER_METADATA = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                    "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"}


def value_token(value: Any) -> str:
    return "v:" + json.dumps(value, separators=(",", ":"), sort_keys=True)


def paths_of(obj: dict[str, Any], *, include_status: bool = False) -> set[Path]:
    """The field set an object (or an applied configuration) specifies."""
    out: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and not include_status):
            continue
        if key == "metadata":
            meta = {k: v for k, v in (value or {}).items() if k not in _SERVER_METADATA}
            if meta:
                _walk(meta, ("f:metadata",), "metadata", out)
            continue
        _walk_value(value, ("f:" + key,), "", key, out)
    return out


def _walk(obj: dict[str, Any], prefix: Path, name: str, out: set[Path]) -> None:
    for key, value in obj.items():
        _walk_value(value, (*prefix, "f:" + key), name, key, out)


def _walk_value(value: Any, path: Path, parent: str, name: str, out: set[Path]) -> None:
    if isinstance(value, dict) and value:
        _walk(value, path, name, out)
    elif isinstance(value, list) and value and (keys := merge_keys(parent, name)) and all(
            isinstance(item, dict) for item in value):
        for item in value:
            token = (*path, key_token(item, keys))
            out.add((*token, "."))
            _walk(item, token, name, out)
    elif isinstance(value, list) and name in _SET_LISTS:
        for item in value:
            out.add((*path, value_token(item)))
    else:
        out.add(path)


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for token in path:
            node = node.setdefault(token, {})
    return tree


def paths_from_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for token, sub in tree.items():
        path = (*prefix, token)
        if sub:
            out |= paths_from_v1(sub, path)
        else:
            out.add(path)
    return out


def _step(node: Any, token: str) -> Any:
    """One token down an object, or None."""
    if token == ".":
        return node
    kind, _, rest = token.partition(":")
    if kind == "f":
        return node.get(rest) if isinstance(node, dict) else None
    if kind == "k" and isinstance(node, list):
        want = json.loads(rest)
        for item in node:
            if isinstance(item, dict) and all(item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in want.items()):
                return item
        return None
    if kind == "v" and isinstance(node, list):
        value = json.loads(rest)
        return value if value in node else None
    return None


MISSING = object()


def value_at(obj: Any, path: Path) -> Any:
    node = obj
    for token in path:
        if node is None:
            return MISSING
        if token.startswith("f:") and isinstance(node, dict) and token[2:] not in node:
            return MISSING
        node = _step(node, token)
    return MISSING if node is None and path and not path[-1].startswith("f:") else node


def remove_path(obj: dict[str, Any], path: Path) -> None:
    """Remove the field (or list item, or set member) at path, if present."""
    if path and path[-1] == ".":
        path = path[:-1]
    parent: Any = obj
    for token in path[:-1]:
        parent = _step(parent, token)
        if parent is None:
            return
    last = path[-1]
    kind, _, rest = last.partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
        return
    # list item / set member: find the list that holds it
    holder: Any = obj
    for token in path[:-2]:
        holder = _step(holder, token)
        if holder is None:
            return
    container_token = path[-2]
    lst = _step(holder, container_token)
    if not isinstance(lst, list):
        return
    target = _step(lst, last)
    if target is not None:
        lst.remove(target)


def remove_unowned(obj: dict[str, Any], gone: set[Path], kept: set[Path]) -> None:
    """Remove the fields in `gone` (a manager stopped applying them) unless a kept path lives beneath.
    Whole list items go first, so their own fields need no separate removal."""
    items = sorted((p for p in gone if p[-1] == "."), key=len)
    removed: list[Path] = []
    for path in items:
        item = path[:-1]
        if any(q[:len(item)] == item for q in kept):
            continue
        remove_path(obj, path)
        removed.append(item)
    for path in sorted((p for p in gone if p[-1] != "."), key=len, reverse=True):
        if any(path[:len(item)] == item for item in removed):
            continue
        if not any(len(q) > len(path) and q[:len(path)] == path for q in kept):
            remove_path(obj, path)


def apply_merge(live: Any, applied: Any, parent: str = "", name: str = "") -> Any:
    """Merge an applied configuration into the live object: maps recursively, keyed lists by key,
    everything else replaced."""
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for key, value in applied.items():
            out[key] = apply_merge(live.get(key), value, name, key) if key in live else copy.deepcopy(value)
        return out
    if isinstance(live, list) and isinstance(applied, list) and (keys := merge_keys(parent, name)) and all(
            isinstance(i, dict) for i in live + applied):
        by_key = {key_token(item, keys): item for item in live}
        applied_keys = [key_token(item, keys) for item in applied]
        merged = [apply_merge(by_key.get(tok), item, name, name) if tok in by_key else copy.deepcopy(item)
                  for tok, item in zip(applied_keys, applied, strict=True)]
        rest = [item for item in live if key_token(item, keys) not in set(applied_keys)]
        return merged + rest
    if isinstance(live, list) and isinstance(applied, list) and name in _SET_LISTS:
        return live + [v for v in applied if v not in live]
    return copy.deepcopy(applied)


def strategic_merge(live: Any, patch: Any, parent: str = "", name: str = "") -> Any:
    """Strategic merge patch: null deletes, ``$patch: replace|delete`` directives, keyed lists merged."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: v for k, v in patch.items() if k != "$patch"}
        if patch.get("$patch") == "delete":
            return None
        base = dict(live) if isinstance(live, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                base.pop(key, None)
            else:
                merged = strategic_merge(base.get(key), value, name, key)
                if merged is None:
                    base.pop(key, None)
                else:
                    base[key] = merged
        return base
    if isinstance(patch, list) and (keys := merge_keys(parent, name)) and all(isinstance(i, dict) for i in patch):
        current = list(live) if isinstance(live, list) else []
        if any(i.get("$patch") == "replace" for i in patch):
            return [i for i in patch if i.get("$patch") != "replace"]
        for item in patch:
            token = key_token(item, keys)
            idx = next((n for n, cur in enumerate(current) if key_token(cur, keys) == token), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    current.pop(idx)
            elif idx is None:
                current.append({k: v for k, v in item.items() if not k.startswith("$")})
            else:
                current[idx] = strategic_merge(current[idx], item, name, name)
        return current
    return copy.deepcopy(patch)


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge_patch(out.get(key), value)
    return out


class JSONPatchError(ValueError):
    pass


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JSONPatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise JSONPatchError(f"path /{'/'.join(parts)} does not exist")
    return node


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind in ("add", "replace", "test", "remove"):
                parent = _container(doc, parts)
                last = parts[-1]
                if kind == "test":
                    current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
                    if current != op.get("value"):
                        raise JSONPatchError(f"test failed at {op['path']}")
                elif kind == "remove" or kind == "replace":
                    if isinstance(parent, list):
                        parent.pop(int(last)) if kind == "remove" else parent.__setitem__(int(last), op["value"])
                    else:
                        if last not in parent:
                            raise JSONPatchError(f"path {op['path']} does not exist")
                        if kind == "remove":
                            del parent[last]
                        else:
                            parent[last] = op["value"]
                elif isinstance(parent, list):
                    parent.append(op["value"]) if last == "-" else parent.insert(int(last), op["value"])
                else:
                    parent[last] = op["value"]
            elif kind in ("move", "copy"):
                src = _pointer(op["from"])
                sparent = _container(doc, src)
                value = sparent[int(src[-1])] if isinstance(sparent, list) else sparent[src[-1]]
                if kind == "move":
                    doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
                doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": copy.deepcopy(value)}])
            else:
                raise JSONPatchError(f"unknown op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as err:
            if isinstance(err, JSONPatchError):
                raise
            raise JSONPatchError(f"{kind} {op.get('path')}: {err}") from err
    return doc
