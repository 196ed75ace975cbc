"""The stateless transforms: noise, DP noise, projection, quantisation.

Two of them state a differential-privacy guarantee for one query, w.r.t. any two inputs (the
sensitivity is that of the clipped inputs, not of the texts an audit happens to try):
`ClipGaussian` (clip to norm C, analytic Gaussian noise: (epsilon, delta)-DP) and `VonMisesFisher`
(Laplace-style noise for directions: pure epsilon-DP, the output stays on the unit sphere). The
others reduce what leaks without a formal guarantee: `GaussianNoise` (uncalibrated),
`RandomProjection` (Johnson-Lindenstrauss: distances kept, coordinates mixed) and `Quantize`.
Randomised transforms draw fresh noise on every call; deterministic ones are fixed per version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from audits.dp import Guarantee, analytic_gaussian_sigma
from audits.transforms.base import NoiseModel, Transform


@dataclass(frozen=True)
class Identity:
    name: str = "none"

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32)

    def guarantee(self) -> Guarantee | None:
        return None

    def output_dimension(self, dimension: int) -> int:
        return dimension

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

    def guarantee(self) -> Guarantee | None:
        return None

    def noise_model(self, dimension: int) -> NoiseModel | None:
        return NoiseModel(self.sigma**2) if self.sigma > 0 else None

    def output_dimension(self, dimension: int) -> int:
        return dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        # |u + sigma z|^2 = 1 + 2 sigma u.z + sigma^2 |z|^2: mean 1 + d sigma^2, variance about
        # 4 sigma^2 + 2 d sigma^4. Six standard deviations: a false alarm in about 1 of 10^5 samples of
        # 10,000 rows; a dropped transform falls outside once sigma^2 d is more than about 6 sigma.
        mean = 1 + dimension * self.sigma**2
        sd = float(np.sqrt(4 * self.sigma**2 + 2 * dimension * self.sigma**4))
        return float(np.sqrt(max(mean - 6 * sd, 0.0))) * (1 - 1e-3), float(np.sqrt(mean + 6 * sd)) * (1 + 1e-3)


def check_dp_fields(kind: str, epsilon: float, delta: float, clip_norm: float) -> None:
    """The fields of a Gaussian-mechanism kind, with errors naming the field."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"{kind}.epsilon must be a finite number > 0, got {epsilon}")
    if not 0 < delta < 1:
        raise ValueError(f"{kind}.delta must be in (0, 1), got {delta}")
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ValueError(f"{kind}.clip_norm must be a finite number > 0, got {clip_norm}")


def _clip(vectors: np.ndarray, clip_norm: float) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))
    return (vectors * scale).astype(np.float32)


def _noisy_norm_range(dimension: int, base: float, sigma: float) -> tuple[float, float]:
    # |x + sigma z|^2 with |x| = base: mean base^2 + d sigma^2, variance about
    # 4 base^2 sigma^2 + 2 d sigma^4; six standard deviations either side (see GaussianNoise).
    mean = base**2 + dimension * sigma**2
    sd = math.sqrt(4 * base**2 * sigma**2 + 2 * dimension * sigma**4)
    return math.sqrt(max(mean - 6 * sd, 0.0)) * (1 - 1e-3), math.sqrt(mean + 6 * sd) * (1 + 1e-3)


@dataclass(frozen=True)
class ClipGaussian:
    """Clip to L2 norm `clip_norm`, add Gaussian noise calibrated for (epsilon, delta)-DP.

    Any two clipped vectors are at most 2 * clip_norm apart, so that is the sensitivity; sigma
    comes from the analytic Gaussian mechanism (Balle & Wang 2018), the smallest sigma that gives
    exactly (epsilon, delta). Per query: answering the same text k times costs more (see
    `Guarantee.composed`).
    """

    epsilon: float
    delta: float = 1e-5
    clip_norm: float = 1.0
    name: str = "clip_gaussian"

    def __post_init__(self) -> None:
        check_dp_fields(self.name, self.epsilon, self.delta, self.clip_norm)

    @property
    def sensitivity(self) -> float:
        return 2 * self.clip_norm

    @cached_property
    def sigma(self) -> float:
        return analytic_gaussian_sigma(self.epsilon, self.delta, self.sensitivity)

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clipped = _clip(np.asarray(vectors, dtype=np.float32), self.clip_norm)
        return clipped + rng.standard_normal(clipped.shape, dtype=np.float32) * np.float32(self.sigma)

    def guarantee(self) -> Guarantee:
        return Guarantee("gaussian", self.epsilon, self.delta, self.sensitivity, self.sigma)

    def noise_model(self, dimension: int) -> NoiseModel:
        return NoiseModel(self.sigma**2)

    def output_dimension(self, dimension: int) -> int:
        return dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        return _noisy_norm_range(dimension, min(self.clip_norm, 1.0), self.sigma)


