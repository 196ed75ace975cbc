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


@dataclass(frozen=True)
class Identity:
    name: str = "none"

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32)

    def guarantee(self) -> str:
        return "none"


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
