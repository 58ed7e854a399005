import pytest
from pydantic import ValidationError

from ferry.model import PEOPLE
from ferry.rollout_spec import Strategy, plan

OK = {"success-rate": {"min": 99}}


def parse(data: object) -> Strategy:
    return Strategy.model_validate(data, context={PEOPLE: True})


def canary(*steps: object) -> dict[str, object]:
    return {"canary": {"workload": "shop", "steps": list(steps)}}


def test_plan_ends_with_implicit_promote() -> None:
    s = parse(canary({"set-weight": 10}, {"analysis": {"checks": [OK]}}, {"approval": {}}, {"set-weight": 50}))
    assert [(p.index, p.kind, p.weight) for p in plan(s)] == [
        (0, "set-weight", 10),
        (1, "analysis", 10),
        (2, "approval", 10),
        (3, "set-weight", 50),
        (-1, "promote", 100),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (canary({"set-weight": 0}), "steps.0.set-weight"),
        (canary({"set-weight": 101}), "set-weight"),
        (canary({"set-weight": 50}, {"set-weight": 50}), "step 1: set-weight 50 is not above 50"),
        (canary({"analysis": {"count": 1000, "checks": [OK]}}), "count"),
        (canary({"analysis": {"checks": [{"query": {"name": "q", "promql": "up"}}]}}), "neither min nor max"),
        (canary({"analysis": {"checks": [{"query": {"name": "q", "promql": "x" * 5000, "min": 1}}]}}), "2048"),
        (canary({"analysis": {"checks": [{"query": {"name": "q", "promql": "up\x01", "min": 1}}]}}), "control"),
        ({}, "exactly one of canary, blue-green"),
        (
            {
                **canary({"set-weight": 5}),
                "blue-green": {"workload": "shop", "gateway": {"name": "g", "namespace": "n"}},
            },
            "exactly one",
        ),
        ({"blue-green": {"workload": "shop"}}, "blue-green needs a gateway"),
    ],
)
def test_refusals(data: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse(data)
