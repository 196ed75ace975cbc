"""The transform contract, the noise a transform declares, and the material a fitted one learns from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from audits.dp import Guarantee


@dataclass(frozen=True)
class NoiseModel:
    """Noise a transform adds to a deterministic function of its input: additive, Gaussian, independent
    of the input, with covariance `variance * shape` (`shape` None: the identity). What the PAC probe
    bounds mutual information with; the probe measures the scale, so a claim is checked, never assumed."""

    variance: float
    shape: np.ndarray | None = None

    def covariance(self, dimension: int) -> np.ndarray:
        base = np.eye(dimension) if self.shape is None else np.asarray(self.shape, dtype=np.float64)
        return self.variance * base


@dataclass(frozen=True)
class FitMaterial:
    """What a fitted transform (PCA basis, PAC calibration, adversarial map) learns from: public or
    synthetic text only (the auxiliary corpus), with its clean encoder output. `identity` names
    encoder and corpus, so a fit is reused only for the same material."""

    texts: tuple[str, ...]
    clean: np.ndarray
    identity: str
    seed: int = 0
    encode: Callable[[list[str]], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.clean):
            raise ValueError(f"fit material: {len(self.texts)} texts but {len(self.clean)} vectors")


class Transform(Protocol):
    @property
    def name(self) -> str:
        """The transform's kind in the configuration (`kind: clip_gaussian`); "none" for Identity."""

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return transformed float32 vectors; randomness comes only from `rng`."""

    def guarantee(self) -> Guarantee | None:
        """The differential-privacy guarantee this transform states for one query, or None."""

    def output_dimension(self, dimension: int) -> int:
        """The dimension of its output for inputs of `dimension`."""

    def norm_range(self, dimension: int) -> tuple[float, float]:
        """The L2 norms its output takes on unit-norm input, wide enough that a real sample of any
        size stays inside (a missing or changed transform does not): for sample validation."""

    # Optional, read with getattr by those that need them:
    #   noise_model(dimension) -> NoiseModel | None   additive Gaussian noise it declares (PAC probe)
    #   statement() -> str | None                     a non-DP claim, e.g. a PAC mutual-information bound
    #   fitted: ClassVar[bool]; fit(params, material) -> dict[str, np.ndarray]   (audits.transforms.fitting)


NoiseFn = Callable[[int], NoiseModel | None]
