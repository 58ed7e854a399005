"""The environments file (`ferry env apply -f environments.yaml`): environments and their alerts."""

from __future__ import annotations

from typing import Any

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ferry.model import Model
from ferry.spec import EnvironmentSpec


class EnvironmentsFile(Model):
    environments: list[EnvironmentSpec]
    alerts: list[dict[str, Any]] = Field(default_factory=list, description="applied by `ferry alerts apply` "
                                         "(ferry.alerts.AlertSpec); validated here too, so a typo fails env apply")

    @field_validator("alerts")
    @classmethod
    def _alerts(cls, value: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        from ferry.alerts import AlertsFile  # NB: lazily: the alert models are needed only to check this field

        AlertsFile.model_validate({"alerts": value}, context=info.context)
        return value

    @model_validator(mode="after")
    def _unique(self) -> EnvironmentsFile:
        names = [e.name for e in self.environments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"environment names must be unique: {', '.join(dupes)}")
        return self


# ---------------------------------------------------------------------------------------- state
