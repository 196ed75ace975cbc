"""jl_gaussian: a Johnson-Lindenstrauss projection followed by calibrated Gaussian noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy.stats import beta

from audits.dp import Guarantee, analytic_gaussian_sigma
from audits.transforms.base import NoiseModel
from audits.transforms.basic import _noisy_norm_range, check_dp_fields

NORM_TAIL = 1e-9   # per-vector tail probability of the projected norm's range (either side)


@lru_cache(maxsize=16)
def _orthonormal(seed: int, input_dimension: int, dimension: int) -> np.ndarray:
    """A Haar-random d x k matrix with orthonormal columns, fixed by (seed, d, k)."""
    rng = np.random.default_rng([seed, input_dimension, dimension])
    q, r = np.linalg.qr(rng.standard_normal((input_dimension, dimension)))
    signs = np.sign(np.diag(r))
    q *= np.where(signs == 0, 1.0, signs)   # the sign convention that makes Q Haar-distributed
    q.setflags(write=False)
    return q


@dataclass(frozen=True)
class JlGaussian:
    """Clip to `clip_norm`, project with a fixed random matrix Q (k = `dimension` orthonormal rows,
    from `seed`), add N(0, sigma^2) to each of the k coordinates: (epsilon, delta)-DP per query.

    Neighbours are any two inputs: clipped, they are at most 2 * clip_norm apart, and Q's largest
    singular value is 1 (all are: orthonormal rows; Q is built and applied in float64, exact to
    about 1e-15), so the sensitivity is 2 * clip_norm, a true worst case, and sigma is the analytic
    Gaussian mechanism's (Balle & Wang 2018) for it.
    Why orthonormal rows rather than a Gaussian matrix: scaling the matrix scales the sensitivity
    and so sigma with it, so what matters is the spread of its singular values; among k x d
    matrices with the same average gain, equal singular values have the smallest largest one
    (a Gaussian matrix's top one is about 1 + sqrt(k/d) times its typical gain: that much more
    noise for nothing). Unscaled (not sqrt(d/k) Q, which would keep norms in expectation) so the
    guarantee does not depend on the input dimension; output norms are about sqrt(k/d) of the
    input's, and cosine retrieval does not see a common scale.

    Per coordinate, sigma is exactly clip_gaussian's at the same (epsilon, delta, clip_norm), but
    every vector and every difference between two keeps only about k/d of its energy: distances
    come out sqrt(d/k) times noisier, so at the same epsilon this retrieves worse than
    clip_gaussian (MiniLM, 200 paraphrase pairs, epsilon 300: recall@10 0.34 at k = 64 vs 0.89)
    and buys only a smaller vector. Kenthapadi et al. (2013) get a smaller sigma for a JL
    projection because their neighbours differ in a single attribute; ours may be any two inputs,
    where that bound does not apply. (`spectral` rescales what it keeps to the input's norm, as
    private and far better for retrieval; this kind is the plain projection.)
    """

    dimension: int
    epsilon: float
    delta: float = 1e-5
    clip_norm: float = 1.0
    seed: int = 0
    name: str = "jl_gaussian"

    def __post_init__(self) -> None:
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int | np.integer) or self.dimension < 1:
            raise ValueError(f"jl_gaussian.dimension must be an integer >= 1, got {self.dimension!r}")
        check_dp_fields(self.name, self.epsilon, self.delta, self.clip_norm)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or not 0 <= self.seed < 2**32:
            raise ValueError(f"jl_gaussian.seed must be an integer in [0, 2^32), got {self.seed!r}")

    @property
    def sensitivity(self) -> float:
        return 2 * self.clip_norm

    @cached_property
    def sigma(self) -> float:
        return analytic_gaussian_sigma(self.epsilon, self.delta, self.sensitivity)

    def matrix(self, input_dimension: int) -> np.ndarray:
        """Q as a d x k float64 array (x @ Q projects): orthonormal columns, fixed by (seed, d, k)."""
        if self.dimension > input_dimension:
            raise ValueError(f"jl_gaussian.dimension={self.dimension} exceeds the input dimension {input_dimension}: "
                             "projecting up keeps no more signal and adds noise coordinates (use clip_gaussian)")
        return _orthonormal(int(self.seed), int(input_dimension), int(self.dimension))

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"jl_gaussian: expected a 2-d array of vectors, got shape {x.shape}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        clipped = x * np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-12))
        out = (clipped @ self.matrix(x.shape[1])).astype(np.float32)
        return out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(self.sigma)

    def guarantee(self) -> Guarantee:
        return Guarantee("gaussian", self.epsilon, self.delta, self.sensitivity, self.sigma)

    def noise_model(self, dimension: int) -> NoiseModel:
        return NoiseModel(self.sigma**2)

    def output_dimension(self, dimension: int) -> int:
        return self.dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        # For a Haar Q drawn independently of the data, |Qx|^2 / |x|^2 ~ Beta(k/2, (d-k)/2) for every
        # x (however anisotropic the corpus): its 1e-9 quantiles either side bound each vector's
        # projected norm, so a sample of n vectors strays with probability at most 2e-9 n. Then
        # the noise's own six standard deviations (`_noisy_norm_range`) from each end.
        base = min(self.clip_norm, 1.0)
        k = self.dimension
        if k >= dimension:   # square Q: a rotation, the norm is kept exactly
            low_share = high_share = 1.0
        else:
            shape = (k / 2, (dimension - k) / 2)
            low_share = float(beta.ppf(NORM_TAIL, *shape))
            high_share = float(beta.isf(NORM_TAIL, *shape))
        low = _noisy_norm_range(k, base * math.sqrt(low_share), self.sigma)[0]
        high = _noisy_norm_range(k, base * math.sqrt(high_share), self.sigma)[1]
        return low, high