@dataclass(frozen=True)
class VonMisesFisher:
    """Pure epsilon-DP for directions: the output is a unit vector drawn with density
    proportional to exp(kappa * x.y) around the input direction x (Weggenmann & Kerschbaum 2021).

    Inputs are normalised first (the sphere is the clip), so any two are at most 2 apart and the
    density ratio of two inputs is at most exp(2 kappa): kappa = epsilon / 2. Sampling uses scipy's
    von Mises-Fisher sampler around a fixed axis, reflected onto each input's direction.
    """

    epsilon: float
    name: str = "vmf"

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"vmf.epsilon must be a finite number > 0, got {self.epsilon}")

    @property
    def kappa(self) -> float:
        return self.epsilon / 2

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.stats import vonmises_fisher

        x = np.asarray(vectors, dtype=np.float64)
        n, d = x.shape
        if n == 0:
            return x.astype(np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        axis = np.zeros(d)
        axis[0] = 1.0
        draws = vonmises_fisher(axis, self.kappa).rvs(n, random_state=rng).reshape(n, d)
        # The Householder reflection that maps the axis onto x maps a draw around the axis onto
        # a draw around x (reflections preserve the vMF density's form).
        v = axis - x
        vv = np.einsum("ij,ij->i", v, v)
        coef = np.where(vv > 1e-18, 2 * np.einsum("ij,ij->i", v, draws) / np.maximum(vv, 1e-18), 0.0)
        return (draws - coef[:, None] * v).astype(np.float32)

    def guarantee(self) -> Guarantee:
        return Guarantee("vmf", self.epsilon, 0.0, 2.0, self.kappa)

    def output_dimension(self, dimension: int) -> int:
        return dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        return 1 - 1e-3, 1 + 1e-3


@dataclass(frozen=True)
class RandomProjection:
    """Johnson-Lindenstrauss: a fixed Gaussian matrix (seeded per version) down to `dimension`.

    Pairwise distances are kept within 1 +- O(sqrt(log n / k)), which retrieval needs; single
    coordinates are mixed. No privacy guarantee: anyone who learns the matrix can undo most of it,
    and an attacker who can embed texts learns the projected space anyway.
    """

    dimension: int
    seed: int = 0
    name: str = "random_projection"

    def __post_init__(self) -> None:
        if self.dimension < 1:
            raise ValueError(f"random_projection.dimension must be >= 1, got {self.dimension}")

    def matrix(self, input_dimension: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, input_dimension, self.dimension])
        return (rng.standard_normal((input_dimension, self.dimension)) / math.sqrt(self.dimension)).astype(np.float32)

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors @ self.matrix(vectors.shape[1])

    def guarantee(self) -> None:
        return None

    def output_dimension(self, dimension: int) -> int:
        return self.dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        # |Pu|^2 ~ chi2_k / k for a unit u: six standard deviations (sd = sqrt(2/k)).
        sd = math.sqrt(2 / self.dimension)
        return math.sqrt(max(1 - 6 * sd, 0.0)) * (1 - 1e-3), math.sqrt(1 + 6 * sd) * (1 + 1e-3)


@dataclass(frozen=True)
class Quantize:
    """Scalar quantisation: each coordinate to `bits` bits (1 = sign), scaled per vector by its
    largest coordinate, then dequantised and normalised to unit length (what int8/binary vector
    stores do). Deterministic: it drops precision, it adds no noise and states no guarantee."""

    bits: int = 8
    name: str = "quantize"

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"quantize.bits must be between 1 and 16, got {self.bits}")

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.bits == 1:
            out = np.where(vectors >= 0, 1.0, -1.0).astype(np.float32)
        else:
            top = 2 ** (self.bits - 1) - 1
            scale = np.maximum(np.abs(vectors).max(axis=1, keepdims=True), 1e-12)
            out = np.round(vectors / scale * top).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def guarantee(self) -> None:
        return None

    def output_dimension(self, dimension: int) -> int:
        return dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        return 1 - 1e-3, 1 + 1e-3


@dataclass(frozen=True)
class AppliedByEncoder:
    """A transform the embedding API applies itself: its answers have already been through it.

    For a deployment audited through its own HTTP API (an OpenAI-compatible or TEI encoder in front
    of the noise), embwarden must not add the transform again; it records and audits what the
    transform claims. Its randomness is out of reach, so probes that need the transform alone on
    chosen vectors (dp_audit's worst-case inputs) cannot run; those that query the API can.
    """

    claimed: Transform

    @property
    def name(self) -> str:
        return self.claimed.name

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32)

    def guarantee(self) -> Guarantee | None:
        return self.claimed.guarantee()

    def output_dimension(self, dimension: int) -> int:
        return dimension   # the API's answers already have the transform's dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        return self.claimed.norm_range(dimension)

    def noise_model(self, dimension: int) -> NoiseModel | None:
        """None: the API's noise is only a claim about a server embwarden cannot inspect, and the PAC
        bound rests on its shape and Gaussianity: such a pipeline gets no bound below the cap."""
        return None

    def statement(self) -> str | None:
        declared = getattr(self.claimed, "statement", None)
        return declared() if declared else None
