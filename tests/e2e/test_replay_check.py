"""`ferry replay-check` on real histories: an environment reconciling on the real registry and Kubernetes API and a
promotion that moved it, replayed green through the console script; the same histories against a deliberately
changed PromotionWorkflow (same name, another command sequence) fail as non-determinism. A dev server of its own,
so the check sees only this test's runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment

from cli.replay_check import replay_check
from devstack.registry import Registry
from ferry.promotion import PromotionInput, PromotionResult, promotion_workflow_id
from ferry.spec import EnvironmentSpec
from tests.e2e.devserver import start_dev_server
from tests.kit.environments import app_manifests, ferry, publish, start_environment, wait_status
from tests.kit.stack import worker_on
from workers.worker import all_workflows
from workflows.promotion import PromotionWorkflow


# NB: unsandboxed: the sandbox would re-import this test module (and pytest with it) to run the class.
@workflow.defn(name="PromotionWorkflow", sandboxed=False)
class ChangedPromotionWorkflow:
    """A "new build" of the promotion that starts with a timer where the recorded runs scheduled an activity."""

    @workflow.run
    async def run(self, input: PromotionInput) -> PromotionResult:
        await workflow.sleep(timedelta(seconds=1))
        return PromotionResult(outcome="refused", environment=input.environment, version=input.version)


@pytest.fixture
async def own_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


async def test_replay_check_passes_on_real_histories_and_catches_a_changed_workflow(
    own_server: WorkflowEnvironment, registry: Registry, kube_server: Any, tmp_path: Path
) -> None:
    client = own_server.client
    async with worker_on(own_server, registry, kube_server, tmp_path, f"rc-{uuid.uuid4()}") as settings:
        suffix = uuid.uuid4().hex[:8]
        repository = f"{settings.registry.default}/team/replay-{suffix}"
        for version in ("1.0.0", "1.1.0"):
            publish(settings, repository, version, app_manifests("replay", image=f"nginx:{version}"))
        spec = EnvironmentSpec.model_validate(
            {
                "name": f"rc-{suffix}",
                "namespace": f"rc-{suffix}",
                "repository": repository,
                "version": "1.0.0",
                "interval": "2s",
                "health-timeout": "20s",
            }
        )
        import kubernetes

        kubernetes.client.CoreV1Api(
            kubernetes.config.new_client_from_config(str(kube_server.kubeconfig))
        ).create_namespace({"metadata": {"name": spec.namespace}})
        env = await start_environment(client, settings.temporal.task_queue, spec)
        await wait_status(env, lambda s: s.state.health.status == "Healthy", timeout=60, what="healthy on 1.0.0")
        promoted = await client.execute_workflow(
            PromotionWorkflow.run,
            PromotionInput(environment=spec.name, version="1.1.0", requested_by="carol"),
            id=promotion_workflow_id(spec.name, "1.1.0"),
            task_queue=settings.temporal.task_queue,
        )
        assert promoted.outcome == "succeeded", promoted.reason

        # green: the console script, against the open environment and the closed promotion
        green = await ferry(settings, tmp_path, "replay-check", "--since", "1h")
        print(green.stdout)
        assert green.returncode == 0, green.stdout + green.stderr
        lines = green.stdout.splitlines()
        assert any(line.startswith("OK") and f"env/{spec.name}" in line and "(running," in line for line in lines)
        assert any(
            line.startswith("OK") and promotion_workflow_id(spec.name, "1.1.0") in line and "(completed," in line
            for line in lines
        )
        assert lines[-1].endswith("2 OK, 0 FAILED"), green.stdout
        report = json.loads((await ferry(settings, tmp_path, "replay-check", "--since", "1h", "--json")).stdout)
        assert report["ok"] and len(report["runs"]) == 2

        # red: the same histories against a changed PromotionWorkflow
        changed = [ChangedPromotionWorkflow if cls is PromotionWorkflow else cls for cls in all_workflows()]
        checked = await asyncio.wait_for(
            replay_check(client, since=timedelta(hours=1), limit=10, workflows=changed), timeout=60
        )
        by_type = {c.workflow_type: c for c in checked}
        assert by_type["EnvironmentWorkflow"].ok, by_type["EnvironmentWorkflow"].failure
        bad = by_type["PromotionWorkflow"]
        assert not bad.ok and bad.nondeterminism, bad
        assert "Nondeterminism" in bad.failure, bad.failure

        # a bad --since is refused, not read as "everything"
        refused = await ferry(settings, tmp_path, "replay-check", "--since", "a week")
        assert refused.returncode == 1 and "--since 'a week'" in refused.stderr, refused.stderr
