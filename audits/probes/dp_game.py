"""The test of dp_audit's distinguishing game (audits.probes.dp_audit): outputs are projected onto
a direction, and a threshold on the projection guesses which of the two inputs produced them.

Here: choosing that threshold on the threshold split of the draws, and the bound a candidate
gives on that split (only used to choose; the reported bounds come from fresh draws, audits.dp).
Not a probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, norm

from audits.dp import Guarantee


@dataclass(frozen=True)
class ThresholdTest:
    """One fixed test: output . direction > threshold says 'the second input'."""

    direction: np.ndarray
    threshold: float
    label: str
    split_bound: float


def _upper(errors: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """Vectorised one-sided Clopper-Pearson upper bounds (audits.dp.clopper_pearson_upper)."""
    safe = np.minimum(errors, trials - 1)
    return np.where(errors >= trials, 1.0, beta.ppf(1 - alpha, safe + 1, trials - safe))


def split_bounds(fp: np.ndarray, negatives: int, fn: np.ndarray, positives: int, method: str,
                 delta: float, confidence: float) -> np.ndarray:
    """The bound each candidate threshold gives on the threshold split itself: mu's pooled lower
    bound (GDP method: the threshold with the fewest errors, FPR = FNR for a Gaussian mechanism)
    or Jagielski's epsilon bound (cp). Only used to choose a test."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "gdp":  # audits.dp.mu_estimate_pooled: fewest errors in all
            bound = 2 * norm.isf(_upper(fp + fn, negatives + positives, 1 - confidence))
        else:
            alpha = (1 - confidence) / 2
            fp_u, fn_u = _upper(fp, negatives, alpha), _upper(fn, positives, alpha)
            bound = np.fmax(np.log((1 - delta - fn_u) / fp_u), np.log((1 - delta - fp_u) / fn_u))
    return np.maximum(np.nan_to_num(bound, nan=0.0, neginf=0.0, posinf=0.0), 0.0)


def best_threshold(s0: np.ndarray, s1: np.ndarray, method: str, delta: float,
                   confidence: float) -> tuple[float, float]:
    """The test's threshold on the projections (s0 of the first input, s1 of the second, the
    second expected higher), and the bound it gives on this split.

    GDP method: the equal-error threshold (FPR = FNR on the split, fewest errors among ties). For
    a symmetric trade-off curve (a Gaussian mechanism; any rotation-invariant noise on the
    worst-case pair x, -x) that is where the average error is smallest, so the pooled bound is
    tightest there; and unlike the argmin of the total errors, which is flat near its minimum,
    it is a stable estimate. Jagielski's bound (cp) is decided in the tails: the threshold that
    maximises it on the split, among midpoints of pooled quantiles dense in both tails.
    """
    s0, s1 = np.sort(s0), np.sort(s1)
    pooled = np.concatenate([s0, s1])
    if method == "gdp":
        cuts = np.unique(pooled)
    else:
        tail = np.geomspace(0.5 / pooled.size, 0.5, 150)
        probs = np.clip(np.unique(np.concatenate([tail, np.linspace(0, 1, 201), 1 - tail])), 0, 1)
        cuts = np.unique(np.quantile(pooled, probs))
    if cuts.size < 2:  # every output projects to the same value: no test tells them apart
        return float(cuts[0]), 0.0
    thresholds = (cuts[:-1] + cuts[1:]) / 2
    fp = s0.size - np.searchsorted(s0, thresholds, side="right")
    fn = np.searchsorted(s1, thresholds, side="right")
    if method == "gdp":
        gap = np.abs(fp / s0.size - fn / s1.size)
        best = int(np.lexsort((fp + fn, gap))[0])
        bound = split_bounds(fp[best:best + 1], s0.size, fn[best:best + 1], s1.size, method, delta, confidence)
        return float(thresholds[best]), float(bound[0])
    bounds = split_bounds(fp, s0.size, fn, s1.size, method, delta, confidence)
    best = int(np.argmax(bounds))
    return float(thresholds[best]), float(bounds[best])


def unit(vector: np.ndarray) -> np.ndarray | None:
    length = float(np.linalg.norm(vector))
    return (np.asarray(vector, dtype=np.float64) / length).astype(np.float32) if length > 1e-12 else None


def clip_input(vector: np.ndarray, guarantee: Guarantee | None) -> np.ndarray:
    """The input as the claimed mechanism sees it: clipped to sensitivity / 2 (the sphere for vMF)."""
    vector = np.asarray(vector, dtype=np.float64)
    if guarantee is None:
        return vector
    length = max(float(np.linalg.norm(vector)), 1e-12)
    bound = guarantee.sensitivity / 2
    return vector * (bound / length if guarantee.mechanism == "vmf" else min(1.0, bound / length))
