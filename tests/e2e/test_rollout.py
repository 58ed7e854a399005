"""Progressive delivery on the real stack (issue 29): the dev server, the registry, the real control plane with the
Gateway API CRDs, Debian's Prometheus scraping the simulated traffic generator, and a worker. A healthy canary walks
10 -> 25 -> 50 -> 100 and is promoted; a canary whose errors push the route's success rate under its threshold at 25 %
is rolled back in traffic and in the desired state, and held."""

from __future__ import annotations

from typing import Any

import pytest

from ferry.spec import rollout_workflow_id
from tests.kit.environments import publish, record_histories, start_environment, wait_status
from tests.kit.rollouts import World, analysis, deployment, image_of, release, route_weights, spec, unique, wait_rollout

SUCCESS = {"success-rate": {"min": 99}}
P99 = {"latency-p99": {"max": "500ms"}}
ALL_ON_PRIMARY = {"web-primary": 100, "web-canary": 0}


@pytest.fixture
def world(rollout_stack: World) -> World:
    return rollout_stack


async def _first_release(world: World, name: str, steps: list[dict[str, Any]], task_queue: str) -> Any:
    """1.0.0 applied and made the primary at once (an environment's first release has no canary)."""
    publish(world.settings, world.repository, "1.0.0", release("web", "app:1.0.0"))
    handle = await start_environment(world.client, task_queue, spec(name, world.repository, world.namespace, steps))
    await wait_status(
        handle, lambda s: s.state.primary is not None and s.state.primary.version == "1.0.0", 90, "1.0.0 primary"
    )
    assert route_weights(world.admin, world.namespace) == ALL_ON_PRIMARY
    assert deployment(world.admin, world.namespace, "web")["spec"]["replicas"] == 0, "the canary idles at 0"
    assert image_of(deployment(world.admin, world.namespace, "web-primary")) == "app:1.0.0"
    return handle


async def test_a_healthy_canary_walks_10_25_50_and_is_promoted(world: World, task_queue: str) -> None:
    name = unique("walk")
    steps = [
        {"set-weight": 10},
        analysis(SUCCESS, P99),
        {"set-weight": 25},
        analysis(SUCCESS, P99),
        {"set-weight": 50},
        analysis(SUCCESS, P99),
    ]
    handle = await _first_release(world, name, steps, task_queue)
    publish(world.settings, world.repository, "1.1.0", release("web", "app:1.1.0"))

    at_25 = await wait_rollout(
        world.client, name, lambda s: s.candidate.version == "1.1.0" and s.weight == 25, 120, "25 % to 1.1.0"
    )
    assert at_25.phase in ("Progressing", "Analysing")
    assert route_weights(world.admin, world.namespace) == {"web-primary": 75, "web-canary": 25}

    done = await wait_rollout(world.client, name, lambda s: s.phase == "Promoted", 180, "1.1.0 promoted")
    walked = [s.weight for s in done.steps if s.kind in ("set-weight", "promote")]
    assert walked == [10, 25, 50, 100]
    assert [s.outcome for s in done.steps if s.kind == "analysis"] == ["passed"] * 3
    assert done.intervals and all(i.values["success-rate"] == pytest.approx(100.0) for i in done.intervals)
    assert all(0 < (i.values["latency-p99"] or 0) <= 500 for i in done.intervals), done.intervals

    status = await wait_status(
        handle, lambda s: s.state.primary is not None and s.state.primary.version == "1.1.0", 60, "1.1.0 primary"
    )
    assert status.state.last_known_good is not None and status.state.last_known_good.version == "1.1.0"
    assert any(e.type == "RolloutPromoted" and e.version == "1.1.0" for e in status.state.events)
    assert route_weights(world.admin, world.namespace) == ALL_ON_PRIMARY
    assert image_of(deployment(world.admin, world.namespace, "web-primary")) == "app:1.1.0"
    assert deployment(world.admin, world.namespace, "web")["spec"]["replicas"] == 0
    await record_histories(".", {"rollout": world.client.get_workflow_handle(rollout_workflow_id(name))})


