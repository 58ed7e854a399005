"""The OpenTelemetry interceptor from workers/ produces spans for a workflow and its activities (a stand-in
`list_tags`: the spans are the interceptor's, whatever the activity does)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

# NB: the sandbox re-imports this module to validate the workflow; pass everything else through.
with workflow.unsafe.imports_passed_through():
    from ferry.artifacts import ListTagsInput, ListTagsResult
    from ferry.settings import TelemetrySettings
    from tests.kit.stack import NO_REGISTRY, settings_for
    from workers.client import connect
    from workers.telemetry import tracer_provider
    from workers.worker import build_worker


@workflow.defn(name="SpanProbeWorkflow")
class SpanProbeWorkflow:
    @workflow.run
    async def run(self, input: ListTagsInput) -> ListTagsResult:
        return await workflow.execute_activity(
            "list_tags", input, start_to_close_timeout=timedelta(seconds=10), result_type=ListTagsResult
        )


@activity.defn(name="list_tags")
async def list_tags(input: ListTagsInput) -> ListTagsResult:
    return ListTagsResult(tags=[])


async def test_spans_for_workflow_and_activity(time_env: WorkflowEnvironment, tmp_path: Path, task_queue: str) -> None:
    exporter = InMemorySpanExporter()
    provider = tracer_provider(TelemetrySettings(exporter="none"), extra=SimpleSpanProcessor(exporter))
    settings = settings_for(NO_REGISTRY, tmp_path)
    settings.temporal.address = time_env.client.service_client.config.target_host
    client = await connect(settings.temporal, tracer=provider)
    async with build_worker(
        client, settings, task_queue=task_queue, workflows=[SpanProbeWorkflow], activities=[list_tags]
    ):
        result = await client.execute_workflow(
            SpanProbeWorkflow.run,
            ListTagsInput(repository=f"{NO_REGISTRY}/otel/probe"),
            id=f"otel-{task_queue}",
            task_queue=task_queue,
        )
    assert result.tags == []
    names = [span.name for span in exporter.get_finished_spans()]
    assert "StartWorkflow:SpanProbeWorkflow" in names
    assert "RunWorkflow:SpanProbeWorkflow" in names
    assert "StartActivity:list_tags" in names
    assert "RunActivity:list_tags" in names
