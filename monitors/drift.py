"""Drift of a deployment's vectors: the recent window against its version's reference sample.

Why: a pipeline can change silently, e.g. a privacy transform (Gaussian noise per coordinate) is
dropped in production. Nothing fails; only the stored vectors change. Three numbers catch it:

- `model_auc`: evidently's classifier method (`ModelDriftMethod`): held-out ROC AUC of a logistic
  classifier telling reference rows from current ones; 0.5 = indistinguishable. The classifier is
  linear, so on the raw coordinates it only sees a shift of the mean: dropping zero-mean noise
  leaves the mean unchanged and scores 0.5 (measured: 0.46-0.52). So evidently's methods get each
  row as its coordinates plus its L2 norm (one extra embedding column), which makes a change of
  scale separable too.
- `mmd`: evidently's `MMDDriftMethod`: unbiased squared maximum mean discrepancy, RBF kernel with
  the median-distance bandwidth, clipped at 0; 0 = no drift. Sees any change of distribution, but
  is the least sensitive of the three to a change of scale.
- `norm_ks`: two-sample Kolmogorov-Smirnov statistic of the vectors' L2 norms (scipy); noise of
  sigma per coordinate moves unit norms to about sqrt(1 + dim * sigma^2), so this is the most
  direct witness of a dropped or changed noise transform.

Cost: evidently's MMD builds the full (m + n)^2 kernel (3.2 GB at 10,000 rows per side) and its
report renders a t-SNE of up to 2,500 rows per side and method (40-55 s for the two methods on 2
busy cores). So both evidently methods run on a seeded subsample of at most `EVIDENTLY_ROWS` rows per
side, and the scores come from calling the very method objects `EmbeddingsDrift` calls (about 1 s
for 10,000 rows per side); the `Report` is built only when an HTML file is asked for, and then the
scores are read from its snapshot (the same numbers). `norm_ks` and the mean norms use every row.

Suggested default thresholds (higher is worse), from all-MiniLM-L6-v2 vectors of synthetic
messages, reference through noise sigma 0.05 (tests/monitors/test_drift.py, `make bench
SECTIONS=drift`):

    drift.model_auc: warn 0.65, gate 0.80, rollback 0.95
    drift.mmd:       warn 0.01, gate 0.03
    drift.norm_ks:   warn 0.20, gate 0.50, rollback 0.90

    window                            model_auc    mmd             norm_ks
    unchanged (fresh noise)           0.48-0.54    0.0000-0.0003   0.01-0.08
    sigma 0.05 -> 0.045               0.82         0.002           0.61
    sigma 0.05 -> 0.04                0.98         0.008           0.91
    transform dropped                 1.00         0.09-0.11       1.00

    (unchanged and dropped: 400 rows a side in the tests, 10,000 in the benchmark; the sigma
    changes: 1,500 a side.)

Small windows are noisy: without drift, norm_ks exceeds 0.2 about a quarter of the time at 50
rows a side and 4% at 100 (KS null distribution; 0.3 was seen at 20): for deployments with small
windows judge on the interval (`basis: ci_low`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from audits.errors import InvalidSample
from audits.results import Score
from monitors.thresholds import DRIFT_METRICS  # noqa: F401  (re-exported: metric -> allowed threshold range)

MIN_ROWS = 20
EVIDENTLY_ROWS = 3000  # per side; MMD kernel of 6,000^2 float64 = 288 MB, under a second on 2 cores
MMD_BLOCKS = 5  # disjoint blocks for the MMD interval
KS_RESAMPLES = 200
EMBEDDING = "vector"
MODEL_AUC_WARN, MMD_WARN = 0.65, 0.01  # given to evidently's methods so the HTML's verdict matches


@dataclass(frozen=True)
class DriftResult:
    """Drift of one window against one reference; intervals are kept for `scores`."""

    model_auc: float
    mmd: float
    norm_ks: float
    norm_p: float
    n_current: int
    n_reference: int
    mean_norm_current: float
    mean_norm_reference: float
    seconds: float
    # 95% intervals; the defaults are the metrics' whole ranges (MMD^2 of an RBF kernel is at most 2).
    model_auc_ci: tuple[float, float] = (0.0, 1.0)
    mmd_ci: tuple[float, float] = (0.0, 2.0)
    norm_ks_ci: tuple[float, float] = (0.0, 1.0)

    def scores(self) -> list[Score]:
        """The three drift scores (probe "drift"), each with its 95% interval; n = current rows."""
        return [Score("drift", metric, value, *_bracket(value, ci), self.n_current)
                for metric, value, ci in (("model_auc", self.model_auc, self.model_auc_ci),
                                          ("mmd", self.mmd, self.mmd_ci),
                                          ("norm_ks", self.norm_ks, self.norm_ks_ci))]


def compute(current: np.ndarray, reference: np.ndarray, seed: int = 0, max_rows: int | None = None,
            html_path: str | None = None, *, evidently_rows: int = EVIDENTLY_ROWS) -> DriftResult:
    """Compare `current` (recent window) with `reference` (the version's sample), rows = vectors.

    Each side is first cut to `max_rows` random rows (seeded) if given; evidently's methods then
    see at most `evidently_rows` of those per side. The same inputs and seed give the same result.
    With `html_path`, evidently's own report (both methods, with its t-SNE picture, which evidently
    does not seed) is written there; the scores are then read from its snapshot.
    """
    started = time.perf_counter()
    if max_rows is not None and max_rows < MIN_ROWS:
        raise ValueError(f"max_rows must be at least {MIN_ROWS}, got {max_rows}")
    if evidently_rows < MIN_ROWS:
        raise ValueError(f"evidently_rows must be at least {MIN_ROWS}, got {evidently_rows}")
    cur, ref = _checked("current", current), _checked("reference", reference)
    if cur.shape[1] != ref.shape[1]:
        raise InvalidSample(f"current: vectors have dimension {cur.shape[1]}, expected the reference's "
                            f"dimension {ref.shape[1]}")
    rng = np.random.default_rng(seed)
    if max_rows is not None:
        cur, ref = _rows(cur, max_rows, rng), _rows(ref, max_rows, rng)

    cur_norms, ref_norms = np.linalg.norm(cur, axis=1), np.linalg.norm(ref, axis=1)
    ks = stats.ks_2samp(cur_norms, ref_norms)
    ks_ci = _ks_interval(float(ks.statistic), cur_norms, ref_norms, rng)

    ev_cur, ev_ref = _rows(cur, evidently_rows, rng), _rows(ref, evidently_rows, rng)
    model_method, mmd_method = _methods()
    if html_path is None:
        auc = float(model_method(_frame(ev_cur), _frame(ev_ref))[0])
        mmd = float(mmd_method(_frame(ev_cur), _frame(ev_ref))[0])
    else:
        auc, mmd = _report(ev_cur, ev_ref, model_method, mmd_method, str(html_path))
    mmd_ci = _mmd_interval(mmd, ev_cur, ev_ref, mmd_method, rng)
    return DriftResult(
        model_auc=auc, mmd=mmd, norm_ks=float(ks.statistic), norm_p=float(ks.pvalue),
        n_current=len(cur), n_reference=len(ref),
        mean_norm_current=float(cur_norms.mean()), mean_norm_reference=float(ref_norms.mean()),
        seconds=time.perf_counter() - started,
        model_auc_ci=_auc_interval(auc, len(ev_ref) / 2, len(ev_cur) / 2),
        mmd_ci=mmd_ci,
        norm_ks_ci=ks_ci,
    )


def _checked(side: str, vectors) -> np.ndarray:
    try:
        array = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidSample(f"{side}: vectors are not numeric ({type(exc).__name__})") from None
    if array.ndim != 2:
        raise InvalidSample(f"{side}: expected a 2-D array (rows, dimension), got {array.ndim} dimension(s)")
    if array.shape[0] < MIN_ROWS:
        raise InvalidSample(f"{side}: {array.shape[0]} rows, expected at least {MIN_ROWS}")
    if array.shape[1] < 1:
        raise InvalidSample(f"{side}: vectors have dimension 0, expected at least 1")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise InvalidSample(f"{side}: {int(bad.sum())} row(s) hold NaN or infinite values (first: row "
                            f"{int(np.argmax(bad))}), expected finite numbers")
    return array


def _rows(array: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(array) <= limit:
        return array
    return array[np.sort(rng.choice(len(array), size=limit, replace=False))]


def _frame(vectors: np.ndarray) -> pd.DataFrame:
    """Coordinates plus the L2 norm, as evidently's embedding columns (a new frame per call:
    `ModelDriftMethod` adds a column to the frames it is given)."""
    data = np.hstack([vectors, np.linalg.norm(vectors, axis=1, keepdims=True)])
    return pd.DataFrame(data, columns=_columns(vectors.shape[1]))


def _columns(dimension: int) -> list[str]:
    return [f"e{i}" for i in range(dimension)] + ["norm"]


def _methods():
    from evidently.metrics.embeddings import MMDDriftMethod, ModelDriftMethod

    # No PCA (SGD on 10,000 x 385 takes a fraction of a second) and no bootstrap verdicts: the
    # scores are judged against the deployment's thresholds, not evidently's.
    return ModelDriftMethod(threshold=MODEL_AUC_WARN), MMDDriftMethod(threshold=MMD_WARN)


def _report(cur: np.ndarray, ref: np.ndarray, model_method, mmd_method, html_path: str) -> tuple[float, float]:
    """Run evidently's `EmbeddingsDrift` with both methods, save its HTML, return (auc, mmd)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from threadpoolctl import threadpool_limits

    definition = DataDefinition(embeddings={EMBEDDING: _columns(cur.shape[1])})
    report = Report([EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=model_method),
                     EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=mmd_method)])
    # The report's t-SNE is sklearn's OpenMP Barnes-Hut: on 2 shared cores its second thread mostly
    # waits (measured 17 s with 2 threads, 6 s with 1, for 2,000 rows); one thread is faster.
    with threadpool_limits(1, user_api="openmp"):
        snapshot = report.run(Dataset.from_pandas(_frame(cur), data_definition=definition),
                              Dataset.from_pandas(_frame(ref), data_definition=definition))
    snapshot.save_html(html_path)
    values = {m["config"]["drift_method"]["type"].rsplit(":", 1)[-1]: float(m["value"])
              for m in snapshot.dict()["metrics"]}
    return values["ModelDriftMethod"], values["MMDDriftMethod"]


