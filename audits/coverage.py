"""Coverage: does the attacker's corpus know the kind of text it is judged on?

A probe trained on support tickets says little about product reviews: it recovers almost
nothing, and "almost nothing" reads as "no leak". Coverage measures the gap, so that a weak
attacker is never mistaken for a private pipeline:

- `coverage.embedding`: the share of sampled vectors for which the attacker's corpus, embedded
  through the same pipeline, holds a vector at least as similar (cosine) as the sampled vector's
  nearest *other sampled* vector. An attacker drawing from the same distribution as a sample of
  n scores about N / (N + n) with N texts (0.5 at N = n, more with a larger corpus); a corpus of
  another domain scores near 0. Needs only vectors.
- `coverage.vocabulary`: per sampled text with content words, the share of them that occur at
  least twice in the attacker's corpus (the words a trained attacker can name at all); averaged
  over texts. Needs the sample's text.

Both come with 95% bootstrap intervals, like every score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from audits.metrics import mean_with_ci
from audits.results import Score

PROBE = "coverage"
METRICS: dict[str, tuple[float, float | None]] = {"embedding": (0, 1), "vocabulary": (0, 1)}
MIN_COUNT = 2
_CHUNK = 2048


def _unit(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def nearest_similarity(queries: np.ndarray, pool: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """For each query row, its highest cosine to a row of `pool` (itself excluded when pool is queries)."""
    q, p = _unit(queries), _unit(pool)
    best = np.full(len(q), -np.inf, dtype=np.float32)
    for start in range(0, len(p), _CHUNK):
        sims = q @ p[start:start + _CHUNK].T
        if exclude_self:
            rows = np.arange(len(q))
            cols = rows - start
            inside = (cols >= 0) & (cols < sims.shape[1])
            sims[rows[inside], cols[inside]] = -np.inf
        best = np.maximum(best, sims.max(axis=1))
    return best


def embedding_coverage(sample_vectors: np.ndarray, attacker_vectors: np.ndarray) -> np.ndarray:
    """Per sampled vector, 1.0 when the attacker holds a vector at least as close as its nearest sampled one."""
    if len(sample_vectors) < 2 or len(attacker_vectors) == 0:
        raise ValueError("coverage needs at least 2 sampled vectors and 1 attacker vector")
    to_attacker = nearest_similarity(sample_vectors, attacker_vectors)
    to_sample = nearest_similarity(sample_vectors, sample_vectors, exclude_self=True)
    return (to_attacker >= to_sample).astype(np.float64)


def vocabulary_coverage(sample_texts: Sequence[str], attacker_texts: Sequence[str]) -> np.ndarray:
    """Per sampled text that has content words, the share of them the attacker's corpus holds twice or more."""
    from audits.probes.words import content_words, stop_words

    stop = stop_words()
    counts = Counter(w for text in attacker_texts for w in content_words(text, stop))
    known = {w for w, c in counts.items() if c >= MIN_COUNT}
    shares = []
    for text in sample_texts:
        words = content_words(text, stop)
        if words:
            shares.append(len(words & known) / len(words))
    return np.asarray(shares, dtype=np.float64)


def measure(sample_vectors: np.ndarray, sample_texts: Sequence[str] | None, attacker_vectors: np.ndarray,
            attacker_texts: Sequence[str], seed: int = 0, n_resamples: int = 1000) -> list[Score]:
    """The coverage scores of one sample against one attacker corpus (vectors through the same pipeline)."""
    columns = {"embedding": embedding_coverage(sample_vectors, attacker_vectors)}
    if sample_texts is not None:
        shares = vocabulary_coverage(sample_texts, attacker_texts)
        if len(shares):
            columns["vocabulary"] = shares
    scores = []
    for offset, (metric, values) in enumerate(columns.items()):
        value, low, high = mean_with_ci(values, seed=seed + offset, n_resamples=n_resamples)
        scores.append(Score(PROBE, metric, value, low, high, len(values)))
    return scores
