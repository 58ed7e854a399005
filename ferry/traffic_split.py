"""Pure rules of the SIMULATED traffic generator (devstack/simulated_traffic.py): no pod runs here, so it plays the
requests an HTTPRoute (or a Service, by replica ratio) would carry. No I/O: objects in, request counts out.

Each second (constant):
- an HTTPRoute (gateway.networking.k8s.io/v1) sends `ferry.dev/simulated-rps` requests (default 20, 0..1000), split
  evenly across its rules that have backendRefs, then by weight across each rule's backendRefs (Gateway API: weight
  defaults to 1, 0..1,000,000; weight 0 gets nothing; only kind Service of the core group, same namespace unless
  `namespace` is set);
- a Service no route references but annotated `ferry.dev/simulated-rps` gets that many (replica-ratio mode,
  route="");
- a Service's requests go to the Deployments whose pod-template labels match its selector, split by readyReplicas;
  none ready: they fail 503 (deployment=""); a Service that does not exist: 500 (Gateway API's invalid backend).
Every split is a largest-remainder apportionment with the remainders carried to the next second, so the counts are
exact (90/10 of 20 is 18/2 every second) and never drift. Per Deployment: an image tag containing "broken" answers
50 % 500s; annotations `ferry.dev/simulated-error-rate` (percent, 0..100) and `ferry.dev/simulated-latency-ms`
(median, 0..60000; default 50) on the pod template, else on the Deployment, override. Errors are carried the same
way (5 % of 20 is exactly 1 each second). Latency: a second's n requests take the stratified points of a uniform
spread of +/-20 % around the median, median * (0.8 + 0.4 * (j + u) / n) for j < n, with u in [0, 1) drawn from the
seed, the second and the series: the median is the set value and the p99 about 1.2 times it. A bad value (wrong type,
out of range) is ignored with a warning: the default applies, or the backend gets nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

RPS_ANNOTATION = "ferry.dev/simulated-rps"
ERROR_RATE_ANNOTATION = "ferry.dev/simulated-error-rate"
LATENCY_ANNOTATION = "ferry.dev/simulated-latency-ms"
DEFAULT_RPS = 20
MAX_RPS = 1000
DEFAULT_WEIGHT = 1  # Gateway API
MAX_WEIGHT = 1_000_000  # Gateway API's bound on a backendRef's weight
BROKEN_MARK = "broken"
BROKEN_ERROR_PERCENT = 50
MAX_PERCENT = 100
DEFAULT_LATENCY_MS = 50
MAX_LATENCY_MS = 60_000
LATENCY_SPREAD = 0.2  # +/-20 % around the median
MAX_RULES = 16  # Gateway API bounds rules and backendRefs per rule to 16
MAX_REFS = 16
MAX_REPLICAS = 1_000_000
MAX_CARRY_KEYS = 100_000  # remainders kept; beyond, forgotten (a split restarts exact, off by < 1 request once)
OK_CODE = "200"
ERROR_CODE = "500"
UNAVAILABLE_CODE = "503"
# Prometheus' default buckets, 5 ms to 10 s
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

Warn = Callable[[str, str], None]  # (reason, detail): the caller counts each detail once
Carry = dict[Hashable, Fraction]


class Bad(ValueError):
    """A value the rules refuse: its reason."""


@dataclass(frozen=True)
class Flow:
    """One second's requests of one series: `errors` of them answered `error_code`, the rest 200."""

    namespace: str
    route: str
    service: str
    deployment: str
    requests: int
    errors: int
    error_code: str
    latency_ms: float


def bounded(value: object, low: int, high: int, what: str, integer: bool = False) -> Fraction:
    """A number (an int, or a decimal string as annotations hold) in low..high; Bad otherwise."""
    if isinstance(value, bool):
        raise Bad(f"{what}: {value!r} is not a number")
    if isinstance(value, int):
        number = Fraction(value)
    elif isinstance(value, str) and len(value) <= 32:
        try:
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise Bad(f"{what}: {value!r} is not a number") from None
        if not dec.is_finite():
            raise Bad(f"{what}: {value!r} is not a number")
        number = Fraction(dec)
    else:
        raise Bad(f"{what}: {str(value)[:40]!r} is not a number")
    if integer and number.denominator != 1:
        raise Bad(f"{what}: {value!r} is not a whole number")
    if not low <= number <= high:
        raise Bad(f"{what}: {value!r} is out of range {low}..{high}")
    return number


