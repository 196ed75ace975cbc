"""PAC accounting (audits.pac): the mutual-information bound is sound on mechanisms whose MI is known,
Auto-PAC calibration meets its budget, and the posterior-success bound behaves as Theorem 1 says."""

import math

import numpy as np
import pytest
from scipy.special import logsumexp

from audits.pac import (
    auto_pac_mi,
    auto_pac_variances,
    bits,
    estimate_mi,
    gaussian_mi_bound,
    kl_bernoulli,
    posterior_success_bound,
)


def true_mi(points: np.ndarray, sigma: float, rng: np.random.Generator, n: int = 20_000) -> float:
    """I(X; x + N(0, sigma^2 I)) for X uniform over `points`: log K - H(X | Y), H by Monte Carlo with
    the exact posterior (accurate to about 0.01 nats at this n)."""
    k = len(points)
    x = rng.integers(k, size=n)
    y = points[x] + sigma * rng.standard_normal((n, points.shape[1]))
    d2 = ((y[:, None, :] - points[None, :, :]) ** 2).sum(-1) / (2 * sigma**2)
    log_post = -d2 - logsumexp(-d2, axis=1, keepdims=True)
    return math.log(k) + float(log_post[np.arange(n), x].mean())


@pytest.mark.parametrize(("d", "k", "spread", "sigma"), [
    (32, 16, 0.3, 1.0),     # moderate signal: the bound must sit above the truth, not far
    (64, 32, 0.05, 0.5),    # weak signal: little leaks, and the bound must say so
    (16, 8, 2.0, 1.0),      # strong signal: near the cap log K
])
def test_the_bound_is_never_below_the_true_mutual_information(d, k, spread, sigma):
    rng = np.random.default_rng([d, k])
    points = rng.standard_normal((k, d)) * spread
    truth = true_mi(points, sigma, rng)
    trials = 40
    uppers = []
    for _ in range(trials):
        outputs = points[:, None, :] + sigma * rng.standard_normal((k, 8, d))
        estimate = estimate_mi(outputs, np.eye(d) * sigma**2, confidence=0.95)
        assert estimate.basis == "gaussian"
        assert estimate.mi_nats[0] <= estimate.mi_nats[1] <= estimate.mi_nats[2] <= math.log(k) + 1e-12
        uppers.append(estimate.mi_nats[2])
    uppers = np.array(uppers)
    # At 95% confidence at most ~5% of bounds may fall below; allow a little Monte Carlo slack in `truth`.
    assert (uppers < truth - 0.02).mean() <= 0.1
    assert np.median(uppers) <= truth + 2.0   # and it is a usable bound, not just the cap


def test_the_noise_scale_is_measured_so_an_overstated_claim_does_not_shrink_the_bound():
    rng = np.random.default_rng(3)
    d, k, sigma = 32, 16, 0.5
    points = rng.standard_normal((k, d)) * 0.3
    outputs = points[:, None, :] + sigma * rng.standard_normal((k, 8, d))
    honest = estimate_mi(outputs, np.eye(d) * sigma**2)
    claims_ten_times_more = estimate_mi(outputs, np.eye(d) * (10 * sigma) ** 2)
    assert claims_ten_times_more.mi_nats[2] == pytest.approx(honest.mi_nats[2], rel=1e-6)
    assert claims_ten_times_more.noise_scale[1] == pytest.approx(0.01, rel=0.05)   # measured: 1/100 of the claim


def test_jointly_gaussian_outputs_are_bounded_close_to_their_exact_value():
    # Many secrets whose outputs are Gaussian: I = 1/2 log det(I + Sigma / sigma^2) nearly exactly.
    rng = np.random.default_rng(5)
    d, k, sigma = 8, 2000, 1.0
    scales = np.linspace(0.1, 0.6, d)
    points = rng.standard_normal((k, d)) * scales
    exact = 0.5 * float(np.log1p((points.var(axis=0)) / sigma**2).sum())
    estimate = estimate_mi(points[:, None, :] + sigma * rng.standard_normal((k, 4, d)), np.eye(d))
    assert estimate.mi_nats[2] >= exact
    assert estimate.mi_nats[2] <= exact * 1.5


def test_a_deterministic_pipeline_gets_the_cap_and_says_so():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((10, 5))
    outputs = np.repeat(points[:, None, :], 3, axis=1)
    estimate = estimate_mi(outputs, np.eye(5))
    assert estimate.basis == "deterministic" and estimate.capped
    assert estimate.mi_nats == (math.log(10),) * 3


def test_random_noise_that_is_not_declared_gaussian_gets_no_bound_below_the_cap():
    rng = np.random.default_rng(0)
    outputs = rng.standard_normal((10, 3, 5))
    estimate = estimate_mi(outputs, None)
    assert estimate.basis == "not_gaussian" and estimate.mi_nats[2] == math.log(10)


