"""Differential-privacy accounting and empirical epsilon bounds.

Two directions, kept together so they use one set of formulas:

* **Accounting** (what a transform claims). The Gaussian mechanism with L2 sensitivity Delta and
  noise sigma is mu-GDP with mu = Delta / sigma (Dong, Roth & Su 2019); its exact (epsilon, delta)
  curve is Balle & Wang's (2018) analytic formula
  delta(eps) = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu). Calibrating sigma for a target
  (epsilon, delta) solves that curve for mu. k queries of the same text compose to
  mu * sqrt(k)-GDP (Gaussian), or k * epsilon (pure epsilon-DP mechanisms).
* **Auditing** (what the pipeline delivers). From the false positive and false negative rates of a
  test that tells two neighbouring inputs apart, with Clopper-Pearson upper bounds:
  - `epsilon_lower_bound_cp`: Jagielski et al. (2020); assumes nothing about the mechanism.
  - `mu_estimate`: a mu-GDP mechanism has FNR >= Phi(Phi^-1(1 - FPR) - mu) for every test, so
    mu_LB = Phi^-1(1 - FPR_u) - Phi^-1(FNR_u) refutes every mu' < mu_LB (Nasr et al. 2023 audit
    Gaussian-DP this way). As a statement about GDP it holds for any mechanism. Converted with
    the same curve (`gdp_epsilon`) it compares one-to-one with a Gaussian mechanism's claimed
    epsilon (both are monotone in mu), but it is an (epsilon, delta) lower bound only for a
    mechanism whose privacy curve has the Gaussian shape: for a pure-DP claim use the plain bound.
    It uses the whole trade-off curve rather than its (epsilon, delta) tail, which is why it is
    tight at sample sizes where the plain bound is not.
  - `mu_estimate_pooled`: the same trade-off curve is closest to the origin where FPR = FNR =
    Phi(-mu/2), so the average error of any test bounds mu from below with one bound on the
    pooled errors of both inputs; no Bonferroni split. The DP audit uses it, at an equal-error
    threshold.
  - `epsilon_interval_cp`, `mu_estimate` and `mu_estimate_pooled` also give a point value and an
    upper limit (from the Clopper-Pearson lower bounds of the rates) for the scores' intervals.
Where two upper bounds are combined they are taken at (1 - confidence) / 2 each (Bonferroni), so
a reported lower bound exceeds the truth with probability at most 1 - confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scipy.optimize import brentq
from scipy.special import log_ndtr
from scipy.stats import beta, norm

EPSILON_CAP = 10_000.0  # the root finders' bracket; far beyond any meaningful claim or bound


def gdp_delta(epsilon: float, mu: float) -> float:
    """delta(epsilon) of a mu-GDP mechanism (Balle & Wang's analytic Gaussian formula)."""
    if mu <= 0:
        return 0.0
    a = float(log_ndtr(mu / 2 - epsilon / mu))
    b = epsilon + float(log_ndtr(-mu / 2 - epsilon / mu))
    if b >= a:
        return 0.0
    # e^a - e^b = e^a (1 - e^(b - a)): no cancellation where both terms are tiny and close.
    return float(math.exp(a) * -math.expm1(b - a))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon for which a mu-GDP mechanism is (epsilon, delta)-DP."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if mu <= 0 or gdp_delta(0.0, mu) <= delta:
        return 0.0
    if gdp_delta(EPSILON_CAP, mu) > delta:
        return EPSILON_CAP
    return float(brentq(lambda eps: gdp_delta(eps, mu) - delta, 0.0, EPSILON_CAP, xtol=1e-10))


def gdp_mu(epsilon: float, delta: float) -> float:
    """The mu whose GDP curve passes through (epsilon, delta): the largest mu that is (epsilon, delta)-DP."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got epsilon={epsilon} delta={delta}")
    hi = 1.0
    while gdp_delta(epsilon, hi) < delta:
        hi *= 2
    return float(brentq(lambda mu: gdp_delta(epsilon, mu) - delta, 1e-12, hi, xtol=1e-12))


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Noise sigma of the analytic Gaussian mechanism (Balle & Wang 2018) for (epsilon, delta)."""
    if not sensitivity > 0:
        raise ValueError(f"sensitivity must be > 0, got {sensitivity}")
    return sensitivity / gdp_mu(epsilon, delta)


@dataclass(frozen=True)
class Guarantee:
    """What a transform claims for one query: (epsilon, delta)-DP w.r.t. inputs within `sensitivity`
    in L2 (any two inputs, after clipping), with `noise` = sigma (Gaussian) or kappa (von Mises-Fisher)."""

    mechanism: Literal["gaussian", "vmf"]
    epsilon: float
    delta: float
    sensitivity: float
    noise: float

    @property
    def mu(self) -> float | None:
        """The GDP parameter (Gaussian mechanism only)."""
        return self.sensitivity / self.noise if self.mechanism == "gaussian" else None

    def composed(self, queries: int) -> tuple[float, float]:
        """(epsilon, delta) after `queries` answers about the same text, each with fresh noise."""
        if queries < 1:
            raise ValueError(f"queries must be >= 1, got {queries}")
        mu = self.mu
        if mu is not None:  # the Gaussian mechanism
            return gdp_epsilon(mu * math.sqrt(queries), self.delta), self.delta
        return self.epsilon * queries, 0.0

    def epsilon_at(self, distance: float) -> float:
        """The epsilon this mechanism gives two inputs `distance` apart (less than the worst case)."""
        if self.mechanism == "gaussian":
            return gdp_epsilon(distance / self.noise, self.delta)
        return self.noise * distance

    def describe(self) -> str:
        delta = f", delta={self.delta:g}" if self.delta else ""
        kind = "Gaussian (analytic)" if self.mechanism == "gaussian" else "von Mises-Fisher on the sphere"
        return (f"(epsilon={self.epsilon:g}{delta})-DP per query, {kind}, L2 sensitivity {self.sensitivity:g}, "
                f"{'sigma' if self.mechanism == 'gaussian' else 'kappa'}={self.noise:.4g}")

    def composition_table(self, queries: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)) -> list[dict]:
        return [{"queries": k, "epsilon": round(eps, 4), "delta": delta}
                for k in queries for eps, delta in [self.composed(k)]]

    def to_dict(self) -> dict:
        return {"mechanism": self.mechanism, "epsilon": self.epsilon, "delta": self.delta,
                "sensitivity": self.sensitivity, "noise": self.noise}


