"""The rollout's cluster activities' names and messages (activities/cluster/rollout.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ferry.model import Message
from ferry.rollout_spec import DNS_LABEL, MAX_HOSTNAMES, GatewayRef, hostnames

ROLLOUT_INITIALIZE = "rollout_initialize"
ROLLOUT_SET_WEIGHT = "rollout_set_weight"
ROLLOUT_PROMOTE = "rollout_promote"
ROLLOUT_FINISH = "rollout_finish"
ROLLOUT_STATUS = "rollout_status"


class CanaryTarget(Message):
    """One environment's rollout workload: where it runs and how its traffic is split (the strategy's gateway,
    port and hostnames)."""

    environment: str = Field(min_length=1, max_length=253)
    cluster: str = Field("", max_length=253)
    namespace: str = Field(pattern=DNS_LABEL, max_length=63)
    workload: str = Field(pattern=DNS_LABEL, max_length=63)
    gateway: GatewayRef | None = None
    port: int | None = Field(None, ge=1, le=65535)
    hostnames: list[str] = Field(default_factory=list, max_length=MAX_HOSTNAMES)

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, value: list[str]) -> list[str]:
        return hostnames(value)


class CanaryStatus(Message):
    """The pair as the cluster has it: the canary's share of traffic (the route's, else the replica ratio), both
    Deployments' images, replicas and ready replicas, and whether the primary runs the canary's pod template."""

    weight: int = 0
    canary_image: str = ""
    primary_image: str = ""
    canary_replicas: int = 0
    canary_ready: int = 0
    primary_replicas: int = 0
    primary_ready: int = 0
    primary_matches_canary: bool = False
    route: bool = False
