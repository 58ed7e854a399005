"""`Duration`: parsed once at the model boundary (`.delta`), kept and serialized as the text people typed."""

from __future__ import annotations

from datetime import timedelta

import pydantic
import pytest

from ferry.durations import Duration
from ferry.environment import EnvironmentState
from ferry.spec import EnvironmentSpec, spec_digest


def _spec(**fields: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(
        {"name": "shop", "repository": "registry.test/shop/app", "semver": ">=1.0.0", **fields}
    )


def test_parsed_once_and_kept_as_typed() -> None:
    spec = _spec(interval="90s", **{"health-timeout": "1h30m"})
    assert (
        isinstance(spec.interval, Duration) and spec.interval == "90s" and spec.interval.delta == timedelta(seconds=90)
    )
    assert spec.health_timeout.delta == timedelta(hours=1, minutes=30)
    assert spec.timeout.delta == timedelta(minutes=5) and spec.approval.timeout.delta == timedelta(hours=24)
    dumped = spec.model_dump(mode="json", by_alias=True)
    assert (dumped["interval"], dumped["health-timeout"]) == ("90s", "1h30m"), "never '1m30s' nor 'PT1M30S'"


def test_state_round_trip_keeps_text_and_digest() -> None:
    spec = _spec(interval="90s")
    again = EnvironmentState.model_validate_json(EnvironmentState(spec=spec).model_dump_json()).spec
    assert again.interval.delta == timedelta(seconds=90) and type(again.interval) is Duration
    assert spec_digest(again) == spec_digest(_spec(interval="90s"))


def test_digest_is_the_one_approvals_were_signed_with_before_the_duration_type() -> None:
    """Golden: computed by the build before `Duration` (ed3ae41). A change here breaks every signed spec approval."""
    spec = EnvironmentSpec.model_validate(
        {
            "name": "production",
            "repository": "registry.example/team/app",
            "semver": ">=1.0.0 <2.0.0",
            "namespace": "prod",
            "interval": "90s",
            "timeout": "1h30m",
            "health-timeout": "2m",
            "approval": {"required": True, "approvers": [{"name": "ann"}], "timeout": "2d"},
        }
    )
    assert spec_digest(spec) == "sha256:326aa82f65c1942d2dd9a24c5bdd6c4c9eee9658b9cc0adc7c5a7b58f5f9c51f"


def test_too_long_and_too_short() -> None:
    with pytest.raises(pydantic.ValidationError, match="longer than 3650d"):
        _spec(interval="9999999999d")  # was an OverflowError, not a refusal
    from ferry.model import PEOPLE

    with pytest.raises(pydantic.ValidationError, match="an interval under 1s"):
        EnvironmentSpec.model_validate(
            {"name": "a", "repository": "r.example/t/a", "version": "1.0.0", "interval": "1ms"}, context={PEOPLE: True}
        )
    assert _spec(interval="1ms").interval.delta == timedelta(milliseconds=1)  # a persisted state still decodes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "interval: duration: duration 'soon' is not like"),
        ("0s", "interval: duration: must be positive"),
        ("1s" * 20, "String should have at most 32 characters"),
    ],
)
def test_refused_with_the_fields_label(value: str, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        _spec(interval=value)
    assert message in str(err.value).replace("\n  Value error, ", ": ")
