"""The `strategy:` part of an environment's spec (issue 29): a canary walked step by step, or a blue-green switch.

```yaml
strategy:
  canary:
    workload: shop            # the Deployment's name
    steps:
      - set-weight: 10
      - analysis: {interval: 1m, count: 5, failure-limit: 2, checks: [{success-rate: {min: 99}}]}
      - approval: {}
      - set-weight: 50
      - pause: 5m
```

A step list whose last weight is below 100 ends with an implicit promote to 100, as Flagger promotes after maxWeight
once the analysis at it passed: the steps describe how the canary earns the traffic, the promote is always its end.
Not yet part of EnvironmentSpec (the lead wires it).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ferry.durations import Duration
from ferry.model import Message, Model

MAX_STEPS = 32
MAX_CHECKS = 8
MAX_COUNT = 100  # intervals of one analysis
MAX_PROMQL = 2048  # characters of a custom query
MAX_PAUSE_SECONDS = 7 * 86400
MAX_HOSTNAMES = 16
_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_LABEL = DNS_LABEL
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SuccessRate(Model):
    min: float = Field(ge=0, le=100, description="least percent of non-5xx requests")


class LatencyP99(Model):
    max: Duration = Field(description="largest p99 request duration, e.g. 500ms")


class Query(Model):
    name: str = Field(pattern=_DNS_LABEL, max_length=63)
    promql: str = Field(min_length=1, max_length=MAX_PROMQL)
    min: float | None = None
    max: float | None = None

    @field_validator("promql")
    @classmethod
    def _no_control(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("promql contains control characters")
        return value

    @model_validator(mode="after")
    def _bounded(self) -> Query:
        if self.min is None and self.max is None:
            raise ValueError(f"query check {self.name!r} has neither min nor max")
        return self


class Check(Model):
    success_rate: SuccessRate | None = Field(None, alias="success-rate")
    latency_p99: LatencyP99 | None = Field(None, alias="latency-p99")
    query: Query | None = None

    @model_validator(mode="after")
    def _one(self) -> Check:
        if sum(x is not None for x in (self.success_rate, self.latency_p99, self.query)) != 1:
            raise ValueError("a check is exactly one of success-rate, latency-p99, query")
        return self


class Analysis(Model):
    interval: Duration = Duration("1m")
    count: int = Field(5, ge=1, le=MAX_COUNT)
    failure_limit: int = Field(1, ge=1, le=MAX_COUNT, alias="failure-limit")
    no_data: Literal["fail", "pass"] = Field("fail", alias="no-data")
    checks: list[Check] = Field(min_length=1, max_length=MAX_CHECKS)

    @model_validator(mode="after")
    def _limits(self) -> Analysis:
        if not 1 <= self.interval.delta.total_seconds() <= 3600:
            raise ValueError(f"analysis interval {self.interval} must be between 1s and 1h")
        if self.failure_limit > self.count:
            raise ValueError(f"failure-limit {self.failure_limit} is more than count {self.count}")
        return self


class Step(Model):
    set_weight: int | None = Field(None, alias="set-weight", ge=1, le=100)
    pause: Duration | None = None
    analysis: Analysis | None = None
    approval: dict[str, str] | None = Field(None, max_length=0)

    def kind(self) -> str:
        return next(k for k in ("set-weight", "pause", "analysis", "approval") if self._get(k) is not None)

    def _get(self, kind: str) -> object:
        return getattr(self, kind.replace("-", "_"))

    @model_validator(mode="after")
    def _one(self) -> Step:
        if sum(x is not None for x in (self.set_weight, self.pause, self.analysis, self.approval)) != 1:
            raise ValueError("a step is exactly one of set-weight, pause, analysis, approval")
        if self.pause is not None and self.pause.delta.total_seconds() > MAX_PAUSE_SECONDS:
            raise ValueError(f"pause {self.pause} is longer than 7d")
        return self


def hostnames(value: list[str]) -> list[str]:
    """A route's hostnames: DNS names (RFC 1123, an optional leading `*.`), none repeated."""
    for host in value:
        if len(host) > 253 or not re.match(_HOSTNAME, host):
            raise ValueError(f"hostname {host[:80]!r} is not a DNS name (RFC 1123, an optional leading *.)")
    if len(set(value)) != len(value):
        raise ValueError("hostnames repeat")
    return value


class GatewayRef(Model):
    """The Gateway (gateway.networking.k8s.io/v1) whose HTTPRoute splits the traffic; without one, traffic follows
    the replica ratio."""

    name: str = Field(pattern=_DNS_LABEL, max_length=63)
    namespace: str = Field(pattern=_DNS_LABEL, max_length=63)
    section_name: str | None = Field(None, alias="section-name", pattern=_DNS_LABEL, max_length=63)