def _auc_interval(auc: float, n_pos: float, n_neg: float) -> tuple[float, float]:
    """Hanley-McNeil 95% interval; evidently scores on a random half of the rows, hence n / 2."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    half = 1.96 * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def _mmd_interval(mmd: float, cur: np.ndarray, ref: np.ndarray, method, rng) -> tuple[float, float]:
    """evidently's MMD on k disjoint blocks per side; their spread / sqrt(k) is the standard error
    of the full estimate under drift (conservative without drift). t interval, cut at 0."""
    k = max(2, min(MMD_BLOCKS, len(cur) // 10, len(ref) // 10))
    cur_blocks = np.array_split(rng.permutation(len(cur)), k)
    ref_blocks = np.array_split(rng.permutation(len(ref)), k)
    values = [float(method(_frame(cur[c]), _frame(ref[r]))[0]) for c, r in zip(cur_blocks, ref_blocks, strict=True)]
    half = float(stats.t.ppf(0.975, k - 1)) * float(np.std(values, ddof=1)) / math.sqrt(k)
    return max(0.0, mmd - half), mmd + half


def _ks_interval(ks: float, cur_norms: np.ndarray, ref_norms: np.ndarray, rng) -> tuple[float, float]:
    """Basic (reverse percentile) interval from a few stratified bootstrap resamples of the norms.

    Resampling adds its own sampling noise, which on average only adds distance: resampled KS
    statistics sit above the sample's, and their percentile interval would exclude a true 0.
    Reflecting them around the value corrects that bias.
    """
    values = [stats.ks_2samp(rng.choice(cur_norms, len(cur_norms)), rng.choice(ref_norms, len(ref_norms)),
                             method="asymp").statistic for _ in range(KS_RESAMPLES)]
    low, high = np.quantile(values, [0.025, 0.975])
    return max(0.0, float(2 * ks - high)), min(1.0, float(2 * ks - low))


def _bracket(value: float, ci: tuple[float, float]) -> tuple[float, float]:
    """An interval that holds the value (a bootstrap of a statistic bounded at 0 can miss it)."""
    return min(ci[0], value), max(ci[1], value)
