"""Drift computation on real all-MiniLM-L6-v2 vectors of synthetic messages, with real evidently.

The scenario is the one drift monitoring is for: the reference was stored through Gaussian noise
(sigma 0.05 per coordinate) and production silently stopped adding it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from audits.errors import InvalidSample
from monitors.drift import DRIFT_METRICS, DriftResult, compute
from tests.helpers import messages

SIGMA = 0.05
PER_SIDE = 400
WARN = {"model_auc": 0.65, "mmd": 0.01, "norm_ks": 0.2}  # the module's suggested warn levels


@pytest.fixture(scope="module")
def clean(encoder) -> np.ndarray:
    """Unit vectors of 2 x PER_SIDE messages drawn from the same generator."""
    return encoder.encode(messages(2 * PER_SIDE, seed=31))


def noisy(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return vectors + rng.standard_normal(vectors.shape).astype(np.float32) * np.float32(SIGMA)


def windows(clean: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, current with the transform dropped, current unchanged): disjoint rows, fresh noise."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(clean))
    ref_rows, cur_rows = rows[:PER_SIDE], rows[PER_SIDE:]
    return noisy(clean[ref_rows], rng), clean[cur_rows], noisy(clean[cur_rows], rng)


def alarms(result: DriftResult) -> list[str]:
    return [s.metric for s in result.scores() if s.value >= WARN[s.metric]]


def test_dropped_transform_is_detected_and_unchanged_windows_are_not(clean, record_property):
    drops, sames = [], []
    for seed in range(5):
        reference, dropped, unchanged = windows(clean, seed)
        drop, same = compute(dropped, reference, seed=seed), compute(unchanged, reference, seed=seed)
        drops.append(drop)
        sames.append(same)
        line = (f"seed {seed}: drop auc={drop.model_auc:.3f} mmd={drop.mmd:.4f} ks={drop.norm_ks:.3f} | "
                f"same auc={same.model_auc:.3f} mmd={same.mmd:.4f} ks={same.norm_ks:.3f} p={same.norm_p:.2f}")
        print(line)
        record_property(f"drift_seed_{seed}", line)
        assert alarms(drop) == ["model_auc", "mmd", "norm_ks"], line
        assert drop.model_auc > same.model_auc + 0.3 and drop.norm_ks > same.norm_ks + 0.5, line
        assert drop.mean_norm_current == pytest.approx(1.0, abs=1e-3)
        assert drop.mean_norm_reference == pytest.approx(np.sqrt(1 + clean.shape[1] * SIGMA**2), abs=0.02)
    false_alarms = [alarms(s) for s in sames]
    assert sum(bool(a) for a in false_alarms) <= 1, false_alarms
    assert all(0.35 < s.model_auc < 0.65 for s in sames)


def test_scores_carry_intervals_and_the_current_size(clean):
    reference, dropped, unchanged = windows(clean, 0)
    for result in (compute(dropped, reference), compute(unchanged, reference)):
        scores = result.scores()
        assert [s.key for s in scores] == list(DRIFT_METRICS)
        for score in scores:
            low, high = DRIFT_METRICS[score.key]
            assert score.probe == "drift" and score.n == result.n_current == PER_SIDE
            assert low <= score.ci_low <= score.value <= score.ci_high and (high is None or score.ci_high <= high)
    same = compute(unchanged, reference).scores()
    assert same[0].ci_low < 0.5 < same[0].ci_high  # no drift: 0.5 is inside the AUC's interval


def test_deterministic_for_a_seed_and_max_rows_subsamples(clean):
    reference, _, unchanged = windows(clean, 1)
    first, again = compute(unchanged, reference, seed=3), compute(unchanged, reference, seed=3)
    assert dataclasses.replace(first, seconds=0) == dataclasses.replace(again, seconds=0)
    cut = compute(unchanged, reference, seed=3, max_rows=100)
    assert (cut.n_current, cut.n_reference) == (100, 100)
    assert cut.scores()[0].n == 100


def test_html_report_is_evidently_s_with_the_same_scores(clean, tmp_path):
    reference, dropped, _ = windows(clean, 2)
    reference, dropped = reference[:120], dropped[:120]  # keeps evidently's t-SNE cheap
    path = tmp_path / "drift.html"
    with_html = compute(dropped, reference, seed=5, html_path=str(path))
    text = path.read_text(encoding="utf-8")
    assert len(text) > 10_000 and "<html" in text.lower() and "Drift in embeddings" in text
    without = compute(dropped, reference, seed=5)
    assert (with_html.model_auc, with_html.mmd) == pytest.approx((without.model_auc, without.mmd), abs=1e-12)


@pytest.mark.parametrize(("side", "change", "expected"), [
    ("current", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a), "NaN"),
    ("reference", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.inf, a), "NaN or infinite"),
    ("current", lambda a: a[:, :100], "dimension 100"),
    ("reference", lambda a: a[:5], "5 rows, expected at least 20"),
    ("current", lambda a: a[0], "2-D"),
    ("reference", lambda a: np.array([["x"] * a.shape[1]] * 30), "not numeric"),
])
def test_bad_input_names_the_side(side, change, expected):
    rng = np.random.default_rng(0)
    good = rng.standard_normal((40, 384)).astype(np.float32)
    current, reference = (change(good), good) if side == "current" else (good, change(good))
    with pytest.raises(InvalidSample, match=expected) as info:
        compute(current, reference)
    assert str(info.value).startswith(f"{side}:")


def test_bad_limits_are_refused():
    vectors = np.random.default_rng(0).standard_normal((40, 8))
    with pytest.raises(ValueError, match="max_rows"):
        compute(vectors, vectors, max_rows=5)
