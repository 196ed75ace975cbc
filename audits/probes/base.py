"""The probe contract (sklearn-like): configuration in `__init__`, `fit(aux)`, `score(sample)`.

A probe is an attack. `fit` learns from what an attacker can hold: a public or synthetic
auxiliary corpus embedded through the deployment's own pipeline (transform included, so the
attacker is noise-aware), and, where the pipeline is reachable, the pipeline itself as an
embedding oracle. `score` measures the attack on target vectors and returns Scores with 95%
intervals. No I/O in either.

Parameters are declared with their ranges in `__init__`'s signature (audits.params:
`Annotated[int, Int(1, 48)]`, `Annotated[float, Real(above=0)]`, `Bool`) and checked by `parameters`
when the probe is built, which is when the configuration loads:
a probe that would train nothing (`epochs: 0`) or crash later (`validation_fraction: 2`) is refused then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from audits.dp import Guarantee
from audits.results import Sample, Score
from audits.transforms.base import NoiseFn

Embed = Callable[[list[str]], np.ndarray]


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
    # The additive Gaussian noise the transform declares, by output dimension (None: it declares
    # none). The PAC probe takes its shape and measures its scale.
    noise: NoiseFn | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.vectors):
            raise ValueError(f"auxiliary corpus: {len(self.texts)} texts but {len(self.vectors)} vectors")


class Probe(Protocol):
    name: ClassVar[str]
    # metric -> (lowest, highest) value it can take; thresholds outside are refused
    metrics: ClassVar[dict[str, tuple[float, float | None]]]

    def __init__(self, seed: int = 0, **params: Any) -> None: ...  # each probe's own parameters (make_probe)

    def fit(self, aux: Auxiliary) -> Self: ...

    def score(self, sample: Sample) -> list[Score]: ...
