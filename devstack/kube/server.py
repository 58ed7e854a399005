"""HTTP front of the emulator: Kubernetes REST paths, discovery, watch streams, Status errors, faults."""

from __future__ import annotations

import calendar
import contextlib
import json
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from devstack.kube.controller import SimulatedController
from devstack.kube.resources import ResourceType
from devstack.kube.store import ApiError, Store

GIT_VERSION = "v1.34.0-ferry-emulator"
_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


# ----------------------------------------------------------------------------------------- selectors
_TERM = re.compile(r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*(?:(?P<op>==|=|!=|\snotin\s|\sin\s)\s*"
                   r"(?P<val>\([^)]*\)|[A-Za-z0-9._-]*))?\s*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        terms.append(cur)
    return terms


LabelCheck = Callable[[dict[str, str]], bool]


def _requirement(key: str, op: str, values: set[str], negated: bool) -> LabelCheck:
    if not op:
        return lambda labels: (key in labels) != negated
    if op in ("=", "=="):
        return lambda labels: labels.get(key) in values
    if op == "!=":
        return lambda labels: labels.get(key) not in values
    if op == "in":
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def label_matcher(selector: str | None) -> LabelCheck:
    """Equality- and set-based label selectors: =, ==, !=, in, notin, exists, !exists."""
    if not selector:
        return lambda labels: True
    checks: list[LabelCheck] = []
    for term in _split_terms(selector):
        m = _TERM.match(" " + term.replace(" in ", "  in ").replace(" notin ", "  notin ") + " ")
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        key, op, val, neg = m["key"], (m["op"] or "").strip(), m["val"] or "", bool(m["neg"])
        if neg and op:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        values = {v.strip() for v in val[1:-1].split(",")} if val.startswith("(") else {val}
        checks.append(_requirement(key, op, values, neg))
    return lambda labels: all(check(labels) for check in checks)


ObjectCheck = Callable[[dict[str, Any]], bool]


def _field_requirement(field: str, value: str, equal: bool) -> ObjectCheck:
    return lambda obj: (obj["metadata"].get(field, "") == value) == equal


def field_matcher(selector: str | None) -> ObjectCheck:
    """Field selectors on metadata.name and metadata.namespace (=, ==, !=)."""
    if not selector:
        return lambda obj: True
    checks: list[ObjectCheck] = []
    for term in _split_terms(selector):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m or m[1] not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'"{term}" is not a known field selector: only "metadata.name", '
                           '"metadata.namespace"')
        checks.append(_field_requirement(m[1].split(".")[1], m[3], m[2] != "!="))
    return lambda obj: all(check(obj) for check in checks)


# ------------------------------------------------------------------------------------------ emulator
class KubeEmulator:
    """One emulated API server. Start in-process (tests) or via `python -m devstack.kube` (ferry dev up)."""

    def __init__(self, port: int = 0, state_file: Path | None = None, rollout_delay: float = 0.5) -> None:
        self.port = port
        self.store = Store(state_file)
        self.controller = SimulatedController(self.store, rollout_delay)
        self.requests: Counter[str] = Counter()
        self.fail_next = 0
        self.fail_mode = "error"
        self.hang_seconds = 30.0
        self._fault_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._saver_stop = threading.Event()
        self._connections: set[Any] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> KubeEmulator:
        emulator = self

        class Handler(_Handler):
            emu = emulator

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        if not self.controller._thread.is_alive():
            self.controller = SimulatedController(self.store, self.controller.rollout_delay) if (
                self.controller._stop) else self.controller
            self.controller.start()
        serve = threading.Thread(target=self._httpd.serve_forever, name="kube-emulator", daemon=True)
        serve.start()
        self._saver_stop.clear()
        saver = threading.Thread(target=self._save_loop, name="kube-emulator-saver", daemon=True)
        saver.start()
        self._threads = [serve, saver]
        return self

    def _save_loop(self) -> None:
        while not self._saver_stop.wait(1.0):
            if self.store.dirty:
                self.store.save()

    def stop(self) -> None:
        """Stop serving (connections are refused); objects stay in memory and in the state file."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        # NB: keep-alive connections would otherwise go on being served by their handler threads.
        with self._fault_lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
        self._saver_stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        self.store.save()

    def close(self) -> None:
        self.stop()
        self.controller.stop()
        self.store.listeners.clear()

    def inject_faults(self, count: int, mode: str = "error") -> None:
        """The next `count` requests answer 500 (mode "error") or hang without answering (mode "timeout")."""
        with self._fault_lock:
            self.fail_next, self.fail_mode = count, mode

    def take_fault(self) -> str | None:
        with self._fault_lock:
            if self.fail_next <= 0:
                return None
            self.fail_next -= 1
            return self.fail_mode

    # --------------------------------------------------------------------------------- discovery
    def discovery(self, parts: list[str]) -> dict[str, Any] | None:
        cat = self.store.catalogue
        if parts == ["version"]:
            return {"major": "1", "minor": "34", "gitVersion": GIT_VERSION, "platform": "linux/amd64",
                    "goVersion": "go1.24", "compiler": "gc", "buildDate": "2026-01-01T00:00:00Z",
                    "gitCommit": "0" * 40, "gitTreeState": "clean"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
        if parts == ["apis"]:
            groups = []
            for group, versions in sorted(cat.groups().items()):
                gv = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
                groups.append({"name": group, "versions": gv, "preferredVersion": gv[0]})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if len(parts) == 2 and parts[0] == "apis":
            versions = cat.groups().get(parts[1]) or []
            if not versions:
                return None
            gv = [{"groupVersion": f"{parts[1]}/{v}", "version": v} for v in versions]
            return {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1], "versions": gv, "preferredVersion": gv[0]}
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            types = cat.in_group_version(group, version)
            if not types:
                return None
            resources: list[dict[str, Any]] = []
            for rt in sorted(types, key=lambda t: t.plural):
                resources.append({"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                                  "kind": rt.kind, "verbs": list(rt.verbs), "shortNames": list(rt.short_names),
                                  "storageVersionHash": ""})
                if rt.has_status:
                    resources.append({"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                                      "kind": rt.kind, "verbs": ["get", "patch", "update"]})
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version, "resources": resources}
        return None


class _Handler(BaseHTTPRequestHandler):
    emu: KubeEmulator
    protocol_version = "HTTP/1.1"
    # NB: headers and body are separate writes; with Nagle on, each response waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "ferry-kube-emulator"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def setup(self) -> None:
        super().setup()
        with self.emu._fault_lock:
            self.emu._connections.add(self.connection)

    def finish(self) -> None:
        with self.emu._fault_lock:
            self.emu._connections.discard(self.connection)
        super().finish()

    # -------------------------------------------------------------------------------- plumbing
    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return None
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        try:
            return yaml.safe_load(raw) if ctype == "application/apply-patch+yaml" else json.loads(raw)
        except (ValueError, yaml.YAMLError) as err:
            raise ApiError(400, "BadRequest", f"error decoding request body: {err}") from err

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/") if p]
        # NB: read the whole body first, so an early error reply leaves the keep-alive connection clean.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        try:
            if parts and parts[0] == "_emulator":
                return self._control(method, parts[1:])
            self.emu.requests[method] += 1
            fault = self.emu.take_fault()
            if fault == "timeout":
                time.sleep(self.emu.hang_seconds)
                self.close_connection = True
                return
            if fault == "error":
                raise ApiError(500, "InternalError", "Internal error occurred: injected fault (emulator)")
            if method == "GET" and (parts in (["healthz"], ["readyz"], ["livez"])):
                data = b"ok"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(data)
                return
            if method == "GET":
                disc = self.emu.discovery(parts)
                if disc is not None:
                    return self._send(200, disc)
            self._resource(method, parts, query)
        except ApiError as err:
            self._send(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _control(self, method: str, parts: list[str]) -> None:
        body = self._body() or {}
        if parts == ["faults"] and method == "POST":
            self.emu.inject_faults(int(body.get("count", 1)), body.get("mode", "error"))
            if "hang_seconds" in body:
                self.emu.hang_seconds = float(body["hang_seconds"])
            return self._send(200, {"fail_next": self.emu.fail_next, "mode": self.emu.fail_mode})
        if parts == ["config"] and method == "POST":
            if "rollout_delay" in body:
                self.emu.controller.rollout_delay = float(body["rollout_delay"])
            return self._send(200, {"rollout_delay": self.emu.controller.rollout_delay})
        if parts == ["stats"]:
            if method == "DELETE":
                self.emu.requests.clear()
            return self._send(200, {"requests": dict(self.emu.requests),
                                    "objects": len(self.emu.store.objects), "resourceVersion": self.emu.store.rv})
        raise ApiError(404, "NotFound", "unknown emulator control path")

    # ------------------------------------------------------------------------------- resources
    def _route(self, parts: list[str]) -> tuple[ResourceType, str | None, str | None, str]:
        """-> (type, namespace or None, name or None, subresource)."""
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self.emu.store.catalogue.lookup(group, version, rest[0])
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and not (sub == "status" and rt.has_status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rt.namespaced and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt, namespace, name, sub

    def _manager(self, query: dict[str, str]) -> str:
        return query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]

    def _resource(self, method: str, parts: list[str], query: dict[str, str]) -> None:
        store = self.emu.store
        rt, namespace, name, sub = self._route(parts)
        dry_run = query.get("dryRun") == "All"
        if "dryRun" in query and not dry_run:
            raise ApiError(400, "BadRequest", f"Invalid dry run value {query['dryRun']!r}: only All is supported")
        ns = namespace or ""
        if method == "GET" and name is None:
            if query.get("watch") in ("true", "1"):
                return self._watch(rt, namespace, query)
            return self._list(rt, namespace, query)
        if method == "GET":
            return self._send(200, store.get(rt, ns, name or ""))
        if method == "POST" and name is None:
            body = self._body()
            return self._send(200 if dry_run else 201, store.create(rt, ns, body, self._manager(query), dry_run))
        if method == "PUT" and name is not None:
            body = self._body()
            return self._send(200, store.update(rt, ns, name, body, self._manager(query), sub, dry_run))
        if method == "PATCH" and name is not None:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch_type = _PATCH_TYPES.get(ctype)
            if patch_type is None:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                               f"accepted media types include: {', '.join(_PATCH_TYPES)}")
            body = self._body()
            force = query.get("force") in ("true", "1")
            if force and patch_type != "apply":
                raise ApiError(400, "BadRequest", "force is only allowed for apply patches")
            manager = query.get("fieldManager") if patch_type == "apply" else self._manager(query)
            existed = (rt.group, rt.plural, ns if rt.namespaced else "", name) in store.objects
            result = store.patch(rt, ns, name, patch_type, body, manager, force, sub, dry_run)
            return self._send(201 if (patch_type == "apply" and not existed and not dry_run) else 200, result)
        if method == "DELETE":
            body = self._body() or {}
            propagation = query.get("propagationPolicy") or body.get("propagationPolicy")
            if body.get("dryRun") == ["All"]:
                dry_run = True
            if name is None:
                return self._delete_collection(rt, namespace, query, propagation, dry_run)
            return self._send(200, store.delete(rt, ns, name, propagation, dry_run, body.get("preconditions")))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _matcher(self, query: dict[str, str]) -> ObjectCheck:
        labels, flds = label_matcher(query.get("labelSelector")), field_matcher(query.get("fieldSelector"))
        return lambda obj: labels(obj["metadata"].get("labels") or {}) and flds(obj)

    def _list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> None:
        items, rv = self.emu.store.list(rt, namespace, self._matcher(query))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        limit = int(query.get("limit") or 0)
        offset = int(query.get("continue") or 0)
        if limit:
            if offset + limit < len(items):
                meta["continue"] = str(offset + limit)
                meta["remainingItemCount"] = len(items) - offset - limit
            items = items[offset:offset + limit]
        if "as=Table" in (self.headers.get("Accept") or ""):
            return self._send(200, _table(rt, items, meta))
        self._send(200, {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items})

    def _delete_collection(self, rt: ResourceType, namespace: str | None, query: dict[str, str],
                           propagation: str | None, dry_run: bool) -> None:
        store = self.emu.store
        with store.lock:
            items, _ = store.list(rt, namespace, self._matcher(query))
            deleted = [store.delete(rt, o["metadata"].get("namespace", ""), o["metadata"]["name"], propagation,
                                    dry_run) for o in items]
        self._send(200, {"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                         "metadata": {"resourceVersion": str(store.rv)}, "items": deleted})

    def _watch(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> None:
        store, match = self.emu.store, self._matcher(query)
        timeout = min(float(query.get("timeoutSeconds") or 1800), 1800)
        deadline = time.monotonic() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def emit(event_type: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        raw_rv = query.get("resourceVersion") or ""
        with store.lock:
            if raw_rv in ("", "0"):
                items, cursor = store.list(rt, namespace, match)
                initial = [("ADDED", o) for o in items]
            else:
                cursor, initial = int(raw_rv), []
                if store.events_since(cursor) is None:
                    initial = [("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                          "message": f"too old resource version: {cursor} ({store.rv})",
                                          "reason": "Expired", "code": 410})]
                    deadline = 0
        try:
            for event_type, obj in initial:
                emit(event_type, obj)
            while time.monotonic() < deadline:
                with store.changed:
                    events: list[Any] = store.events_since(cursor) or []
                    if not events:
                        store.changed.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                        events = store.events_since(cursor) or []
                for event in events:
                    cursor = event.rv
                    if event.rt_key != rt.key or (namespace is not None and event.namespace != namespace):
                        continue
                    if match(event.obj):
                        emit(event.type, event.obj)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def _table(rt: ResourceType, items: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """meta.k8s.io/v1 Table, which `kubectl get` asks for."""
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
               {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}]
    rows = [{"cells": [o["metadata"]["name"], _age(o["metadata"].get("creationTimestamp"))],
             "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}
            for o in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns,
            "rows": rows}


def _age(created: str | None) -> str:
    if not created:
        return "<unknown>"
    seconds = int(time.time() - calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"
