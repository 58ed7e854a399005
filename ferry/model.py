"""The base of every Ferry model, so they all decode alike.

- `Model`: persisted in workflow state and sent between workers and builds. Unknown fields are kept as they are
  (decoded, carried and encoded again), so what a newer worker wrote still decodes on this one and survives its
  continue-as-new: a rolling upgrade, or its rollback, neither strands a workflow nor drops the newer build's state.
  What people type (environments.yaml, alerts, CLI input) is validated with context {PEOPLE: True}: there an unknown
  field is refused, because it is a typo.
- `Message(Model)`: the same, frozen: a request or an answer that nobody changes after it is made (activity inputs
  and results). Workflow state and statuses are `Model`s: workflows update them in place.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

PEOPLE = "typed-by-people"  # validation context: refuse unknown fields (see Model)


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields_from_people(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context and info.context.get(PEOPLE):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = [str(k) for k in data if k not in known]
            if unknown:
                raise ValueError(f"{unknown[0]}: unknown field (not part of {cls.__name__})")
        return data


class Message(Model):
    model_config = ConfigDict(frozen=True)
