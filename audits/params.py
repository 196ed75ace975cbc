"""Parameter types shared by embwarden.yaml and the probes, and the one way their errors are told.

Strict where pydantic is lenient: `true` is not 1, and "30" or 2.0 is not an integer count. A
number may be a numeric string, because YAML 1.1 reads `1e-3` (no dot) as one. Errors become one
line per problem: `<dotted field>: <what was expected> (found <value>)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, GetCoreSchemaHandler, Strict, ValidationError, validate_call
from pydantic_core import CoreSchema

Bool = Annotated[bool, Strict()]


@dataclass(frozen=True)
class Constraints:
    """Pydantic metadata bundled into one: the `Int(1, 48)` of `Annotated[int, Int(1, 48)]` (a call is
    fine as metadata, while type checkers refuse one as the annotation itself). It validates as
    `Annotated[<type>, *items]`. Not annotated_types' GroupedMetadata: on a function's parameter
    pydantic (2.14) ignores one holding a validator, bounds and all."""

    items: tuple[Any, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(Annotated[(source, *self.items)])


def not_bool(value: Any) -> Any:
    """Refuse `true`/`false` where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


def Int(low: int | None = None, high: int | None = None) -> Constraints:  # noqa: N802 - reads as a type
    """An integer in [low, high]: `Annotated[int, Int(low, high)]`."""
    return Constraints((Strict(), Field(ge=low, le=high)))


def Real(low: float | None = None, high: float | None = None, *, above: float | None = None,
         below: float | None = None) -> Constraints:  # noqa: N802
    """A finite number in [low, high] (or (above, below) for open ends), an integer accepted:
    `Annotated[float, Real(...)]`."""
    return Constraints((BeforeValidator(not_bool), Field(ge=low, le=high, gt=above, lt=below, allow_inf_nan=False)))


# Decorates a probe's __init__: every parameter is checked against its annotation.
parameters = validate_call(config=ConfigDict(arbitrary_types_allowed=True))


def problems(exc: ValidationError, hidden: re.Pattern | None = None, owner: str | None = None) -> list[str]:
    """One line per error. `hidden` matches path parts that are not fields the user wrote (the tags
    discriminated unions add); a part with a newline or other odd characters is quoted; `owner`
    names what an unknown parameter was given to."""
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-after")
                 and not (hidden and hidden.fullmatch(str(p)))]
        loc = ".".join(p if p.isprintable() and p else repr(p) for p in parts) or "<top>"
        if err["type"] == "unexpected_keyword_argument":
            lines.append(f"{loc}: unknown parameter" + (f" of {owner}" if owner else ""))
            continue
        found = err.get("input")
        shown = "" if isinstance(found, dict | list) or err["type"] == "missing_argument" else f" (found {found!r})"
        lines.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}{shown}")
    return lines
