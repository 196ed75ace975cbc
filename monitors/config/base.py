"""What every part of embwarden.yaml's schema shares: the strict model base and the field types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from audits.params import not_bool

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"   # deployment and version names

# As audits.params: `true` is not 1, "30" or 2.0 is not a count; a number may be a numeric string.
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(not_bool)]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



def kind_by_default(kind: str):
    """A validator that reads a mapping without `kind` as the given kind."""
    def fill(value: Any) -> Any:
        return {"kind": kind, **value} if isinstance(value, dict) and "kind" not in value else value
    return BeforeValidator(fill)
