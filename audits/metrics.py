"""Point estimates with 95% confidence intervals, the form every score takes."""

from __future__ import annotations

import numpy as np
from scipy import stats

# From this many values on, a mean's interval is Student's t: BCa's skew correction shrinks as
# 1/sqrt(n) and the two agree to 1e-3 here (tests/audits/test_metrics.py), while BCa's jackknife
# costs n^2 (4.5 s for one metric of a 10,000-row sample).
ANALYTIC_FROM = 1000


def mean_with_ci(values: np.ndarray, seed: int, confidence: float = 0.95,
                 n_resamples: int = 2000) -> tuple[float, float, float]:
    """Mean of per-item values and its interval: Student's t from ANALYTIC_FROM values on,
    bootstrap (BCa) below, where a skewed sample makes t's symmetric interval wrong.

    Falls back to the percentile method where BCa is undefined (e.g. all values equal).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot estimate a mean from zero values")
    mean = float(values.mean())
    if values.size == 1 or np.all(values == values[0]):
        return mean, mean, mean
    if values.size >= ANALYTIC_FROM:
        half = stats.t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
        return mean, mean - float(half), mean + float(half)
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


def auc_with_ci(labels: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                confidence: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC and its DeLong interval (DeLong et al. 1988, midranks as in Sun & Xu 2014).

    `scores` has one column per class in `classes`. Two classes: the AUC of the second. More: the
    macro mean of one-vs-rest AUCs over the classes present with both positives and negatives,
    whose variance sums each target's DeLong components over the classes (the influence-function
    form of DeLong's covariance; one class gives DeLong's variance exactly). Normal interval,
    clipped to [0, 1]; it agrees with the percentile bootstrap it replaces (tests/audits/test_metrics.py).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    columns = [(1, classes[1])] if len(classes) == 2 else list(enumerate(classes))
    aucs, influence = [], np.zeros(len(labels))
    for k, c in columns:
        positive = labels == c
        m, n = int(positive.sum()), int((~positive).sum())
        if m == 0 or n == 0:
            continue
        s = scores[:, k]
        overall = stats.rankdata(s)
        # Per positive: the share of negatives it outranks (ties half); per negative: the share of positives above it.
        v10 = (overall[positive] - stats.rankdata(s[positive])) / n
        v01 = 1 - (overall[~positive] - stats.rankdata(s[~positive])) / m
        auc = float(v10.mean())
        aucs.append(auc)
        component = np.empty(len(labels))
        component[positive] = (v10 - auc) / np.sqrt(m * max(m - 1, 1))
        component[~positive] = (v01 - auc) / np.sqrt(n * max(n - 1, 1))
        influence += component
    if not aucs:
        raise ValueError("AUC needs targets of at least two classes")
    value = float(np.mean(aucs))
    half = float(stats.norm.ppf((1 + confidence) / 2) * np.sqrt(np.sum((influence / len(aucs)) ** 2)))
    return value, max(0.0, value - half), min(1.0, value + half)


def statistic_with_ci(statistic, n: int, seed: int, confidence: float = 0.95,
                      n_resamples: int = 1000) -> tuple[float, float, float]:
    """A statistic of all n items with no closed-form variance (corpus BLEU) and its
    percentile-bootstrap interval.

    `statistic` takes an array of row indices. Percentile, not BCa: BCa's jackknife would
    recompute the statistic n times. Resamples where the statistic is undefined are skipped.
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
