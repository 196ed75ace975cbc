import numpy as np
import pytest

from audits.metrics import mean_with_ci, set_prf


def test_interval_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.uniform(size=50)
    large = rng.uniform(size=2000)
    m1, lo1, hi1 = mean_with_ci(small, seed=1)
    m2, lo2, hi2 = mean_with_ci(large, seed=1)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2
    assert (hi2 - lo2) < (hi1 - lo1) / 3
    assert lo2 < 0.5 < hi2  # the true mean of U(0, 1)


def test_constant_values_have_a_degenerate_interval():
    assert mean_with_ci(np.ones(10), seed=0) == (1.0, 1.0, 1.0)


def test_empty_values_are_refused():
    with pytest.raises(ValueError):
        mean_with_ci(np.array([]), seed=0)


def test_set_prf():
    assert set_prf({"a", "b"}, {"a", "c", "d", "e"}) == pytest.approx((0.5, 0.25, 1 / 3))
    assert set_prf(set(), {"a"}) == (0.0, 0.0, 0.0)


def _bootstrap_auc(labels, scores, classes, seed=0, resamples=600):
    from sklearn.metrics import roc_auc_score

    def auc(rows):
        y, p = labels[rows], scores[rows]
        if len(classes) == 2:
            return roc_auc_score(y == classes[1], p[:, 1])
        return np.mean([roc_auc_score(y == c, p[:, k]) for k, c in enumerate(classes) if 0 < (y == c).sum() < len(y)])

    rng = np.random.default_rng(seed)
    draws = [auc(rng.integers(0, len(labels), len(labels))) for _ in range(resamples)]
    return auc(np.arange(len(labels))), *np.quantile(draws, [0.025, 0.975])


@pytest.mark.parametrize("n_classes,n,separation", [(2, 400, 1.0), (2, 150, 0.3), (4, 600, 0.8), (3, 300, 2.0)])
def test_delong_auc_interval_agrees_with_the_bootstrap(n_classes, n, separation):
    """DeLong's closed form replaces 1,000 bootstrap resamples of the AUC: same point, and ends within
    0.02 of the percentile bootstrap's on binary and macro one-vs-rest problems (ties included)."""
    from audits.metrics import auc_with_ci

    rng = np.random.default_rng(n_classes * n)
    classes = np.array([f"c{k}" for k in range(n_classes)], dtype=object)
    labels = classes[rng.integers(0, n_classes, n)]
    logits = rng.normal(size=(n, n_classes)) + separation * (labels[:, None] == classes[None, :])
    scores = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)   # rounding makes ties
    value, low, high = auc_with_ci(labels, scores, classes)
    b_value, b_low, b_high = _bootstrap_auc(labels, scores, classes)
    assert value == pytest.approx(b_value, abs=1e-12)
    assert low < value < high
    assert abs(low - b_low) < 0.02 and abs(high - b_high) < 0.02


def test_delong_interval_of_a_perfect_or_useless_attacker():
    from audits.metrics import auc_with_ci

    classes = np.array(["no", "yes"], dtype=object)
    labels = np.array(["no"] * 50 + ["yes"] * 50, dtype=object)
    perfect = np.column_stack([1 - np.arange(100) / 100, np.arange(100) / 100])
    assert auc_with_ci(labels, perfect, classes) == (1.0, 1.0, 1.0)
    constant = np.full((100, 2), 0.5)
    value, low, high = auc_with_ci(labels, constant, classes)
    assert value == 0.5 and low == high == 0.5   # every pair tied: no evidence either way, no spread
    with pytest.raises(ValueError, match="two classes"):
        auc_with_ci(labels[:50], perfect[:50], classes)


@pytest.mark.parametrize("n", [1000, 10_000])
def test_t_interval_of_large_samples_agrees_with_bca(n):
    """From ANALYTIC_FROM values the mean's interval is Student's t; on skewed per-text values
    (most zero, the rest uniform) it lands within 1e-3 of the BCa bootstrap it replaces."""
    from scipy import stats

    from audits.metrics import ANALYTIC_FROM

    assert n >= ANALYTIC_FROM
    rng = np.random.default_rng(n)
    values = (rng.random(n) < 0.2) * rng.random(n)
    mean, low, high = mean_with_ci(values, seed=0)
    bca = stats.bootstrap((values,), np.mean, n_resamples=2000, method="BCa", random_state=np.random.default_rng(0))
    assert mean == pytest.approx(values.mean())
    assert abs(low - bca.confidence_interval.low) < 1e-3 and abs(high - bca.confidence_interval.high) < 1e-3