def clopper_pearson_upper(errors: int, trials: int, alpha: float) -> float:
    """One-sided upper confidence bound on a rate at level 1 - alpha."""
    if trials <= 0:
        raise ValueError("no trials")
    if errors >= trials:
        return 1.0
    return float(beta.ppf(1 - alpha, errors + 1, trials - errors))


def clopper_pearson_lower(errors: int, trials: int, alpha: float) -> float:
    if errors <= 0:
        return 0.0
    return float(beta.ppf(alpha, errors, trials - errors + 1))


@dataclass(frozen=True)
class Rates:
    """Errors of one distinguishing test: false positives among `negatives` draws of the first
    input, false negatives among `positives` draws of the second."""

    false_positives: int
    negatives: int
    false_negatives: int
    positives: int

    def __post_init__(self) -> None:
        if not (0 <= self.false_positives <= self.negatives and 0 <= self.false_negatives <= self.positives
                and self.negatives > 0 and self.positives > 0):
            raise ValueError(f"rates need 0 <= errors <= trials and trials > 0, got {self}")

    def to_dict(self) -> dict:
        return {"false_positives": self.false_positives, "negatives": self.negatives,
                "false_negatives": self.false_negatives, "positives": self.positives}

    @property
    def fpr(self) -> float:
        return self.false_positives / self.negatives

    @property
    def fnr(self) -> float:
        return self.false_negatives / self.positives

    def upper(self, confidence: float) -> tuple[float, float]:
        alpha = (1 - confidence) / 2
        return (clopper_pearson_upper(self.false_positives, self.negatives, alpha),
                clopper_pearson_upper(self.false_negatives, self.positives, alpha))

    def lower(self, confidence: float) -> tuple[float, float]:
        alpha = (1 - confidence) / 2
        return (clopper_pearson_lower(self.false_positives, self.negatives, alpha),
                clopper_pearson_lower(self.false_negatives, self.positives, alpha))


def _pure_bound(fpr: float, fnr: float, delta: float) -> float:
    candidates = [0.0]
    for a, b in ((fpr, fnr), (fnr, fpr)):
        if a <= 0:
            continue
        if 1 - delta - b > 0:
            candidates.append(math.log((1 - delta - b) / a))
    return min(max(candidates), EPSILON_CAP)


