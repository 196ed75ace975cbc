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