async def test_errors_crossing_the_threshold_at_25_roll_back_in_traffic_and_in_the_desired_state(
    world: World, task_queue: str
) -> None:
    name, ns = unique("fail"), world.namespace
    ok = f'ferry_simulated_requests_total{{namespace="{ns}",route="web",code!~"5.."}}[3s]'
    every = f'ferry_simulated_requests_total{{namespace="{ns}",route="web"}}[3s]'
    route_success = {
        "query": {"name": "route-success", "promql": f"100 * sum(rate({ok})) / sum(rate({every}))", "min": 90}
    }
    steps = [
        {"set-weight": 10},
        analysis(route_success),
        {"set-weight": 25},
        analysis(route_success),
        {"set-weight": 50},
        analysis(route_success),
    ]
    handle = await _first_release(world, name, steps, task_queue)
    # 60 % of the canary's answers are 500s: the route is at 94 % with 10 % on it, at 85 % with 25 %
    publish(
        world.settings, world.repository, "1.1.0", release("web", "app:1.1.0", {"ferry.dev/simulated-error-rate": "60"})
    )

    failed = await wait_rollout(world.client, name, lambda s: s.phase == "Failed", 180, "the rollout failed")
    assert [s.weight for s in failed.steps if s.kind == "set-weight"] == [10, 25]
    assert [s.outcome for s in failed.steps if s.kind == "analysis"] == ["passed"], "10 % passed, 25 % did not"
    assert failed.failures and failed.failures[0].metric == "route-success"
    assert failed.failures[0].value is not None and failed.failures[0].value < 90
    assert "analysis failed at 25%" in failed.reason

    status = await wait_status(
        handle,
        lambda s: (
            s.state.last_applied is not None and s.state.last_applied.version == "1.0.0" and s.state.pin is not None
        ),
        90,
        "the environment back on 1.0.0",
    )
    assert status.state.pin is not None and status.state.pin.kind == "auto-rollback"
    assert "1.1.0" in status.state.holds
    event = next(e for e in status.state.events if e.type == "RolloutFailed")
    assert event.version == "1.1.0" and event.objects["failed_checks"][0].startswith("route-success=")
    assert route_weights(world.admin, ns) == ALL_ON_PRIMARY
    assert deployment(world.admin, ns, "web")["spec"]["replicas"] == 0
    assert image_of(deployment(world.admin, ns, "web")) == "app:1.0.0", "the desired state names 1.0.0 again"
    assert image_of(deployment(world.admin, ns, "web-primary")) == "app:1.0.0"
    assert status.state.primary is not None and status.state.primary.version == "1.0.0"


async def test_blue_green_judges_green_on_mirrored_requests_switches_and_a_bad_green_never_gets_traffic(
    world: World, task_queue: str
) -> None:
    name, ns = unique("bg"), world.namespace
    strategy = {
        "blue-green": {
            "workload": "web",
            "gateway": {"name": "public", "namespace": ns},
            "preview-analysis": analysis(SUCCESS, count=2)["analysis"],
        }
    }
    base = spec(name, world.repository, ns, [{"set-weight": 10}])
    blue_green = base.model_validate({**base.model_dump(mode="json", by_alias=True), "strategy": strategy})
    publish(world.settings, world.repository, "1.0.0", release("web", "app:1.0.0"))
    handle = await start_environment(world.client, task_queue, blue_green)
    await wait_status(handle, lambda s: s.state.primary is not None, 90, "1.0.0 primary")

    publish(world.settings, world.repository, "1.1.0", release("web", "app:1.1.0"))
    previewing = await wait_rollout(
        world.client, name, lambda s: s.candidate.version == "1.1.0" and s.phase == "Analysing", 120, "the preview"
    )
    assert previewing.weight == 0 and route_weights(world.admin, ns) == ALL_ON_PRIMARY, "green answers no user"
    done = await wait_rollout(world.client, name, lambda s: s.phase == "Promoted", 120, "1.1.0 switched")
    assert [s.kind for s in done.steps] == ["preview", "analysis", "switch", "promote"]
    assert all(i.values["success-rate"] == pytest.approx(100.0) for i in done.intervals), "judged on mirrored requests"
    assert image_of(deployment(world.admin, ns, "web-primary")) == "app:1.1.0"

    publish(
        world.settings, world.repository, "1.2.0", release("web", "app:1.2.0", {"ferry.dev/simulated-error-rate": "60"})
    )
    failed = await wait_rollout(
        world.client, name, lambda s: s.candidate.version == "1.2.0" and s.phase == "Failed", 120, "1.2.0 refused"
    )
    assert failed.failures and failed.failures[0].metric == "success-rate"
    assert [s.kind for s in failed.steps] == ["preview"], "never switched"
    status = await wait_status(
        handle, lambda s: s.state.last_applied is not None and s.state.last_applied.version == "1.1.0", 90, "on 1.1.0"
    )
    assert "1.2.0" in status.state.holds
    assert route_weights(world.admin, ns) == ALL_ON_PRIMARY
    assert image_of(deployment(world.admin, ns, "web-primary")) == "app:1.1.0"
