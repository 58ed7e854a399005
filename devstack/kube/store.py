"""The emulated API server's core: objects, resourceVersions, managedFields, watches. No HTTP here."""

from __future__ import annotations

import builtins
import copy
import datetime as dt
import ipaddress
import itertools
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from devstack.kube import fields
from devstack.kube.defaults import Invalid, apply_defaults, validate
from devstack.kube.resources import Catalogue, ResourceType, crd_resource_types

ObjKey = tuple[str, str, str, str]  # group, plural, namespace ("" if cluster-scoped), name
WATCH_WINDOW = 20_000  # events kept for watches; older resourceVersions get 410 Gone


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, "details": self.details, "code": self.code}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    rv: int
    type: str
    rt_key: tuple[str, str]
    namespace: str
    obj: dict[str, Any]


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _strip_system_meta(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in ("resourceVersion", "managedFields")}


class Store:
    """All objects, keyed by (group, plural, namespace, name). One lock; fine for a development server."""

    def __init__(self, persist_file: FsPath | None = None) -> None:
        self.catalogue = Catalogue.builtin()
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        self.rv = 0
        self.lock = threading.RLock()
        self._save_lock = threading.Lock()  # the saver thread and stop() may both save; one writer at a time
        self.changed = threading.Condition(self.lock)
        self.events: deque[Event] = deque(maxlen=WATCH_WINDOW)
        self.persist_file = persist_file
        self.dirty = False
        self._ips = itertools.count(10)
        self.listeners: list[Callable[[str, ResourceType, dict[str, Any]], None]] = []
        if persist_file and persist_file.is_file():
            self._load(persist_file)

    # ------------------------------------------------------------------------------------ persistence
    def _load(self, path: FsPath) -> None:
        data = json.loads(path.read_text())
        self.rv = data["rv"]
        for obj in data["objects"]:
            rt = self.catalogue.by_kind(obj["apiVersion"], obj["kind"])
            if rt is None:
                continue
            self.objects[self._key(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj
            if rt.kind == "CustomResourceDefinition":
                for crt in crd_resource_types(obj):
                    self.catalogue.add(crt)
        # instances of CRDs load after their CRD registered the type
        for obj in data["objects"]:
            rt = self.catalogue.by_kind(obj["apiVersion"], obj["kind"])
            if rt is not None and rt.crd:
                self.objects[self._key(rt, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj
        self._ips = itertools.count(10 + len(self.objects))

    def save(self) -> None:
        if not self.persist_file:
            return
        with self._save_lock:
            with self.lock:
                data = json.dumps({"rv": self.rv, "objects": list(self.objects.values())})
                self.dirty = False
            tmp = self.persist_file.with_suffix(".tmp")
            tmp.write_text(data)
            tmp.replace(self.persist_file)

    # --------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _key(rt: ResourceType, namespace: str, name: str) -> ObjKey:
        return (rt.group, rt.plural, namespace if rt.namespaced else "", name)

    def allocate_ip(self) -> str:
        return str(ipaddress.IPv4Address("10.96.0.0") + next(self._ips))

    def _not_found(self, rt: ResourceType, name: str) -> ApiError:
        res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return ApiError(404, "NotFound", f'{res} "{name}" not found',
                        {"name": name, "group": rt.group, "kind": rt.plural})

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and (self.catalogue.lookup("", "v1", "namespaces") is not None) and (
                ("", "namespaces", "", namespace) not in self.objects):
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})

    def _check_body(self, rt: ResourceType, body: Any, namespace: str, name: str | None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        # NB: like the real decoder, a body without apiVersion/kind takes them from the URL; a different
        # value is refused.
        body.setdefault("apiVersion", rt.api_version)
        body.setdefault("kind", rt.kind)
        if body.get("apiVersion") != rt.api_version or body.get("kind") != rt.kind:
            raise ApiError(400, "BadRequest",
                           f"the API version in the data ({body.get('apiVersion')}) and kind ({body.get('kind')}) "
                           f"do not match the URL ({rt.api_version}, {rt.kind})")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "BadRequest",
                               "the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if name is not None and meta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        if name is not None:
            meta["name"] = name
        return body

    def _finish(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Defaulting, validation, generation — every write goes through here."""
        apply_defaults(obj, self.allocate_ip)
        try:
            validate(obj, old)
        except Invalid as err:
            raise ApiError(422, "Invalid", str(err), {
                "name": err.name, "group": rt.group, "kind": rt.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in err.causes]},
            ) from err
        meta = obj["metadata"]
        if old is None:
            meta["generation"] = 1
        else:
            meta["generation"] = old["metadata"].get("generation", 1) + (
                1 if _spec_part(old) != _spec_part(obj) else 0)
        return obj

    def _commit(self, rt: ResourceType, key: ObjKey, obj: dict[str, Any] | None, event: str,
                old: dict[str, Any] | None, dry_run: bool) -> dict[str, Any]:
        """Store (or delete) and emit the watch event. Unchanged objects are not written."""
        if obj is not None and old is not None and obj == old:
            return copy.deepcopy(old)
        if dry_run:
            return copy.deepcopy(obj if obj is not None else old)  # type: ignore[arg-type]
        self.rv += 1
        if obj is None:
            assert old is not None
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            del self.objects[key]
            self.events.append(Event(self.rv, "DELETED", rt.key, key[2], gone))
            result = gone
        else:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.objects[key] = obj
            self.events.append(Event(self.rv, event, rt.key, key[2], obj))
            result = copy.deepcopy(obj)
        self.dirty = True
        self.changed.notify_all()
        for listener in self.listeners:
            listener(event if obj is not None else "DELETED", rt, result)
        return result

    # ---------------------------------------------------------------------------------- managedFields
    @staticmethod
    def _managers(obj: dict[str, Any]) -> list[dict[str, Any]]:
        return list(obj.get("metadata", {}).get("managedFields") or [])

    def _set_managed(self, obj: dict[str, Any], entries: list[dict[str, Any]]) -> None:
        entries = [e for e in entries if e.get("fieldsV1")]
        if entries:
            obj["metadata"]["managedFields"] = entries
        else:
            obj["metadata"].pop("managedFields", None)

    def _record_update(self, rt: ResourceType, manager: str, old: dict[str, Any] | None, new: dict[str, Any],
                       subresource: str = "") -> None:
        """A non-apply write: the fields it changed now belong to `manager` (operation Update)."""
        include_status = subresource == "status"
        new_paths = fields.paths_of(new, include_status=include_status)
        if include_status:
            new_paths = {p for p in new_paths if p[0] == "f:status"}
        old_obj = old or {}
        # NB: editing a field inside a list item does not take ownership of the item's existence ('.').
        changed = {p for p in new_paths if fields.value_at(old_obj, p) != fields.value_at(new, p)
                   and (p[-1] != "." or fields.value_at(old_obj, p) is fields.MISSING)}
        entries = self._managers(old) if old else []
        out: list[dict[str, Any]] = []
        mine: set[fields.Path] = set(changed)
        previous: dict[str, Any] | None = None
        for entry in entries:
            owned = fields.paths_from_v1(entry.get("fieldsV1") or {})
            if entry["manager"] == manager and entry.get("operation") == "Update" and entry.get(
                    "subresource", "") == subresource:
                mine |= owned & new_paths
                previous = entry
                continue
            owned = (owned - changed) & (fields.paths_of(new, include_status=True))
            out.append({**entry, "fieldsV1": fields.fields_v1(owned)})
        if mine and previous is not None and not changed and fields.fields_v1(mine) == previous.get("fieldsV1"):
            out.append(previous)  # nothing changed: leave the entry (and its time) alone
        elif mine:
            entry = {"manager": manager, "operation": "Update", "apiVersion": rt.api_version, "time": now(),
                     "fieldsType": "FieldsV1", "fieldsV1": fields.fields_v1(mine)}
            if subresource:
                entry["subresource"] = subresource
            out.append(entry)
        self._set_managed(new, out)

    # ---------------------------------------------------------------------------------------- verbs
    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(self._key(rt, namespace, name))
            if obj is None:
                raise self._not_found(rt, name)
            return copy.deepcopy(obj)

    def list(self, rt: ResourceType, namespace: str | None, match: Callable[[dict[str, Any]], bool]
             ) -> tuple[list[dict[str, Any]], int]:
        """Matching objects, sorted. NB: read-only views, not copies: a committed object is never mutated
        (every write builds a new dict), so LIST of 5,000 objects costs no deep copy."""
        with self.lock:
            items = [obj for (g, p, ns, _), obj in self.objects.items()
                     if (g, p) == rt.key and (namespace is None or ns == namespace) and match(obj)]
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            return items, self.rv

    def create(self, rt: ResourceType, namespace: str, body: Any, manager: str, dry_run: bool = False
               ) -> dict[str, Any]:
        with self.lock:
            obj = self._check_body(rt, copy.deepcopy(body), namespace, None)
            meta = obj["metadata"]
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if not meta.get("name"):
                raise ApiError(422, "Invalid", f"{rt.kind} is invalid: metadata.name: Required value: name or "
                               "generateName is required", {"kind": rt.kind})
            self._check_namespace(rt, namespace)
            key = self._key(rt, namespace, meta["name"])
            if key in self.objects:
                res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
                raise ApiError(409, "AlreadyExists", f'{res} "{meta["name"]}" already exists',
                               {"name": meta["name"], "group": rt.group, "kind": rt.plural})
            for drop in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "managedFields",
                         "generation"):
                meta.pop(drop, None)
            if rt.has_status and rt.kind not in ("Namespace",):
                obj.pop("status", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            self._finish(rt, obj, None)
            self._record_update(rt, manager, None, obj)
            return self._after_write(rt, key, obj, None, "ADDED", dry_run)

    def update(self, rt: ResourceType, namespace: str, name: str, body: Any, manager: str,
               subresource: str = "", dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            obj = self._check_body(rt, copy.deepcopy(body), namespace, name)
            key = self._key(rt, namespace, name)
            old = self.objects.get(key)
            if old is None:
                raise self._not_found(rt, name)
            rv = obj["metadata"].get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res} "{name}": the object has '
                               "been modified; please apply your changes to the latest version and try again",
                               {"name": name, "group": rt.group, "kind": rt.plural})
            new = self._merge_write(rt, old, obj, subresource)
            self._finish(rt, new, old)
            self._record_update(rt, manager, old, new, subresource)
            return self._after_write(rt, key, new, old, "MODIFIED", dry_run)

    def _merge_write(self, rt: ResourceType, old: dict[str, Any], obj: dict[str, Any], subresource: str
                     ) -> dict[str, Any]:
        """Main-resource writes ignore status; /status writes change only status."""
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = obj.get("status")
            if new["status"] is None:
                new.pop("status")
            return new
        meta = obj["metadata"]
        for system in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if system in old["metadata"]:
                meta[system] = old["metadata"][system]
            else:
                meta.pop(system, None)
        meta["managedFields"] = old["metadata"].get("managedFields", [])
        if rt.has_status:
            if "status" in old:
                obj["status"] = old["status"]
            else:
                obj.pop("status", None)
        return obj

    def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str, body: Any, manager: str | None,
              force: bool, subresource: str = "", dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            key = self._key(rt, namespace, name)
            old = self.objects.get(key)
            if patch_type == "apply":
                if not manager:
                    raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml requests require a "
                                   "fieldManager query parameter")
                return self._apply(rt, key, namespace, name, old, body, manager, force, subresource, dry_run)
            if old is None:
                raise self._not_found(rt, name)
            try:
                if patch_type == "json":
                    if not isinstance(body, list):
                        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
                    new = fields.json_patch(old, body)
                elif patch_type == "merge":
                    new = fields.json_merge_patch(copy.deepcopy(old), body)
                else:
                    if rt.crd:
                        raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                                       "format - accepted media types include: application/json-patch+json, "
                                       "application/merge-patch+json, application/apply-patch+yaml")
                    new = fields.strategic_merge(copy.deepcopy(old), body)
            except fields.JSONPatchError as err:
                raise ApiError(422, "Invalid", str(err)) from err
            if not isinstance(new, dict):
                raise ApiError(422, "Invalid", "the patch produced something that is not an object")
            new = self._check_body(rt, new, namespace, name)
            rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.plural} "{name}": the object '
                               "has been modified; please apply your changes to the latest version and try again")
            new = self._merge_write(rt, old, new, subresource) if subresource != "status" else new
            if subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status")}
            self._finish(rt, new, old)
            self._record_update(rt, manager or "unknown", old, new, subresource)
            return self._after_write(rt, key, new, old, "MODIFIED", dry_run)

    def _apply(self, rt: ResourceType, key: ObjKey, namespace: str, name: str, old: dict[str, Any] | None,
               body: Any, manager: str, force: bool, subresource: str, dry_run: bool) -> dict[str, Any]:
        applied = self._check_body(rt, copy.deepcopy(body), namespace, name)
        include_status = subresource == "status"
        new_paths = fields.paths_of(applied, include_status=include_status)
        if include_status:
            new_paths = {p for p in new_paths if p[0] == "f:status"}
        if old is None:
            if subresource:
                raise self._not_found(rt, name)
            self._check_namespace(rt, namespace)
            live: dict[str, Any] = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {}}
            entries: list[dict[str, Any]] = []
        else:
            live = copy.deepcopy(old)
            entries = self._managers(old)
        # conflicts: another manager owns a field we set, with a different value
        conflicts: list[tuple[str, fields.Path]] = []
        mine_before: set[fields.Path] = set()
        others: list[tuple[dict[str, Any], set[fields.Path]]] = []
        for entry in entries:
            owned = fields.paths_from_v1(entry.get("fieldsV1") or {})
            if entry["manager"] == manager and entry.get("operation") == "Apply" and entry.get(
                    "subresource", "") == subresource:
                mine_before = owned
                continue
            others.append((entry, owned))
            for path in owned & new_paths:
                if path[-1] == ".":
                    continue  # list-item existence is shared, never a conflict by itself
                if fields.value_at(live, path) != fields.value_at(applied, path):
                    conflicts.append((entry["manager"], path))
        if conflicts and not force:
            causes = [{"type": "FieldManagerConflict", "message": f'conflict with "{m}"',
                       "field": _dotted(p)} for m, p in sorted(set(conflicts))]
            listing = "\n".join(f'- conflict with "{m}": {_dotted(p)}' for m, p in sorted(set(conflicts)))
            raise ApiError(409, "Conflict", f"Apply failed with {len(causes)} conflict(s): {listing}",
                           {"name": name, "group": rt.group, "kind": rt.plural, "causes": causes})
        stolen = {p for _, p in conflicts}
        owned_by_others: set[fields.Path] = set()
        kept: list[dict[str, Any]] = []
        for entry, owned in others:
            owned = owned - stolen
            owned_by_others |= owned
            kept.append({**entry, "fieldsV1": fields.fields_v1(owned)})
        # fields this manager stopped applying and nobody else owns are removed
        fields.remove_unowned(live, mine_before - new_paths - owned_by_others, new_paths | owned_by_others)
        if subresource == "status":
            merged = copy.deepcopy(live)
            merged["status"] = fields.apply_merge(live.get("status"), applied.get("status") or {}, "", "status")
        else:
            merged = fields.apply_merge(live, {k: v for k, v in applied.items() if k != "status"})
            if old is not None:
                merged = self._merge_write(rt, old, merged, "")
        merged["apiVersion"], merged["kind"] = rt.api_version, rt.kind
        mine_entry = {"manager": manager, "operation": "Apply", "apiVersion": rt.api_version, "time": now(),
                      "fieldsType": "FieldsV1", "fieldsV1": fields.fields_v1(new_paths)}
        previous = next((e for e in entries if e["manager"] == manager and e.get("operation") == "Apply"
                         and e.get("subresource", "") == subresource), None)
        if previous is not None and previous.get("fieldsV1") == mine_entry["fieldsV1"]:
            mine_entry["time"] = previous["time"]  # no-op applies do not touch managedFields
        if subresource:
            mine_entry["subresource"] = subresource
        order = [e["manager"] + e.get("operation", "") for e in entries]
        all_entries = [*kept, mine_entry]
        all_entries.sort(key=lambda e: order.index(e["manager"] + e["operation"])
                         if e["manager"] + e["operation"] in order else len(order))
        merged.setdefault("metadata", {})["managedFields"] = all_entries
        self._set_managed(merged, all_entries)
        if old is None:
            merged["metadata"]["uid"] = str(uuid.uuid4())
            merged["metadata"]["creationTimestamp"] = now()
            merged["metadata"]["name"] = name
            if rt.namespaced:
                merged["metadata"]["namespace"] = namespace
        self._finish(rt, merged, old)
        return self._after_write(rt, key, merged, old, "ADDED" if old is None else "MODIFIED", dry_run)

    def _after_write(self, rt: ResourceType, key: ObjKey, obj: dict[str, Any], old: dict[str, Any] | None,
                     event: str, dry_run: bool) -> dict[str, Any]:
        if old is not None and obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            return self._commit(rt, key, None, "DELETED", old, dry_run)  # last finalizer removed
        if old is not None:
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        result = self._commit(rt, key, obj, event, old, dry_run)
        if not dry_run and rt.kind == "CustomResourceDefinition":
            self._register_crd(result)
        return result

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        self.catalogue.remove_group_plural(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        for crt in crd_resource_types(crd):
            self.catalogue.add(crt)

    def delete(self, rt: ResourceType, namespace: str, name: str, propagation: str | None = None,
               dry_run: bool = False, preconditions: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.lock:
            key = self._key(rt, namespace, name)
            old = self.objects.get(key)
            if old is None:
                raise self._not_found(rt, name)
            if preconditions and preconditions.get("uid") not in (None, old["metadata"]["uid"]):
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {preconditions['uid']}")
            if propagation not in (None, "Orphan", "Background", "Foreground"):
                raise ApiError(400, "BadRequest", f"propagationPolicy {propagation!r} is not one of Orphan, "
                               "Background, Foreground")
            if old["metadata"].get("finalizers"):
                if old["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(old)
                marked = copy.deepcopy(old)
                marked["metadata"]["deletionTimestamp"] = now()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(rt, key, marked, "MODIFIED", old, dry_run)
            if not dry_run:
                self._cascade(rt, old, propagation)
            result = self._commit(rt, key, None, "DELETED", old, dry_run)
            if rt.kind == "Namespace":
                result.setdefault("status", {})["phase"] = "Terminating"
                result["metadata"]["deletionTimestamp"] = now()
            return result

    def _cascade(self, rt: ResourceType, obj: dict[str, Any], propagation: str | None) -> None:
        """Namespace contents, CRD instances, and dependents by ownerReferences (garbage collection)."""
        uid = obj["metadata"]["uid"]
        if rt.kind == "Namespace":
            name = obj["metadata"]["name"]
            for key in [k for k in self.objects if k[2] == name]:
                dep_rt = self._rt_for_key(key)
                if dep_rt is not None:
                    self._commit(dep_rt, key, None, "DELETED", self.objects[key], False)
            return
        if rt.kind == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
            for key in [k for k in self.objects if (k[0], k[1]) == (group, plural)]:
                crt = self._rt_for_key(key)
                if crt is not None:
                    self._commit(crt, key, None, "DELETED", self.objects[key], False)
            self.catalogue.remove_group_plural(str(group), str(plural))
            return
        for key, dep in list(self.objects.items()):
            refs = dep["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") == uid for ref in refs):
                continue
            dep_rt = self._rt_for_key(key)
            if dep_rt is None:
                continue
            if propagation == "Orphan":
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid] or None
                if new["metadata"]["ownerReferences"] is None:
                    del new["metadata"]["ownerReferences"]
                self._commit(dep_rt, key, new, "MODIFIED", dep, False)
            else:
                self._cascade(dep_rt, dep, propagation)
                self._commit(dep_rt, key, None, "DELETED", dep, False)

    def _rt_for_key(self, key: ObjKey) -> ResourceType | None:
        obj = self.objects[key]
        return self.catalogue.by_kind(obj["apiVersion"], obj["kind"])

    def events_since(self, rv: int) -> builtins.list[Event] | None:
        """Events after rv, or None when rv is older than the watch window (410 Gone)."""
        if self.events and rv < self.events[0].rv - 1 and rv < self.rv - len(self.events):
            return None
        return [e for e in self.events if e.rv > rv]


def _dotted(path: fields.Path) -> str:
    out = ""
    for token in path:
        kind, _, rest = token.partition(":")
        if kind == "f":
            out += "." + rest
        elif kind in ("k", "v"):
            out += f"[{rest}]"
    return out
