"""PAC privacy (Xiao & Devadas, CRYPTO 2023): mutual-information bounds and what they imply.

Kept beside audits.dp, and like it in two directions:

* **Calibration** (what a transform promises). Auto-PAC: for a deterministic f whose output
  covariance over the secret's distribution has eigenvalues lambda_j, Gaussian noise with
  variance sigma_j^2 = sqrt(lambda_j) * sum_i sqrt(lambda_i) / (2 v) along the same eigenvectors
  gives I(X; f(X) + B) <= 1/2 sum_j log(1 + lambda_j / sigma_j^2) <= v nats, and is the least total
  noise power that the linearised bound allows (`auto_pac_variances`).
* **Estimation** (what a pipeline delivers). For a pipeline Y = s(X) + N, N ~ N(0, Sigma_N)
  independent of X, the Gaussian maximises entropy for a given covariance, so for ANY
  distribution of s(X), I(X; Y) <= 1/2 log det(I + W), W = Sigma_N^(-1/2) Cov(s(X)) Sigma_N^(-1/2),
  and by concavity <= (m/2) log(1 + tr(W)/m) where m is the rank of Cov(s(X)) (at most K - 1 for
  a prior on K secrets). tr(W) is estimated by sampling the pipeline as a black box: r outputs per
  secret; the within-secret scatter bounds the noise scale from below (chi-square) and the
  between-secret scatter bounds tr(W) from above (noncentral chi-square), each at half the
  confidence's error (Bonferroni). The bound is sound when the noise is additive Gaussian with the
  declared shape (Residual-PAC 2025: the Gaussian bound is tight only for jointly Gaussian outputs);
  its scale is measured, so a dropped or smaller noise shows up. With K equally likely secrets
  I(X; Y) <= log K always: the cap, and all a deterministic pipeline can be given.
* **Posterior success**: an adversary whose best prior guess succeeds with probability p0 succeeds
  after seeing Y with probability p where KL(Bern(p) || Bern(p0)) <= I(X; Y) (Theorem 1 of the
  paper, via data processing), so p is at most `posterior_success_bound(p0, mi)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import chi2, ncx2

LN2 = math.log(2)
# The false-alarm rate of the checks of the declared noise: a false alarm costs a useless bound (the
# cap), never a wrong one, so they are set to miss nothing gross and cry wolf almost never.
CHECK_ALPHA = 1e-4
TOP = 16   # directions whose signal power is bounded one by one (the rest together)


def bits(nats: float) -> float:
    return nats / LN2


def kl_bernoulli(p: float, q: float) -> float:
    """KL(Bern(p) || Bern(q)) in nats."""
    def term(a: float, b: float) -> float:
        return 0.0 if a <= 0 else a * math.log(a / b)
    return term(p, q) + term(1 - p, 1 - q)


def posterior_success_bound(prior_success: float, mi_nats: float) -> float:
    """The largest success probability p >= prior_success with KL(Bern(p) || Bern(prior)) <= mi."""
    if not 0 < prior_success < 1:
        raise ValueError(f"prior_success must be in (0, 1), got {prior_success}")
    if math.isnan(mi_nats) or mi_nats == math.inf:
        return 1.0   # nothing is known: nothing is promised
    if mi_nats <= 0:
        return prior_success
    if kl_bernoulli(1.0, prior_success) <= mi_nats:
        return 1.0
    return float(brentq(lambda p: kl_bernoulli(p, prior_success) - mi_nats, prior_success, 1.0, xtol=1e-12))


def gaussian_mi_bound(total_power: float, rank: int) -> float:
    """(m/2) log(1 + T/m) nats: the largest 1/2 log det(I + W) over W >= 0 of rank m and trace T."""
    if rank < 1 or total_power <= 0:
        return 0.0
    return 0.5 * rank * math.log1p(total_power / rank)


def auto_pac_variances(eigenvalues: np.ndarray, mi_nats: float) -> np.ndarray:
    """Auto-PAC's per-direction noise variances for a budget of `mi_nats`."""
    if not mi_nats > 0:
        raise ValueError(f"the mutual-information budget must be > 0, got {mi_nats}")
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    root = np.sqrt(lam)
    return root * root.sum() / (2 * mi_nats)


