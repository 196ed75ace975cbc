"""Coverage: the attacker's corpus against the sample, in embedding space and in vocabulary."""

import numpy as np
import pytest

from audits.coverage import embedding_coverage, measure, nearest_similarity, vocabulary_coverage


def cloud(n: int, centre: np.ndarray, rng: np.random.Generator, spread: float = 0.3) -> np.ndarray:
    return centre + spread * rng.standard_normal((n, len(centre)))


def test_an_attacker_of_the_same_distribution_covers_about_n_over_n_plus_sample():
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(32)
    sample, same = cloud(200, centre, rng), cloud(600, centre, rng)
    share = embedding_coverage(sample, same).mean()
    assert share == pytest.approx(600 / (600 + 199), abs=0.08)
    assert embedding_coverage(sample, cloud(200, centre, rng)).mean() == pytest.approx(0.5, abs=0.1)


def test_an_attacker_of_another_domain_covers_nothing():
    rng = np.random.default_rng(1)
    sample, other = cloud(200, rng.standard_normal(32), rng), cloud(2000, rng.standard_normal(32), rng)
    assert embedding_coverage(sample, other).mean() < 0.02


def test_nearest_similarity_leaves_each_row_itself_out_across_chunks(monkeypatch):
    import audits.coverage as coverage

    monkeypatch.setattr(coverage, "_CHUNK", 7)   # self-matches fall in every chunk
    x = np.random.default_rng(2).standard_normal((30, 8))
    best = nearest_similarity(x, x, exclude_self=True)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    assert np.allclose(best, sims.max(axis=1), atol=1e-6)


def test_vocabulary_coverage_counts_words_the_attacker_holds_twice():
    attacker = ["the refund for my order", "a refund was late", "order arrived broken"]
    shares = vocabulary_coverage(["refund my order quickly", "the the the"], attacker)
    assert shares.tolist() == [pytest.approx(2 / 3)]   # refund, order twice; quickly never; stop words only: skipped


def test_measure_reports_both_with_intervals_and_vocabulary_only_with_text():
    rng = np.random.default_rng(3)
    centre = rng.standard_normal(16)
    scores = {s.metric: s for s in measure(cloud(50, centre, rng), ["refund order"] * 50, cloud(80, centre, rng),
                                           ["refund order", "refund order"])}
    assert set(scores) == {"embedding", "vocabulary"} and scores["vocabulary"].value == 1.0
    assert all(s.probe == "coverage" and s.ci_low <= s.value <= s.ci_high and s.n == 50 for s in scores.values())
    assert [s.metric for s in measure(cloud(50, centre, rng), None, cloud(80, centre, rng), [])] == ["embedding"]