class Traffic(Model):
    """How the strategy's traffic reaches the workload: a gateway's route (with hostnames), and the Services'
    port when the release has no Service selecting the workload's pods."""

    gateway: GatewayRef | None = None
    port: int | None = Field(None, ge=1, le=65535)
    hostnames: list[str] = Field(default_factory=list, max_length=MAX_HOSTNAMES)

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, value: list[str]) -> list[str]:
        return hostnames(value)

    @model_validator(mode="after")
    def _routed(self) -> Traffic:
        if self.hostnames and self.gateway is None:
            raise ValueError("hostnames need a gateway (they are the route's)")
        return self


class Canary(Traffic):
    workload: str = Field(pattern=_DNS_LABEL, max_length=63)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _increasing(self) -> Canary:
        last = 0
        for index, step in enumerate(self.steps):
            if step.set_weight is not None:
                if step.set_weight <= last:
                    raise ValueError(f"step {index}: set-weight {step.set_weight} is not above {last}")
                last = step.set_weight
        return self


class BlueGreen(Traffic):
    workload: str = Field(pattern=_DNS_LABEL, max_length=63)
    preview_analysis: Analysis | None = Field(None, alias="preview-analysis")
    approval: bool = False

    @model_validator(mode="after")
    def _routed_preview(self) -> BlueGreen:
        if self.gateway is None:
            raise ValueError("blue-green needs a gateway: its route mirrors requests to the preview and switches them")
        return self


class Strategy(Model):
    canary: Canary | None = None
    blue_green: BlueGreen | None = Field(None, alias="blue-green")

    def kind_words(self) -> str:
        """The walk in words, for the record: 'canary 10% -> 50% -> 100%, 1 analysis, 1 approval'."""
        steps = plan(self)
        counts = [f"{n} {k}" for k in ("analysis", "approval", "pause") if (n := sum(s.kind == k for s in steps))]
        if self.blue_green is not None:
            return "blue-green: preview on mirrored requests" + "".join(f", {c}" for c in counts) + ", switch"
        weights = " -> ".join(f"{s.weight}%" for s in steps if s.kind in ("set-weight", "promote"))
        return f"canary {weights}" + (", " + ", ".join(counts) if counts else "")

    def longest(self, ready: timedelta, approval: timedelta) -> timedelta:
        """How long a rollout can take at most: each weight's wait for readiness, pauses, analyses, gates."""
        total = ready * 2  # the first readiness and the promotion's
        for step in plan(self):
            if step.kind in ("set-weight", "preview", "switch"):
                total += ready
            elif step.kind == "approval":
                total += approval
            elif step.kind == "analysis" and self.canary is not None:
                analysis = self.canary.steps[step.index].analysis
                total += analysis.interval.delta * analysis.count if analysis else timedelta(0)
            elif step.kind == "analysis" and self.blue_green and self.blue_green.preview_analysis:
                total += self.blue_green.preview_analysis.interval.delta * self.blue_green.preview_analysis.count
            elif step.kind == "pause" and self.canary is not None:
                pause = self.canary.steps[step.index].pause
                total += pause.delta if pause else timedelta(0)
        return total

    def has_approval(self) -> bool:
        if self.blue_green is not None:
            return self.blue_green.approval
        return any(s.approval is not None for s in self.canary.steps) if self.canary else False

    @property
    def workload(self) -> str:
        return (self.canary or self.blue_green).workload  # type: ignore[union-attr]

    @model_validator(mode="after")
    def _one(self) -> Strategy:
        if (self.canary is None) == (self.blue_green is None):
            raise ValueError("strategy is exactly one of canary, blue-green")
        return self


class PlannedStep(Message):
    index: int  # the spec's step index; -1 for the implicit promote
    kind: str
    weight: int  # the canary's weight after this step


def plan(strategy: Strategy) -> list[PlannedStep]:
    """The steps a rollout workflow walks, with the canary's weight after each; always ending at 100 (promote)."""
    out: list[PlannedStep] = []
    if strategy.blue_green is not None:
        # Flagger's blue/green over a route: green (the canary) previewed on mirrored requests, judged, approved,
        # then every request switched to it at once; the promotion copies it to the primary, which takes them back
        bg = strategy.blue_green
        out.append(PlannedStep(index=0, kind="preview", weight=0))
        if bg.preview_analysis is not None:
            out.append(PlannedStep(index=0, kind="analysis", weight=0))
        if bg.approval:
            out.append(PlannedStep(index=len(out), kind="approval", weight=0))
        return [
            *out,
            PlannedStep(index=-1, kind="switch", weight=100),
            PlannedStep(index=-1, kind="promote", weight=100),
        ]
    assert strategy.canary is not None
    weight = 0
    for index, step in enumerate(strategy.canary.steps):
        weight = step.set_weight if step.set_weight is not None else weight
        out.append(PlannedStep(index=index, kind=step.kind(), weight=weight))
    if weight < 100:
        out.append(PlannedStep(index=-1, kind="promote", weight=100))
    return out
