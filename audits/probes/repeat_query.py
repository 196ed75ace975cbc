"""Repeated queries: average k noisy embeddings of the same text, and watch the noise cancel.

A randomised transform draws fresh noise on every call. An attacker who can have the same text
embedded again and again (an API that answers every query, a document re-indexed on every edit,
a user who sends the same message twice) sees k vectors x + z_1, ..., x + z_k of one clean vector
x, with independent z_i ~ N(0, s^2 I). Their mean is x + N(0, s^2 / k I): the noise's standard
deviation falls as 1 / sqrt(k), so 64 queries leave an eighth of it. For Gaussian noise the mean is
also the best estimate of x there is (it is a sufficient statistic for x, and the maximum-
likelihood estimate), so averaging is the attack, not one of many. ClipGaussian clips before it
adds Gaussian noise, so the same holds around the clipped vector. Von Mises-Fisher draws average
to a vector that points the way x does, shrunk by a fixed factor (which the per-k model below
learns), with a spread that falls the same 1 / k way.

This is the threat a per-query differential-privacy guarantee does not cover on its own: k
answers about one text compose to a much weaker one (`Guarantee.composed`). The probe measures what
that looks like to an attacker. Each target text is sent through the live pipeline
(`Auxiliary.embed`, fresh transform noise per call) `max_queries` times; the draws nest: the
k-query estimate is the mean of the first k of the same draws, so the series over
k = 1, 2, 4, ..., max_queries is one attacker asking more and more often, not independent
experiments. Each mean is scored by a noise-aware `bow_inversion` trained for its noise level:
one model per k, fitted on the auxiliary corpus averaged over k fresh transforms (see `fit`; a
single model trained on one query's noise gets worse, not better, on the means).

Metrics: `token_f1_k{k}` for every power of two k up to `max_queries` (bow_inversion's token F1
and its bootstrap interval over targets), `secret_recovery_k{k}` where the targets carry secrets
(canaries), and `f1_gain`: token F1 at `max_queries` minus at k = 1, with a paired bootstrap
interval over targets (the mean of per-target differences: both values come from the same texts,
so the paired interval is far tighter than the difference of the two intervals' bounds).

For a deterministic pipeline (transform none, quantize, random_projection) every query returns
the same vector: one model serves every k, every k scores the same and the gain is exactly 0.
Repeating queries buys nothing there, and the probe says so. The target vectors in the sample are
not used, only their texts: every draw comes fresh from the live pipeline, which must therefore
be reachable.

Cost. Fit: one bow_inversion per k (7 for max_queries 64; one for a deterministic pipeline), and
one more encoding of the auxiliary corpus (its clean vectors, then `Auxiliary.release` adds the
transform's noise as often as the averages need); the cached model is as large as 7 bow models.
Score: `max_targets` (a seeded subsample) x `max_queries` texts through the pipeline. The local
encoder encodes identical texts once per call, so repeats cost the transform only; an HTTP
encoder sends every repeat (its API may add noise itself, which is what is audited). Memory stays
at max_queries x chunk x dimension floats per call (the targets go in chunks).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar

import numpy as np

from audits.errors import ProbeError
from audits.metrics import mean_with_ci, set_prf
from audits.params import Int, parameters
from audits.probes.base import Auxiliary, Embed
from audits.probes.bow_inversion import BowInversion
from audits.probes.words import content_words, stop_words
from audits.results import Sample, Score

log = logging.getLogger(__name__)

MAX_QUERIES = 64
QUERY_COUNTS = tuple(2**i for i in range(MAX_QUERIES.bit_length()))  # 1, 2, 4, ..., 64
# Floats drawn per oracle call at most (64 MiB of float32): the targets are sent in chunks.
_CHUNK_FLOATS = 16 * 2**20


class RepeatQuery:
    """bow_inversion on the mean of k fresh pipeline embeddings of each target, k = 1 .. max_queries.

    Parameters besides `max_queries` and `max_targets` go to the inner bow_inversion unchanged
    (`epochs`, `hidden`, `noise_draws`, ...).
    """

    name: ClassVar[str] = "repeat_query"
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        **{f"token_f1_k{k}": (0, 1) for k in QUERY_COUNTS},
        **{f"secret_recovery_k{k}": (0, 1) for k in QUERY_COUNTS},
        "f1_gain": (-1, 1),
    }
    needs = ("texts",)
    # The live pipeline is not state: the model cache strips it and `attach` puts it back.
    live_attributes: ClassVar[tuple[str, ...]] = ("embed_",)

    @parameters
    def __init__(self, seed: int = 0, max_queries: Annotated[int, Int(1, MAX_QUERIES)] = MAX_QUERIES,
                 max_targets: Annotated[int, Int(1, 100_000)] = 500, **bow_params: Any) -> None:
        if max_queries not in QUERY_COUNTS:
            raise ValueError(f"max_queries: expected a power of two from 1 to {MAX_QUERIES}, found {max_queries}")
        BowInversion(seed=seed, **bow_params)  # its own checks, reported under repeat_query's name
        self.seed = seed
        self.max_queries = max_queries
        self.max_targets = max_targets
        self.bow_params = dict(bow_params)
        self.embed_: Embed | None = None

    @property
    def query_counts(self) -> tuple[int, ...]:
        return tuple(k for k in QUERY_COUNTS if k <= self.max_queries)

    # -- fit -------------------------------------------------------------------------------
    def fit(self, aux: Auxiliary) -> RepeatQuery:
        """One bow_inversion per k, each trained on auxiliary vectors with the noise of a k-query mean.

        A model trained on single-query noise does worse, not better, on means of many queries
        (its words' probabilities and its threshold are tuned to the noisy inputs it saw;
        measured, sigma 0.2: token F1 0.28 at k = 1 falling to 0.05 at k = 64). An attacker who
        averages k answers trains for the noise it will see: the mean of k fresh transforms of
        the auxiliary corpus. Where the attacker sees no noise (a naive attacker, or a
        deterministic pipeline) one model serves every k.
        """
        draw = self._noise_source(aux)
        if draw is None:
            model = BowInversion(seed=self.seed, **self.bow_params).fit(aux)
            self.models_ = dict.fromkeys(self.query_counts, model)
        else:
            self.models_ = {}
            for k in self.query_counts:
                def averaged(k: int = k) -> np.ndarray:
                    total = np.zeros(np.shape(aux.vectors), dtype=np.float64)
                    for _ in range(k):
                        total += draw()
                    return (total / k).astype(np.float32)

                at_k = aux if k == 1 else Auxiliary(aux.texts, averaged(), labels=aux.labels, secrets=aux.secrets,
                                                    redraw=averaged)
                self.models_[k] = BowInversion(seed=self.seed, **self.bow_params).fit(at_k)
                log.info("repeat_query: model for k=%d fitted", k)
        self.attach(aux)
        return self

    @staticmethod
    def _noise_source(aux: Auxiliary):
        """A function returning the auxiliary corpus through the pipeline with fresh noise, or None
        where the attacker trains on fixed vectors (no redraw, or every draw the same)."""
        redraw, release = aux.redraw, aux.release
        if redraw is None:
            return None
        if aux.encode is not None and release is not None:
            clean = np.asarray(aux.encode(list(aux.texts)), dtype=np.float32)  # encode once, transform often

            def draw() -> np.ndarray:
                return np.asarray(release(clean), dtype=np.float64)
        else:
            def draw() -> np.ndarray:
                return np.asarray(redraw(), dtype=np.float64)
        first = draw()
        if first.shape != np.shape(aux.vectors):
            raise ProbeError(f"repeat_query.fit: the pipeline's redraw has shape {first.shape}, "
                             f"the auxiliary vectors {np.shape(aux.vectors)}")
        return None if np.array_equal(first, draw()) else draw

    def attach(self, oracles: Auxiliary) -> None:
        """Re-connect the live pipeline (after loading from the model cache)."""
        self.embed_ = oracles.embed

    # -- score -----------------------------------------------------------------------------
    def averaged(self, texts: list[str]) -> dict[int, np.ndarray]:
        """k -> the mean of the first k of `max_queries` fresh pipeline embeddings of each text."""
        if self.embed_ is None:
            raise ProbeError("repeat_query needs the live pipeline to query it repeatedly; none is attached")
        draws, dimension = self.max_queries, len(self.models_[1].center_)
        chunk = max(1, _CHUNK_FLOATS // (draws * dimension))
        means: dict[int, list[np.ndarray]] = {k: [] for k in self.query_counts}
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            out = np.asarray(self.embed_(part * draws))  # row j * len(part) + i: draw j of text i
            if out.shape != (draws * len(part), dimension):
                raise ProbeError(f"repeat_query: the pipeline returned {out.shape} for {draws * len(part)} texts, "
                                 f"expected dimension {dimension} as in the auxiliary corpus")
            # float64 sums of float32 draws: k equal draws average back to exactly the same vector
            running = np.cumsum(out.reshape(draws, len(part), dimension), axis=0, dtype=np.float64)
            for k in means:
                means[k].append((running[k - 1] / k).astype(np.float32))
        return {k: np.concatenate(parts) for k, parts in means.items()}

    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "models_"):
            raise ProbeError("repeat_query.score called before fit")
        if sample.texts is None:
            raise ProbeError("repeat_query needs the sample's texts to query the pipeline with them; "
                             "set source.columns.text for this deployment, or configure canaries")
        if len(sample) == 0:
            raise ProbeError("repeat_query: the sample has no rows")
        rows = np.arange(len(sample))
        if len(sample) > self.max_targets:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(sample), self.max_targets, replace=False))
        texts = [sample.texts[i] for i in rows]
        secrets = None if sample.secrets is None else tuple(sample.secrets[i] for i in rows)
        means = self.averaged(texts)
        if all(np.array_equal(means[k], means[1]) for k in means):
            log.info("repeat_query: every query returned the same vectors (a deterministic pipeline)")

        scores = []
        for k, vectors in means.items():
            at_k = Sample(tuple(f"{i}" for i in rows), vectors, tuple(texts), sample.version, secrets=secrets)
            for score in self.models_[k].score(at_k):
                if score.metric in ("token_f1", "secret_recovery"):
                    scores.append(Score(self.name, f"{score.metric}_k{k}", score.value, score.ci_low,
                                        score.ci_high, score.n))
        scores.append(self._gain(texts, means[1], means[self.max_queries]))
        return scores

    def _gain(self, texts: list[str], first: np.ndarray, last: np.ndarray) -> Score:
        """Token F1 at max_queries minus at k = 1, per target, with a paired bootstrap interval."""
        stop = stop_words()
        differences = []
        once_words, often_words = self.models_[1].predict(first), self.models_[self.max_queries].predict(last)
        for text, once, often in zip(texts, once_words, often_words, strict=True):
            actual = content_words(text, stop)
            if actual:  # the targets bow_inversion scores
                differences.append(set_prf(often, actual)[2] - set_prf(once, actual)[2])
        value, low, high = mean_with_ci(np.asarray(differences), seed=self.seed + 7,
                                        n_resamples=self.models_[1].bootstrap_resamples)
        return Score(self.name, "f1_gain", value, low, high, len(differences))