def apportion(
    total: int, weights: Sequence[int | Fraction], carry: Sequence[Fraction]
) -> tuple[list[int], list[Fraction]]:
    """`total` split by `weights` (largest remainder, ties to the first), the last remainders `carry` added in:
    the counts (summing to `total`, none to a weight 0) and the new remainders. All weights 0: nothing sent."""
    weight_sum = sum(weights, Fraction(0))
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights), [Fraction(0)] * len(weights)
    expected = [(total * Fraction(w) / weight_sum + (c if w > 0 else 0)) for w, c in zip(weights, carry, strict=True)]
    counts = [max(0, math.floor(e)) for e in expected]
    left = total - sum(counts)
    order = sorted((i for i, w in enumerate(weights) if w > 0), key=lambda i: (-(expected[i] - counts[i]), i))
    for i in order[: max(0, left)]:
        counts[i] += 1
    return counts, [e - n if w > 0 else Fraction(0) for e, n, w in zip(expected, counts, weights, strict=True)]


def carried(total: int, weights: Sequence[int | Fraction], keys: Sequence[Hashable], carry: Carry) -> list[int]:
    """apportion() with the remainders kept in `carry` under `keys`."""
    if len(carry) > MAX_CARRY_KEYS:
        carry.clear()
    counts, left = apportion(total, weights, [carry.get(k, Fraction(0)) for k in keys])
    carry.update(zip(keys, left, strict=True))
    return counts


def errors_of(requests: int, percent: Fraction, key: Hashable, carry: Carry) -> int:
    """How many of `requests` fail at `percent`, the fraction carried to the next second."""
    expected = requests * percent / 100 + carry.get(key, Fraction(0))
    errors = min(requests, max(0, math.floor(expected)))
    carry[key] = expected - errors
    return errors


def bucket_counts(requests: int, median_ms: float, u: float) -> tuple[list[int], float]:
    """The cumulative counts per BUCKETS bound of a second's latencies (module docstring) and their sum, seconds."""
    low = median_ms * (1 - LATENCY_SPREAD) / 1000
    width = median_ms * 2 * LATENCY_SPREAD / 1000
    if requests <= 0:
        return [0] * len(BUCKETS), 0.0
    counts = []
    for le in BUCKETS:
        if width <= 0:
            counts.append(requests if low <= le else 0)
        else:
            counts.append(min(requests, max(0, math.floor((le - low) * requests / width - u) + 1)))
    return counts, requests * low + width * ((requests - 1) / 2 + u)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any, limit: int) -> list[Any]:
    return value[:limit] if isinstance(value, list) else []


def _name(obj: Any) -> tuple[str, str] | None:
    meta = _dict(_dict(obj).get("metadata"))
    ns, name = meta.get("namespace"), meta.get("name")
    if isinstance(ns, str) and isinstance(name, str) and 0 < len(ns) <= 253 and 0 < len(name) <= 253:
        return ns, name
    return None


def _annotation(obj: dict[str, Any], key: str) -> Any:
    return _dict(_dict(obj.get("metadata")).get("annotations")).get(key)


def _labels(value: Any) -> dict[str, str] | None:
    labels = _dict(value)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        return None
    return labels


@dataclass(frozen=True)
class Backend:
    name: str
    labels: dict[str, str]
    ready: int
    error_percent: Fraction
    latency_ms: float


def behaviour(deployment: dict[str, Any], where: str, warn: Warn) -> tuple[Fraction, float]:
    """(error percent, median latency ms) of a Deployment, from its pod template (module docstring)."""
    template = _dict(_dict(deployment.get("spec")).get("template"))
    images = [_dict(c).get("image") for c in _list(_dict(template.get("spec")).get("containers"), 100)]
    tags = [str(i).rsplit("/", 1)[-1].partition(":")[2] for i in images if isinstance(i, str)]
    percent = Fraction(BROKEN_ERROR_PERCENT if any(BROKEN_MARK in t for t in tags) else 0)
    latency = float(DEFAULT_LATENCY_MS)
    for obj in (deployment, template):  # the pod template's annotation wins
        for key, high in ((ERROR_RATE_ANNOTATION, MAX_PERCENT), (LATENCY_ANNOTATION, MAX_LATENCY_MS)):
            raw = _annotation(obj, key)
            if raw is None:
                continue
            try:
                value = bounded(raw, 0, high, key)
            except Bad as err:
                warn("annotation", f"{where}: {err}")
                continue
            if key == ERROR_RATE_ANNOTATION:
                percent = value
            else:
                latency = float(value)
    return percent, latency