def epsilon_lower_bound_cp(rates: Rates, delta: float, confidence: float = 0.95) -> float:
    """Jagielski et al. (2020): max(ln((1-delta-FNR_u)/FPR_u), ln((1-delta-FPR_u)/FNR_u), 0)."""
    fpr_u, fnr_u = rates.upper(confidence)
    return _pure_bound(fpr_u, fnr_u, delta)


def epsilon_point_cp(rates: Rates, delta: float) -> float:
    """The same formula on the observed rates (no confidence): a point estimate, not a bound."""
    fpr = max(rates.fpr, 0.5 / rates.negatives)
    fnr = max(rates.fnr, 0.5 / rates.positives)
    return _pure_bound(fpr, fnr, delta)


def epsilon_interval_cp(rates: Rates, delta: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """(lower bound, point, upper limit) of the Jagielski formula at this test's threshold.

    The lower bound is `epsilon_lower_bound_cp`; the upper limit is the same formula on the
    Clopper-Pearson *lower* bounds of the rates: how large this test's evidence could be, not an
    upper bound on the mechanism's epsilon (error rates can only ever show a lower bound).
    """
    low = epsilon_lower_bound_cp(rates, delta, confidence)
    point = max(epsilon_point_cp(rates, delta), low)
    fpr_l, fnr_l = rates.lower(confidence)
    high = _pure_bound(max(fpr_l, 0.05 / rates.negatives), max(fnr_l, 0.05 / rates.positives), delta)
    return low, point, max(high, point)


def _mu_of(fpr: float, fnr: float) -> float:
    return max(float(norm.isf(fpr) - norm.ppf(fnr)), 0.0)


def mu_estimate(rates: Rates, confidence: float = 0.95) -> tuple[float, float, float]:
    """(lower bound, point estimate, upper bound) of mu from one test's error rates.

    mu = Phi^-1(1 - FPR) - Phi^-1(FNR) is the same for every threshold of the optimal test of a
    Gaussian mechanism; the bounds come from the Clopper-Pearson bounds of both rates.
    """
    fpr_u, fnr_u = rates.upper(confidence)
    fpr_l, fnr_l = rates.lower(confidence)
    half_n = (0.5 / rates.negatives, 0.5 / rates.positives)
    point = _mu_of(max(rates.fpr, half_n[0]), max(rates.fnr, half_n[1]))
    low = _mu_of(fpr_u, fnr_u)
    high = _mu_of(max(fpr_l, half_n[0] / 10), max(fnr_l, half_n[1] / 10))
    return low, max(point, low), max(high, point, low)


def mu_estimate_pooled(rates: Rates, confidence: float = 0.95) -> tuple[float, float, float]:
    """(lower bound, point, upper limit) of mu from the average error of one test.

    A mu-GDP trade-off curve f(a) = Phi(Phi^-1(1 - a) - mu) is convex and symmetric, so every test
    has (FPR + FNR) / 2 >= Phi(-mu/2), with equality where FPR = FNR: mu >= 2 Phi^-1(1 - err_u)
    for an upper bound err_u on the average error. Both inputs' errors are pooled (2n trials,
    equal n per input): their count is Poisson-binomial, whose lower tail is no heavier than that
    of the binomial with the same mean (Hoeffding 1956, for counts at least one below the mean,
    which covers every count whose binomial lower tail is <= 1/4), so the Clopper-Pearson bound on 2n trials holds,
    and all of 1 - confidence goes to that one bound. At an equal-error threshold this is tighter
    than `mu_estimate`'s two Bonferroni-split bounds; it is sound at any threshold.
    """
    if rates.negatives != rates.positives:
        raise ValueError("the pooled estimate needs the same number of draws of both inputs")
    errors, trials = rates.false_positives + rates.false_negatives, rates.negatives + rates.positives
    alpha = 1 - confidence
    point = max(2 * float(norm.isf(max(errors, 0.5) / trials)), 0.0)
    low = max(2 * float(norm.isf(clopper_pearson_upper(errors, trials, alpha))), 0.0)
    high = 2 * float(norm.isf(max(clopper_pearson_lower(errors, trials, alpha), 0.05 / trials)))
    point = max(point, low)
    return low, point, max(high, point)

