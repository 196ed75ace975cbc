"""pac_gaussian: Auto-PAC noise (Xiao & Devadas, CRYPTO 2023) for a mutual-information budget.

Worst-case DP must hide any input from any other, which on unit 384-d embeddings costs epsilon in
the hundreds before retrieval works. PAC privacy bounds instead what an adversary learns about a
secret drawn from a *distribution*: Gaussian noise shaped like the output covariance of that
distribution (more noise along directions where outputs vary most, none where they do not), sized
so that I(secret; output) <= `mi_bits` per query (audits.pac.auto_pac_variances).

Fitted state, from the auxiliary corpus's clean outputs (public text: production vectors never go
into an artifact), split in two halves: the eigenvectors of the first half's covariance, and along
each of them the second half's variance raised to its chi-square upper limit (97.5%, Bonferroni over
the directions), floored at 1% of their mean. Directions chosen on one half and measured on the
other: variances measured on the data that chose them would be too small along the least-varying
directions (and the promise too large). Auto-PAC's noise meets the budget through
1/2 sum_j u_j' Sigma u_j / sigma_j^2 <= v, which needs only these per-direction variances, so the
bound holds for the corpus's distribution (Gaussian projections assumed for the limits); flooring
only adds noise. The claim is not DP: it holds for secrets distributed like the calibration
corpus, and says nothing about a text unlike it. The pac_privacy probe measures it on the deployment's
own prior (canary secrets or the sample's texts) and shows when it does not hold there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from audits.dp import Guarantee
from audits.transforms.base import FitMaterial, NoiseModel
from audits.transforms.fitting import load

EIGENVALUE_FLOOR = 0.01   # of the mean eigenvalue
CALIBRATION_ALPHA = 0.025


@dataclass(frozen=True)
class PacGaussian:
    mi_bits: float
    artifact: str = ""
    sha256: str = ""
    name: str = "pac_gaussian"
    fitted: ClassVar[bool] = True
    fit_parameters: ClassVar[tuple[str, ...]] = ()   # the calibration does not depend on the budget
    FIT_FORMAT: ClassVar[int] = 2                      # 2: directions and variances from separate halves

    def __post_init__(self) -> None:
        if not (self.mi_bits > 0 and math.isfinite(self.mi_bits)):
            raise ValueError(f"pac_gaussian.mi_bits must be a finite number > 0, got {self.mi_bits}")

    @classmethod
    def fit(cls, params: dict, material: FitMaterial) -> dict[str, np.ndarray]:
        """Eigenvalues (raised to an upper confidence limit, floored) and eigenvectors of the corpus's
        clean output covariance."""
        from scipy.stats import chi2

        x = np.asarray(material.clean, dtype=np.float64)
        n, d = x.shape
        if n < 2 * d:
            raise ValueError(f"pac_gaussian: calibration needs at least {2 * d} texts for a {d}-d encoder "
                             f"(a covariance from fewer is mostly noise); the auxiliary corpus has {n}")
        order = np.random.default_rng(material.seed).permutation(n)
        first, second = x[order[: n // 2]], x[order[n // 2:]]
        _, evecs = np.linalg.eigh(np.cov(first, rowvar=False))
        evecs = evecs[:, ::-1]                       # by decreasing variance on the first half
        m = len(second)
        variances = np.var(second @ evecs, axis=0, ddof=1)
        upper = variances * (m - 1) / chi2.ppf(CALIBRATION_ALPHA / d, m - 1)
        upper = np.maximum(upper, EIGENVALUE_FLOOR * float(upper.mean()))
        return {"eigenvalues": upper.astype(np.float64), "eigenvectors": evecs.astype(np.float32)}

    @cached_property
    def _state(self) -> dict[str, np.ndarray]:
        return load(self.name, self.artifact, self.sha256)

    @cached_property
    def stddevs(self) -> np.ndarray:
        """The noise's standard deviation along each eigenvector."""
        from audits.pac import LN2, auto_pac_variances

        return np.sqrt(auto_pac_variances(self._state["eigenvalues"], self.mi_bits * LN2)).astype(np.float32)

    def _check(self, dimension: int) -> None:
        fitted = self._state["eigenvectors"].shape[0]
        if dimension != fitted:
            raise ValueError(f"pac_gaussian: calibrated for {fitted}-d vectors, got {dimension}-d "
                             "(the version's encoder changed: fit it again)")

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        self._check(vectors.shape[1])
        z = rng.standard_normal(vectors.shape, dtype=np.float32) * self.stddevs
        return vectors + z @ self._state["eigenvectors"].T

    def guarantee(self) -> Guarantee | None:
        return None

    def statement(self) -> str:
        # Stored in the ledger (versions.guarantee, 200 characters): short.
        return (f"PAC privacy: MI <= {self.mi_bits:.4g} bits per query for secrets like its calibration corpus "
                "(Auto-PAC Gaussian); not differential privacy")

    def noise_model(self, dimension: int) -> NoiseModel:
        self._check(dimension)
        u = self._state["eigenvectors"].astype(np.float64)
        return NoiseModel(1.0, (u * self.stddevs.astype(np.float64) ** 2) @ u.T)

    def output_dimension(self, dimension: int) -> int:
        return dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        # |u + n|^2 for unit u: mean 1 + tr(S), variance at most 4 max(S) + 2 tr(S^2); six deviations.
        self._check(dimension)
        var = self.stddevs.astype(np.float64) ** 2
        mean = 1 + float(var.sum())
        sd = math.sqrt(4 * float(var.max()) + 2 * float((var**2).sum()))
        return math.sqrt(max(mean - 6 * sd, 0.0)) * (1 - 1e-3), math.sqrt(mean + 6 * sd) * (1 + 1e-3)