def backends_by_namespace(deployments: Sequence[Any], warn: Warn) -> dict[str, list[Backend]]:
    out: dict[str, list[Backend]] = {}
    for obj in deployments:
        ident = _name(obj)
        if ident is None:
            warn("object", "a Deployment without a namespace and name")
            continue
        where = f"Deployment {ident[0]}/{ident[1]}"
        template = _dict(_dict(obj.get("spec")).get("template"))
        labels = _labels(_dict(template.get("metadata")).get("labels"))
        if labels is None:
            warn("object", f"{where}: pod-template labels are not strings")
            continue
        ready = _dict(obj.get("status")).get("readyReplicas", 0)
        if isinstance(ready, bool) or not isinstance(ready, int) or not 0 <= ready <= MAX_REPLICAS:
            warn("object", f"{where}: readyReplicas {str(ready)[:40]!r} is not a count")
            ready = 0
        percent, latency = behaviour(obj, where, warn)
        out.setdefault(ident[0], []).append(Backend(ident[1], labels, ready, percent, latency))
    return out


def route_rps(obj: dict[str, Any], where: str, warn: Warn) -> int:
    raw = _annotation(obj, RPS_ANNOTATION)
    if raw is None:
        return DEFAULT_RPS
    try:
        return int(bounded(raw, 0, MAX_RPS, RPS_ANNOTATION, integer=True))
    except Bad as err:
        warn("annotation", f"{where}: {err}; {DEFAULT_RPS} used")
        return DEFAULT_RPS


def backend_refs(rule: Any, namespace: str, where: str, warn: Warn) -> list[tuple[str, str, int]]:
    """A rule's Service backends as (namespace, name, weight); a ref that is not a Service or has a bad weight
    gets nothing (warned)."""
    refs = []
    for ref in _list(_dict(rule).get("backendRefs"), MAX_REFS):
        ref = _dict(ref)
        name, kind, group = ref.get("name"), ref.get("kind", "Service"), ref.get("group", "")
        ns = ref.get("namespace", namespace)
        if not isinstance(name, str) or not name or not isinstance(ns, str) or not ns:
            warn("backend-ref", f"{where}: a backendRef without a name")
            continue
        if kind != "Service" or group not in ("", "core"):
            warn("backend-ref", f"{where}: backendRef {name}: kind {str(kind)[:40]!r} is not a Service")
            continue
        try:
            raw = ref.get("weight", DEFAULT_WEIGHT)
            if not isinstance(raw, int):  # an integer in the API, never a string
                raise Bad(f"weight: {str(raw)[:40]!r} is not an integer")
            weight = int(bounded(raw, 0, MAX_WEIGHT, "weight", integer=True))
        except Bad as err:
            warn("weight", f"{where}: backendRef {name}: {err}")
            continue
        refs.append((ns[:253], name[:253], weight))
    return refs


Demand = tuple[str, str, str, int]  # service namespace, service, route, requests
MIRROR_FILTER = "RequestMirror"


def mirrors(rule: Any, namespace: str) -> list[tuple[str, str]]:
    """The Services a rule's RequestMirror filters copy its requests to (a whole copy: percent is not simulated)."""
    out = []
    for entry in _list(_dict(rule).get("filters"), MAX_REFS):
        entry = _dict(entry)
        if entry.get("type") != MIRROR_FILTER:
            continue
        ref = _dict(_dict(entry.get("requestMirror")).get("backendRef"))
        name, ns = ref.get("name"), ref.get("namespace", namespace)
        if isinstance(name, str) and name and isinstance(ns, str) and ref.get("kind", "Service") == "Service":
            out.append((ns[:253], name[:253]))
    return out