def test_auto_pac_meets_its_budget_exactly_for_gaussian_outputs():
    rng = np.random.default_rng(0)
    eigenvalues = np.sort(rng.gamma(0.5, 0.01, size=384))[::-1]
    for budget_bits in (0.25, 1.0, 4.0):
        variances = auto_pac_variances(eigenvalues, budget_bits * math.log(2))
        assert bits(auto_pac_mi(eigenvalues, variances)) <= budget_bits + 1e-9
        # The linearised bound is met with equality: sum lambda / sigma^2 = 2 v.
        assert float((eigenvalues / variances).sum()) == pytest.approx(2 * budget_bits * math.log(2))
    with pytest.raises(ValueError, match="budget"):
        auto_pac_variances(eigenvalues, 0.0)


def test_auto_pac_noise_is_sound_against_the_estimator_too():
    # Noise calibrated to 1 bit on the outputs' own covariance: the black-box bound comes out near 1 bit.
    rng = np.random.default_rng(2)
    d, k = 16, 400
    points = rng.standard_normal((k, d)) * np.linspace(0.05, 1.0, d)
    evals, evecs = np.linalg.eigh(np.cov(points, rowvar=False, bias=True))
    variances = auto_pac_variances(evals, math.log(2))
    noise = (rng.standard_normal((k, 6, d)) * np.sqrt(variances)) @ evecs.T
    estimate = estimate_mi(points[:, None, :] + noise, (evecs * variances) @ evecs.T)
    assert bits(estimate.mi_nats[1]) <= 1.3
    assert bits(estimate.mi_nats[2]) >= bits(auto_pac_mi(evals, variances)) - 1e-9


def test_posterior_success_bound():
    assert posterior_success_bound(0.01, 0.0) == pytest.approx(0.01)
    assert posterior_success_bound(0.5, 10.0) == 1.0
    p = posterior_success_bound(1 / 64, math.log(2))   # 1 bit about one of 64
    assert 1 / 64 < p < 1
    assert kl_bernoulli(p, 1 / 64) == pytest.approx(math.log(2), rel=1e-6)
    # More information, more success: monotone.
    assert posterior_success_bound(1 / 64, 2 * math.log(2)) > p
    with pytest.raises(ValueError, match="prior_success"):
        posterior_success_bound(0.0, 1.0)


def test_the_rank_bound_is_the_largest_log_det_of_its_trace():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lam = rng.exponential(1.0, size=7)
        assert 0.5 * np.log1p(lam).sum() <= gaussian_mi_bound(float(lam.sum()), 7) + 1e-12


def test_noise_that_is_not_gaussian_or_not_of_the_declared_shape_gets_no_bound():
    # Two candidates 2.2 apart, noise +-1 (variance 1, not Gaussian): a Gaussian formula would promise
    # 0.7 bits where the truth is 1 bit (the secret is always recovered).
    rng = np.random.default_rng(0)
    d, r = 16, 64
    points = np.zeros((2, d))
    points[1] = 2.2 / math.sqrt(d)
    signs = rng.choice([-1.0, 1.0], size=(2, r, d))
    estimate = estimate_mi(points[:, None, :] + signs, np.eye(d))
    assert estimate.basis == "not_gaussian" and "kurtosis" in estimate.note
    assert estimate.mi_nats[2] == pytest.approx(math.log(2))
    # Gaussian noise, but none along one coordinate the declaration says is noisy.
    noise = rng.standard_normal((8, 16, d))
    noise[:, :, 3] *= 0.01
    estimate = estimate_mi(rng.standard_normal((8, 1, d)) * 0.1 + noise, np.eye(d))
    assert estimate.basis == "not_gaussian" and "coordinate 3" in estimate.note


def test_posterior_bound_promises_nothing_when_the_information_is_unknown():
    assert posterior_success_bound(0.1, float("nan")) == 1.0
    assert posterior_success_bound(0.1, float("inf")) == 1.0


def test_auto_pac_calibrated_on_a_split_corpus_keeps_its_promise_at_the_smallest_corpus_allowed():
    """The transform's fit (audits.transforms.pac) at n = 2d: the true Gaussian-channel MI of the
    calibrated noise against the true covariance stays within the budget."""
    from audits.transforms.base import FitMaterial
    from audits.transforms.pac import PacGaussian

    d = 64
    kept = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scales = np.geomspace(1.0, 0.05, d)                     # a decaying spectrum, like an encoder's
        x = rng.standard_normal((2 * d, d)) * scales
        state = PacGaussian.fit({}, FitMaterial(tuple(str(i) for i in range(2 * d)), x, "synthetic", seed))
        variances = auto_pac_variances(state["eigenvalues"], math.log(2))
        u = state["eigenvectors"].astype(np.float64)
        noise = (u * variances) @ u.T
        w = np.linalg.solve(noise, np.diag(scales**2))
        kept += bits(0.5 * float(np.linalg.slogdet(np.eye(d) + w)[1])) <= 1.0
    assert kept >= 19
