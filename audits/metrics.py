"""Point estimates with 95% confidence intervals, the form every score takes."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_with_ci(values: np.ndarray, seed: int, confidence: float = 0.95,
                 n_resamples: int = 2000) -> tuple[float, float, float]:
    """Mean of per-item values and its bootstrap (BCa) interval.

    Falls back to the percentile method where BCa is undefined (e.g. all values equal).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot estimate a mean from zero values")
    mean = float(values.mean())
    if values.size == 1 or np.all(values == values[0]):
        return mean, mean, mean
    for method in ("BCa", "percentile"):
        res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                              method=method, vectorized=True, random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return mean, min(low, mean), max(high, mean)
    return mean, mean, mean


def set_prf(predicted: set[str], actual: set[str]) -> tuple[float, float, float]:
    """Precision, recall and F1 of one predicted word set against the true one."""
    hits = len(predicted & actual)
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(actual) if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def proportion_with_ci(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """A rate and its exact (Clopper-Pearson) binomial interval."""
    if trials <= 0:
        raise ValueError("cannot estimate a proportion from zero trials")
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return successes / trials, float(ci.low), float(ci.high)


def statistic_with_ci(statistic, n: int, seed: int, confidence: float = 0.95,
                      n_resamples: int = 1000) -> tuple[float, float, float]:
    """A statistic of all n items (e.g. ROC AUC) and its percentile-bootstrap interval.

    `statistic` takes an array of row indices. Percentile, not BCa: BCa's jackknife would
    recompute the statistic n times, which is slow for AUC on thousands of targets. Resamples
    where the statistic is undefined (one class only) are skipped.
    """
    if n <= 0:
        raise ValueError("cannot estimate a statistic from zero items")
    point = float(statistic(np.arange(n)))

    def safe(rows: np.ndarray) -> float:
        try:
            return float(statistic(rows.astype(int)))
        except ValueError:
            return np.nan

    res = stats.bootstrap((np.arange(n),), safe, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", vectorized=False, random_state=np.random.default_rng(seed))
    dist = res.bootstrap_distribution
    if not np.isfinite(dist).any():
        return point, point, point
    alpha = (1 - confidence) / 2
    low, high = np.nanquantile(dist, [alpha, 1 - alpha])
    return point, min(float(low), point), max(float(high), point)