def route_demands(routes: Sequence[Any], carry: Carry, warn: Warn) -> tuple[list[Demand], set[tuple[str, str]]]:
    """Each route's requests this second per backend Service, and every (namespace, Service) a route references."""
    demands: list[Demand] = []
    referenced: set[tuple[str, str]] = set()
    for obj in routes:
        ident = _name(obj)
        if ident is None:
            warn("object", "an HTTPRoute without a namespace and name")
            continue
        ns, route = ident
        where = f"HTTPRoute {ns}/{route}"
        parsed = [(r, backend_refs(r, ns, where, warn)) for r in _list(_dict(obj.get("spec")).get("rules"), MAX_RULES)]
        raw_rules = [r for r, refs in parsed if refs]
        rules = [refs for _, refs in parsed if refs]
        referenced.update((sns, name) for refs in rules for sns, name, _ in refs)
        per_rule = carried(
            route_rps(obj, where, warn), [1] * len(rules), [(ns, route, i) for i in range(len(rules))], carry
        )
        for i, (refs, n) in enumerate(zip(rules, per_rule, strict=True)):
            keys = [(ns, route, i, sns, name, j) for j, (sns, name, _) in enumerate(refs)]
            for (sns, name, _), count in zip(refs, carried(n, [w for *_, w in refs], keys, carry), strict=True):
                if count:
                    demands.append((sns, name, route, count))
            # a RequestMirror filter sends a copy of every request of the rule (the answers are dropped)
            demands.extend((sns, name, route, n) for sns, name in mirrors(raw_rules[i], ns) if n)
    return demands, referenced


def plan(
    routes: Sequence[Any], services: Sequence[Any], deployments: Sequence[Any], carry: Carry, warn: Warn
) -> list[Flow]:
    """One second's requests: routes' and annotated Services' (module docstring), per series."""
    demands, referenced = route_demands(routes, carry, warn)
    selectors: dict[tuple[str, str], dict[str, str] | None] = {}
    for obj in services:
        ident = _name(obj)
        if ident is None:
            warn("object", "a Service without a namespace and name")
            continue
        selector = _labels(_dict(obj.get("spec")).get("selector"))
        if selector is None:
            warn("object", f"Service {ident[0]}/{ident[1]}: selector values are not strings")
        selectors[ident] = selector or None
        if ident not in referenced and _annotation(obj, RPS_ANNOTATION) is not None:
            rps = _service_rps(obj, f"Service {ident[0]}/{ident[1]}", warn)
            if rps:
                demands.append((ident[0], ident[1], "", rps))
    backends = backends_by_namespace(deployments, warn)
    flows: list[Flow] = []
    for ns, service, route, count in demands:
        flows.extend(_serve(ns, service, route, count, selectors, backends.get(ns, []), carry))
    return flows


def _service_rps(obj: dict[str, Any], where: str, warn: Warn) -> int:
    try:
        return int(bounded(_annotation(obj, RPS_ANNOTATION), 0, MAX_RPS, RPS_ANNOTATION, integer=True))
    except Bad as err:
        warn("annotation", f"{where}: {err}; no traffic")
        return 0


def _serve(
    ns: str,
    service: str,
    route: str,
    count: int,
    selectors: dict[tuple[str, str], dict[str, str] | None],
    backends: list[Backend],
    carry: Carry,
) -> list[Flow]:
    if (ns, service) not in selectors:
        return [Flow(ns, route, service, "", count, count, ERROR_CODE, 0.0)]
    selector = selectors[(ns, service)]
    ready = [b for b in backends if selector and b.ready > 0 and all(b.labels.get(k) == v for k, v in selector.items())]
    if not ready:
        return [Flow(ns, route, service, "", count, count, UNAVAILABLE_CODE, 0.0)]
    keys = [(ns, route, service, b.name) for b in ready]
    flows = []
    for b, n, key in zip(ready, carried(count, [b.ready for b in ready], keys, carry), keys, strict=True):
        if n:
            errors = errors_of(n, b.error_percent, ("errors", *key), carry)
            flows.append(Flow(ns, route, service, b.name, n, errors, ERROR_CODE, b.latency_ms))
    return flows