def auto_pac_mi(eigenvalues: np.ndarray, variances: np.ndarray) -> float:
    """1/2 sum log(1 + lambda_j / sigma_j^2) nats, the exact Gaussian value of a calibration."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    var = np.asarray(variances, dtype=np.float64)
    keep = lam > 0
    return float(0.5 * np.log1p(lam[keep] / var[keep]).sum())


def noise_scale_lower(scatter: float, df: int, alpha: float) -> float:
    """Lower confidence bound (level 1 - alpha) on s^2 when scatter ~ s^2 chi2(df)."""
    return float(scatter / chi2.isf(alpha, df))


def noncentrality_upper(statistic: float, df: int, alpha: float) -> float:
    """Upper confidence bound (level 1 - alpha) on lambda when statistic ~ ncx2(df, lambda)."""
    if chi2.cdf(statistic, df) <= alpha:
        return 0.0   # even lambda = 0 makes the observed value improbably small: nothing to show
    hi = max(1.0, statistic)
    while ncx2.cdf(statistic, df, hi) > alpha:
        hi *= 2
    return float(brentq(lambda lam: ncx2.cdf(statistic, df, lam) - alpha, 0.0, hi, xtol=1e-9 * hi))


@dataclass(frozen=True)
class MiEstimate:
    """One prior's bound: `mi_nats` as (lower, point, upper), the cap log K, and how it was reached.

    `basis`: "gaussian" (the noise bound above), "deterministic" (no noise: the cap) or
    "not_gaussian" (random, but not declared additive Gaussian: no bound below the cap)."""

    secrets: int
    repeats: int
    dimension: int
    mi_nats: tuple[float, float, float]
    cap_nats: float
    basis: str
    noise_scale: tuple[float, float] | None = None   # (lower bound, point) of measured / declared noise
    signal_power: tuple[float, float] | None = None  # (point, upper bound) of tr(W)
    note: str = ""                                   # why the noise was not taken as declared Gaussian

    @property
    def capped(self) -> bool:
        return self.basis != "gaussian" or self.mi_nats[2] >= self.cap_nats

    def to_dict(self) -> dict:
        return {"secrets": self.secrets, "repeats": self.repeats, "dimension": self.dimension,
                "mi_bits": [round(bits(v), 6) for v in self.mi_nats], "cap_bits": round(bits(self.cap_nats), 6),
                "basis": self.basis, "capped": self.capped,
                "noise_scale": None if self.noise_scale is None else [float(v) for v in self.noise_scale],
                "signal_power": None if self.signal_power is None else [float(v) for v in self.signal_power],
                "note": self.note}


def estimate_mi(outputs: np.ndarray, noise_covariance: np.ndarray | None, confidence: float = 0.95,
                deterministic_tolerance: float = 1e-10) -> MiEstimate:
    """Bound I(X; Y) for X uniform over K secrets from `outputs` [K, r, d] (r >= 2 draws per secret).

    `noise_covariance`: the shape of the noise the pipeline declares (d x d), or None when it
    declares no additive Gaussian noise. Its scale is measured from the within-secret scatter.
    """
    y = np.asarray(outputs, dtype=np.float64)
    if y.ndim != 3 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"outputs must be [secrets >= 2, repeats >= 2, dimension], got {y.shape}")
    k, r, d = y.shape
    cap = math.log(k)
    means = y.mean(axis=1)
    within = y - means[:, None, :]
    scale = float(np.mean(np.abs(y))) or 1.0
    if float(np.max(np.abs(within))) <= deterministic_tolerance * scale:
        return MiEstimate(k, r, d, (cap, cap, cap), cap, "deterministic")
    if noise_covariance is None:
        return MiEstimate(k, r, d, (0.0, cap, cap), cap, "not_gaussian")
    # Whiten by the declared shape: the noise is then s^2 I, s^2 = 1 for an honest claim.
    evals, evecs = np.linalg.eigh(np.asarray(noise_covariance, dtype=np.float64))
    if float(evals.min()) <= 0:
        raise ValueError("the declared noise covariance must be positive definite")
    whiten = evecs / np.sqrt(evals)
    zw = within.reshape(-1, d) @ whiten
    zm = (means - means.mean(axis=0)) @ whiten
    alpha = (1 - confidence) / 2
    df_within = k * (r - 1) * d
    scatter = float(np.einsum("ij,ij->", zw, zw))
    s2_point = scatter / df_within
    if (doubt := _not_as_declared(zw, s2_point, k * (r - 1), CHECK_ALPHA)):
        return MiEstimate(k, r, d, (0.0, cap, cap), cap, "not_gaussian", note=doubt)
    s2_low = noise_scale_lower(scatter, df_within, alpha)
    rank = min(k - 1, d)
    # Two bounds, each at half the error (so the smaller holds at `confidence`): the trace alone is
    # tight when the signal is spread over many directions, the structured one when it lies in a few.
    mi_point, mi_upper, powers = _trace_only(zm, r, s2_low, s2_point, alpha / 2, rank)
    if r >= 4 and k >= 3:
        structured = _structured(y @ whiten, s2_low, s2_point, alpha / 2)
        if structured[1] < mi_upper:
            mi_point, mi_upper, powers = min(mi_point, structured[0]), structured[1], structured[2]
    statistic = r * float(np.einsum("ij,ij->", zm, zm))
    lower_power = noncentrality_lower(statistic / s2_point, (k - 1) * d, alpha) / (r * k)
    mi = (min(_lower_mi(lower_power), cap), min(mi_point, cap), min(mi_upper, cap))
    return MiEstimate(k, r, d, (min(mi[0], mi[1]), mi[1], max(mi[1], mi[2])), cap, "gaussian",
                      (s2_low, s2_point), powers)


def _trace_only(zm: np.ndarray, r: int, s2_low: float, s2_point: float, alpha: float,
                rank: int) -> tuple[float, float, tuple[float, float]]:
    """(point, upper) nats from tr(W) alone: r * sum ||mean_k - grand mean||^2 / s^2 ~
    ncx2((K - 1) d, r K tr(W)), then the rank bound (m/2) log(1 + T/m)."""
    k, d = zm.shape
    df_between = (k - 1) * d
    statistic = r * float(np.einsum("ij,ij->", zm, zm))
    power_point = max(statistic / s2_point - df_between, 0.0) / (r * k)
    power_upper = noncentrality_upper(statistic / s2_low, df_between, alpha) / (r * k)
    return (gaussian_mi_bound(power_point, rank), gaussian_mi_bound(power_upper, rank),
            (power_point, power_upper))


def _structured(zy: np.ndarray, s2_low: float, s2_point: float,
                alpha: float) -> tuple[float, float, tuple[float, float]]:
    """(point, upper) nats using where the signal lies, for a tighter bound than the trace alone.

    The first half of each candidate's draws picks the TOP directions of the candidates' spread;
    the second half, independent of that choice, bounds the signal power W_jj along each of them
    (a noncentral chi-square with K - 1 degrees of freedom) and the total in their orthogonal
    complement. By Fischer's and Hadamard's inequalities, log det(I + W) <= sum_j log(1 + W_jj)
    + log det(I + W_complement), and the complement takes the rank bound. Each of the TOP + 1
    bounds gets an equal share of `alpha` (Bonferroni)."""
    k, r, d = zy.shape
    half = r // 2
    first = zy[:, :half].mean(axis=1)
    second = zy[:, half:].mean(axis=1)
    r2 = r - half
    first = first - first.mean(axis=0)
    second = second - second.mean(axis=0)
    top = min(TOP, k - 1, d - 1)
    _, _, vt = np.linalg.svd(first, full_matrices=False)
    directions = vt[:top]                                   # rows: orthonormal, chosen on the first half
    share = alpha / (top + 1)
    along = second @ directions.T                           # [K, top]
    stats = r2 * (along**2).sum(axis=0)
    upper = [noncentrality_upper(float(v) / s2_low, k - 1, share) / (r2 * k) for v in stats]
    point = [max(float(v) / s2_point - (k - 1), 0.0) / (r2 * k) for v in stats]
    rest = second - along @ directions
    rest_stat = r2 * float(np.einsum("ij,ij->", rest, rest))
    df_rest = (k - 1) * (d - top)
    rest_upper = noncentrality_upper(rest_stat / s2_low, df_rest, share) / (r2 * k)
    rest_point = max(rest_stat / s2_point - df_rest, 0.0) / (r2 * k)
    rank_rest = min(k - 1, d - top)
    mi_upper = 0.5 * float(np.log1p(upper).sum()) + gaussian_mi_bound(rest_upper, rank_rest)
    mi_point = 0.5 * float(np.log1p(point).sum()) + gaussian_mi_bound(rest_point, rank_rest)
    return mi_point, mi_upper, (float(sum(point) + rest_point), float(sum(upper) + rest_upper))


def _not_as_declared(residuals: np.ndarray, scale: float, df: int, alpha: float) -> str:
    """Why the whitened within-candidate residuals do not look like N(0, scale I) (empty: they do).

    The bound needs Gaussian noise of the declared shape; only its scale is free. Two checks a
    wrong declaration fails: the pooled excess kurtosis (0 for a Gaussian; standard error
    sqrt(24 / N)), and each whitened coordinate's variance against its chi-square lower limit
    (noise missing along a coordinate). Not a proof of Gaussianity: the docs say what is assumed."""
    z = residuals.reshape(-1)
    if z.size < 8 or scale <= 0:
        return ""
    excess = float(np.mean(z**4) / np.mean(z**2) ** 2 - 3.0)
    if abs(excess) > 0.05 + 5 * math.sqrt(24 / z.size):
        return f"the noise is not Gaussian (excess kurtosis {excess:+.3f})"
    d = residuals.shape[1]
    per_coordinate = np.einsum("ij,ij->j", residuals, residuals) / df
    floor = scale * chi2.ppf(alpha / d, df) / df
    if float(per_coordinate.min()) < floor:
        return (f"the noise is smaller than its declared shape along coordinate {int(per_coordinate.argmin())} "
                f"({float(per_coordinate.min()) / scale:.3g} of the rest)")
    return ""


def noncentrality_lower(statistic: float, df: int, alpha: float) -> float:
    """Lower confidence limit on lambda when statistic ~ ncx2(df, lambda) (0 when chance explains it)."""
    if chi2.sf(statistic, df) >= alpha:
        return 0.0
    hi = max(1.0, statistic)
    while ncx2.sf(statistic, df, hi) < alpha:
        hi *= 2
    return float(brentq(lambda lam: ncx2.sf(statistic, df, lam) - alpha, 0.0, hi, xtol=1e-9 * hi))


def _lower_mi(total_power: float) -> float:
    """The least Gaussian-channel value 1/2 log det(I + W) for a trace (W of rank one): a lower limit of
    that value, not of the MI itself (which may be lower for a discrete prior)."""
    return 0.5 * math.log1p(max(total_power, 0.0))
