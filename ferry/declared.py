"""The environments file (`ferry env apply -f environments.yaml`): environments and their alerts."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from ferry.alerts import AlertsFile, AlertSpec
from ferry.model import Model
from ferry.spec import EnvironmentSpec


class EnvironmentsFile(Model):
    environments: list[EnvironmentSpec]
    alerts: list[AlertSpec] = Field(
        default_factory=list,
        description="applied by `ferry alerts apply`; validated here too, so a typo fails env apply",
    )

    @field_validator("alerts")
    @classmethod
    def _alerts(cls, value: list[AlertSpec]) -> list[AlertSpec]:
        AlertsFile(alerts=value)  # the file's own rules: at most MAX_ALERTS, names unique
        return value

    @model_validator(mode="after")
    def _unique(self) -> EnvironmentsFile:
        names = [e.name for e in self.environments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"environment names must be unique: {', '.join(dupes)}")
        return self


# ---------------------------------------------------------------------------------------- state
