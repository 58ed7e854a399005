"""The worker's sticky-cache watch: every few minutes, how many workflows run on its task queue (Visibility) and how
many workers poll it (DescribeTaskQueue), judged by ferry.capacity. A cache too small for the queue is logged as a
warning naming the setting, and exported as a gauge (`ferry_sticky_cache_demand_ratio`: an even share of the
queue's running workflows over this worker's cache; above 1 every workflow task misses)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.service import RPCError

from ferry.capacity import CachePressure, cache_pressure

log = logging.getLogger("ferry.worker")

EVERY = timedelta(minutes=5)


async def queue_load(client: Client, queue: str, worker: str | None = None) -> tuple[int, int]:
    """(running workflows on `queue`, distinct workers polling its workflow tasks now; `worker`, the identity of the
    one asking, counts as one even before its first poll reaches the server)."""
    running = await client.count_workflows(f"TaskQueue = '{queue}' AND ExecutionStatus = 'Running'")
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return running.count, len({p.identity for p in described.pollers} | ({worker} if worker else set()))


async def check_cache(
    client: Client, queue: str, capacity: int, meter: MetricMeter | None = None, worker: str | None = None
) -> CachePressure:
    running, workers = await queue_load(client, queue, worker)
    pressure = cache_pressure(running, workers, capacity, queue)
    if meter is not None:
        meter.create_gauge_float(
            "ferry_sticky_cache_demand_ratio",
            "an even share of the task queue's running "
            "workflows over this worker's sticky cache (above 1: every task misses)",
        ).set(pressure.demand_ratio)
    if pressure.level != "ok":
        log.warning("sticky cache: %s", pressure.message)
    return pressure


async def watch_cache(
    client: Client, queue: str, capacity: int, meter: MetricMeter | None, every: timedelta = EVERY
) -> None:
    """Until cancelled: at start, then every `every`."""
    while True:
        try:
            await check_cache(client, queue, capacity, meter, worker=client.identity)
        except RPCError as err:  # Temporal unreachable or Visibility busy: the worker's own polling reports outages
            log.debug("sticky cache check skipped: %s", err)
        except Exception as err:  # a check that breaks must not end the watch, nor the worker
            log.warning("sticky cache check failed: %s", err)
        await asyncio.sleep(every.total_seconds())
