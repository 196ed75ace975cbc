"""Privacy transforms a deployment applies to its encoder's output before storing or sending it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Transform(Protocol):
    name: str

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return transformed float32 vectors; randomness comes only from `rng`."""

    def guarantee(self) -> str:
        """The formal guarantee this transform states, or 'none'."""

    def norm_range(self, dimension: int) -> tuple[float, float]:
        """The L2 norms its output takes on unit-norm input, wide enough that a real sample of any
        size stays inside (a missing or changed transform does not): for sample validation."""


@dataclass(frozen=True)
class Identity:
    name: str = "none"

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32)

    def guarantee(self) -> str:
        return "none"

    def norm_range(self, dimension: int) -> tuple[float, float]:
        return 1 - 1e-3, 1 + 1e-3   # float32 rounding of a normalised vector


@dataclass(frozen=True)
class GaussianNoise:
    """Adds N(0, sigma^2) to every coordinate: fresh noise for every call.

    Without clipping and calibration this states no differential-privacy guarantee; it only
    lowers the signal-to-noise ratio an attacker sees.
    """

    sigma: float
    name: str = "gaussian_noise"

    def __post_init__(self) -> None:
        if not (self.sigma >= 0 and np.isfinite(self.sigma)):
            raise ValueError(f"gaussian_noise.sigma must be a finite number >= 0, got {self.sigma}")

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        noise = rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(self.sigma)
        return vectors + noise

    def guarantee(self) -> str:
        return "none"

    def norm_range(self, dimension: int) -> tuple[float, float]:
        # |u + sigma z|^2 = 1 + 2 sigma u.z + sigma^2 |z|^2: mean 1 + d sigma^2, variance about
        # 4 sigma^2 + 2 d sigma^4. Six standard deviations: a false alarm in about 1 of 10^5 samples of
        # 10,000 rows; a dropped transform falls outside once sigma^2 d is more than about 6 sigma.
        mean = 1 + dimension * self.sigma**2
        sd = float(np.sqrt(4 * self.sigma**2 + 2 * dimension * self.sigma**4))
        return float(np.sqrt(max(mean - 6 * sd, 0.0))) * (1 - 1e-3), float(np.sqrt(mean + 6 * sd)) * (1 + 1e-3)
