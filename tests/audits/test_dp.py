"""Differential-privacy accounting (what a transform claims) and the bounds an audit reports."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import beta, binom, norm

from audits.dp import (
    Guarantee,
    Rates,
    analytic_gaussian_sigma,
    clopper_pearson_lower,
    clopper_pearson_upper,
    epsilon_interval_cp,
    epsilon_lower_bound_cp,
    epsilon_point_cp,
    gdp_delta,
    gdp_epsilon,
    gdp_mu,
    mu_estimate,
    mu_estimate_pooled,
)
from audits.transforms import ClipGaussian, VonMisesFisher, make_transform


def hockey_stick(epsilon: float, sigma: float, sensitivity: float) -> float:
    """delta(epsilon) of the Gaussian mechanism by numerical integration of
    max(p1 - e^eps p0, 0), p0 = N(0, sigma^2), p1 = N(sensitivity, sigma^2): an independent check
    of the closed form."""
    def gap(x):
        return max(norm.pdf(x, sensitivity, sigma) - math.exp(epsilon) * norm.pdf(x, 0, sigma), 0.0)
    # p1 > e^eps p0 exactly right of this point
    start = sensitivity / 2 + epsilon * sigma**2 / sensitivity
    value, _ = integrate.quad(gap, start, start + 40 * sigma, epsabs=1e-14, epsrel=1e-10, limit=200)
    return value


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_analytic_sigma_hits_the_target_exactly(epsilon, delta):
    sigma = analytic_gaussian_sigma(epsilon, delta, 2.0)
    assert gdp_delta(epsilon, 2.0 / sigma) == pytest.approx(delta, rel=1e-6)
    assert hockey_stick(epsilon, sigma, 2.0) == pytest.approx(delta, rel=1e-4)
    assert gdp_epsilon(2.0 / sigma, delta) == pytest.approx(epsilon, rel=1e-6)
    assert gdp_mu(epsilon, delta) == pytest.approx(2.0 / sigma, rel=1e-9)
    # Linear in the sensitivity.
    assert analytic_gaussian_sigma(epsilon, delta, 1.0) == pytest.approx(sigma / 2, rel=1e-9)


def test_reference_values_and_the_classical_calibration():
    # Balle & Wang (2018), sensitivity 1, delta 1e-5: sigma 3.73 at eps 1 (classical 4.84).
    assert analytic_gaussian_sigma(1.0, 1e-5, 1.0) == pytest.approx(3.7306, abs=1e-3)
    for epsilon in (0.1, 0.3, 0.5, 0.9):
        classical = math.sqrt(2 * math.log(1.25 / 1e-5)) / epsilon
        analytic = analytic_gaussian_sigma(epsilon, 1e-5, 1.0)
        assert analytic < classical          # the classical bound over-noises...
        assert hockey_stick(epsilon, classical, 1.0) < 1e-5  # ...but is itself valid for eps < 1
    # At epsilon 0, delta is the total variation distance of the two Gaussians: 2 Phi(mu/2) - 1.
    assert gdp_delta(0.0, 1.3) == pytest.approx(2 * norm.cdf(0.65) - 1, rel=1e-12)


def test_gdp_curve_is_monotone_and_precise_in_its_tail():
    eps = np.linspace(0, 12, 61)
    deltas = [gdp_delta(e, 1.0) for e in eps]
    assert all(a > b for a, b in zip(deltas, deltas[1:], strict=False))
    assert all(d > 0 for d in deltas)                          # no cancellation to 0 or below
    assert gdp_delta(12.0, 1.0) == pytest.approx(hockey_stick(12.0, 2.0, 2.0), rel=1e-3)
    # delta(0) is the total variation distance, 2 Phi(mu/2) - 1 ~ 0.4 mu: below delta, epsilon is 0.
    assert gdp_epsilon(0.0, 1e-5) == 0.0 and gdp_epsilon(2e-5, 1e-5) == 0.0 < gdp_epsilon(3e-5, 1e-5)
    with pytest.raises(ValueError):
        gdp_epsilon(1.0, 0.0)


def test_composition_is_monotone_and_starts_at_the_claim():
    gaussian = ClipGaussian(1.0, 1e-5).guarantee()
    assert gaussian.composed(1) == pytest.approx((1.0, 1e-5), rel=1e-6)
    eps = [gaussian.composed(k)[0] for k in (1, 2, 4, 8, 16, 64)]
    assert all(a < b for a, b in zip(eps, eps[1:], strict=False))
    assert eps[-1] < 64 * 1.0                                  # far below naive composition
    # mu * sqrt(k): four queries are the mechanism with half the noise.
    assert gaussian.composed(4)[0] == pytest.approx(ClipGaussian(1.0).guarantee().epsilon_at(4.0), rel=1e-6)
    vmf = VonMisesFisher(0.5).guarantee()
    assert vmf.composed(1) == (0.5, 0.0) and vmf.composed(6) == (3.0, 0.0)
    with pytest.raises(ValueError):
        gaussian.composed(0)
    table = gaussian.composition_table((1, 4))
    assert [row["queries"] for row in table] == [1, 4] and table[0]["epsilon"] == 1.0


def test_transforms_state_their_guarantee():
    g = ClipGaussian(2.0, 1e-6, clip_norm=0.5).guarantee()
    assert (g.mechanism, g.epsilon, g.delta, g.sensitivity) == ("gaussian", 2.0, 1e-6, 1.0)
    assert g.noise == pytest.approx(analytic_gaussian_sigma(2.0, 1e-6, 1.0)) and g.mu == pytest.approx(1.0 / g.noise)
    assert g.epsilon_at(g.sensitivity) == pytest.approx(2.0, rel=1e-6)
    assert g.epsilon_at(0.25) < g.epsilon_at(0.5) < 2.0
    v = VonMisesFisher(3.0).guarantee()
    assert (v.mechanism, v.epsilon, v.delta, v.sensitivity, v.noise, v.mu) == ("vmf", 3.0, 0.0, 2.0, 1.5, None)
    assert v.epsilon_at(2.0) == 3.0 and v.epsilon_at(0.5) == 0.75
    assert make_transform({"kind": "clip_gaussian", "epsilon": 1}).guarantee().epsilon == 1
    assert make_transform({"kind": "gaussian_noise", "sigma": 0.1}).guarantee() is None
    assert "Gaussian (analytic)" in g.describe() and Guarantee(**g.to_dict()) == g


def test_clopper_pearson_bounds():
    # No errors in n trials: the upper bound solves (1 - p)^n = alpha.
    assert clopper_pearson_upper(0, 1000, 0.05) == pytest.approx(1 - 0.05 ** (1 / 1000), rel=1e-9)
    assert clopper_pearson_upper(1000, 1000, 0.05) == 1.0 and clopper_pearson_lower(0, 1000, 0.05) == 0.0
    low, high = clopper_pearson_lower(30, 100, 0.025), clopper_pearson_upper(30, 100, 0.025)
    assert low < 0.3 < high
    assert (low, high) == pytest.approx((beta.ppf(0.025, 30, 71), beta.ppf(0.975, 31, 70)))
    with pytest.raises(ValueError):
        Rates(5, 4, 0, 4)
    with pytest.raises(ValueError):
        Rates(0, 0, 0, 4)


def test_jagielski_bound_matches_its_formula():
    rates = Rates(false_positives=20, negatives=10_000, false_negatives=9_000, positives=10_000)
    fpr_u, fnr_u = rates.upper(0.95)
    expected = max(math.log((1 - 1e-5 - fnr_u) / fpr_u), math.log((1 - 1e-5 - fpr_u) / fnr_u), 0)
    assert epsilon_lower_bound_cp(rates, 1e-5) == pytest.approx(expected)
    assert epsilon_point_cp(rates, 1e-5) == pytest.approx(math.log((1 - 1e-5 - 0.9) / 0.002))
    low, point, high = epsilon_interval_cp(rates, 1e-5)
    assert low < point < high
    assert epsilon_lower_bound_cp(Rates(5000, 10_000, 5000, 10_000), 1e-5) == 0.0  # guessing proves nothing


def exceed_probability(estimator, mu: float, n: int, confidence: float = 0.95) -> float:
    """Exact probability that `estimator`'s lower bound exceeds mu for the equal-error test of a
    mu-GDP mechanism (FPR = FNR = Phi(-mu/2), where the pooled bound is tight), n draws per input.

    The lower bound falls as either error count grows, so for each count of false positives the
    counts of false negatives that exceed form a prefix 0..b*, found by bisection."""
    p = norm.cdf(-mu / 2)
    pmf = binom.pmf(np.arange(n + 1), n, p)

    def exceeds(a: int, b: int) -> bool:
        return estimator(Rates(a, n, b, n), confidence)[0] > mu

    total = 0.0
    for a in np.flatnonzero(pmf > 1e-12):
        if not exceeds(int(a), 0):
            continue
        lo, hi = 0, n  # exceeds at lo; find the last b that does
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if exceeds(int(a), mid) else (lo, mid - 1)
        total += pmf[a] * binom.cdf(lo, n, p)
    return total


@pytest.mark.parametrize("mu", [0.14, 0.5, 1.0, 2.0])
def test_mu_bounds_exceed_the_truth_at_most_as_often_as_the_confidence_allows(mu):
    bonferroni = exceed_probability(mu_estimate, mu, 100)
    pooled = exceed_probability(mu_estimate_pooled, mu, 100)
    assert bonferroni <= 0.05 and pooled <= 0.05
    # The pooled bound is the tight one: it uses most of its 5%, the Bonferroni split far less.
    assert pooled > 0.02 and bonferroni < pooled


def test_mu_estimates_are_ordered_and_converge():
    for estimator in (mu_estimate, mu_estimate_pooled):
        p = norm.cdf(-0.5)  # mu = 1 at the equal-error threshold
        n = 200_000
        low, point, high = estimator(Rates(round(p * n), n, round(p * n), n))
        assert low < point < high and point == pytest.approx(1.0, abs=2e-3)
        assert 0.97 < low and high < 1.03
    # Perfect separation: a finite, large bound; guessing: zero.
    assert 7 < mu_estimate_pooled(Rates(0, 100_000, 0, 100_000))[0] < 9
    assert mu_estimate_pooled(Rates(50_000, 100_000, 50_000, 100_000))[:2] == (0.0, 0.0)
    with pytest.raises(ValueError, match="same number"):
        mu_estimate_pooled(Rates(1, 10, 1, 20))
