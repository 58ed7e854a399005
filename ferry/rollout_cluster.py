"""The rollout's cluster activities' names and messages (activities/cluster/rollout.py)."""

from __future__ import annotations

from pydantic import Field

from ferry.model import Message
from ferry.rollout_spec import DNS_LABEL, Strategy, Traffic

ROLLOUT_INITIALIZE = "rollout_initialize"
ROLLOUT_SET_WEIGHT = "rollout_set_weight"
ROLLOUT_PREVIEW = "rollout_preview"  # blue-green: green scaled up, requests mirrored to it
ROLLOUT_PROMOTE = "rollout_promote"
ROLLOUT_FINISH = "rollout_finish"
ROLLOUT_STATUS = "rollout_status"


class CanaryTarget(Message, Traffic):
    """One environment's rollout workload: where it runs, and how its traffic is split (Traffic: the strategy's
    gateway, port and hostnames, validated as there)."""

    environment: str = Field(min_length=1, max_length=253)
    cluster: str = Field("", max_length=253)
    namespace: str = Field(pattern=DNS_LABEL, max_length=63)
    workload: str = Field(pattern=DNS_LABEL, max_length=63)

    @classmethod
    def of(cls, environment: str, cluster: str, namespace: str, strategy: Strategy) -> CanaryTarget:
        """The target a strategy names: its workload and traffic options, in the environment's namespace."""
        traffic = strategy.canary or strategy.blue_green
        assert traffic is not None  # Strategy is exactly one of them
        return cls(
            environment=environment,
            cluster=cluster,
            namespace=namespace,
            workload=traffic.workload,
            gateway=traffic.gateway,
            port=traffic.port,
            hostnames=list(traffic.hostnames),
        )


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
