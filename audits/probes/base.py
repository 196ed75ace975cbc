"""The probe contract (sklearn-like): configuration in `__init__`, `fit(aux)`, `score(sample)`.

A probe is an attack. `fit` learns from what an attacker can hold: a public or synthetic
auxiliary corpus embedded through the deployment's own pipeline (transform included, so the
attacker is noise-aware), and, where the pipeline is reachable, the pipeline itself as an
embedding oracle. `score` measures the attack on target vectors and returns Scores with 95%
intervals. No I/O in either.

Parameters are declared with their ranges in `__init__`'s signature (`Int`, `Real`, `Bool`) and
checked by `parameters` when the probe is built, which is when the configuration loads: a probe
that would train nothing (`epochs: 0`) or crash later (`validation_fraction: 2`) is refused then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Protocol, Self

import numpy as np
from pydantic import BeforeValidator, ConfigDict, Field, Strict, validate_call

from audits.dp import Guarantee
from audits.results import Sample, Score

Embed = Callable[[list[str]], np.ndarray]

# Strict: `true` is not 1, "30" or 2.0 is not an integer count.
Bool = Annotated[bool, Strict()]


def Int(low: int, high: int | None = None) -> Any:  # noqa: N802 - reads as a type in signatures
    """An integer parameter in [low, high]."""
    return Annotated[int, Strict(), Field(ge=low, le=high)]


def not_bool(value: Any) -> Any:
    """Refuse `true`/`false` where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


def Real(low: float | None = None, high: float | None = None, *, above: float | None = None,
         below: float | None = None) -> Any:  # noqa: N802
    """A finite number in [low, high] (or (above, below) for open ends). A numeric string is read as
    its number: YAML 1.1 reads `1e-3` (no dot) as a string."""
    return Annotated[float, BeforeValidator(not_bool), Field(ge=low, le=high, gt=above, lt=below,
                                                             allow_inf_nan=False)]


# Decorates a probe's __init__: every parameter is checked against its annotation.
parameters = validate_call(config=ConfigDict(arbitrary_types_allowed=True))


@dataclass(frozen=True)
class Auxiliary:
    """The attacker's material: texts, their vectors through the pipeline, optional labels/secrets."""

    texts: tuple[str, ...]
    vectors: np.ndarray
    labels: tuple[str, ...] | None = None
    secrets: tuple[dict[str, str], ...] | None = None
    embed: Embed | None = None  # the live pipeline as an oracle (fresh transform noise per call)
    # The same texts through the pipeline again, with fresh transform randomness: an attacker who
    # can call the pipeline sees many noisy copies of its corpus, and trains on all of them.
    redraw: Callable[[], np.ndarray] | None = None
    # The deployment's transform alone, with fresh randomness per call, on vectors the auditor
    # chooses (clean encoder output of its own texts, or crafted worst-case inputs); and the
    # guarantee that transform claims. The DP audit tests the claim through them.
    release: Callable[[np.ndarray], np.ndarray] | None = None
    guarantee: Guarantee | None = None
    # The clean encoder (no transform), for inputs whose pre-noise vectors the auditor needs.
    encode: Embed | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.vectors):
            raise ValueError(f"auxiliary corpus: {len(self.texts)} texts but {len(self.vectors)} vectors")


class Probe(Protocol):
    name: ClassVar[str]

    def fit(self, aux: Auxiliary) -> Self: ...

    def score(self, sample: Sample) -> list[Score]: ...
