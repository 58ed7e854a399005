"""`Duration`: parsed once at the model boundary (`.delta`), kept and serialized as the text people typed."""

from __future__ import annotations

from datetime import timedelta

import pydantic
import pytest

from ferry.durations import Duration
from ferry.environment import EnvironmentSpec, EnvironmentState, spec_digest


def _spec(**fields: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({"name": "shop", "repository": "registry.test/shop/app",
                                           "semver": ">=1.0.0", **fields})


def test_parsed_once_and_kept_as_typed() -> None:
    spec = _spec(interval="90s", **{"health-timeout": "1h30m"})
    assert isinstance(spec.interval, Duration) and spec.interval == "90s" and spec.interval.delta == timedelta(
        seconds=90)
    assert spec.health_timeout.delta == timedelta(hours=1, minutes=30)
    assert spec.timeout.delta == timedelta(minutes=5) and spec.approval.timeout.delta == timedelta(hours=24)
    dumped = spec.model_dump(mode="json", by_alias=True)
    assert (dumped["interval"], dumped["health-timeout"]) == ("90s", "1h30m"), "never '1m30s' nor 'PT1M30S'"


def test_state_round_trip_keeps_text_and_digest() -> None:
    spec = _spec(interval="90s")
    again = EnvironmentState.model_validate_json(EnvironmentState(spec=spec).model_dump_json()).spec
    assert again.interval.delta == timedelta(seconds=90) and type(again.interval) is Duration
    assert spec_digest(again) == spec_digest(_spec(interval="90s"))


@pytest.mark.parametrize(("value", "message"), [
    ("soon", "interval: duration: duration 'soon' is not like"),
    ("0s", "interval: duration: must be positive"),
    ("1s" * 20, "String should have at most 32 characters"),
])
def test_refused_with_the_fields_label(value: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        _spec(interval=value)
    assert message in str(err.value).replace("\n  Value error, ", ": ")
