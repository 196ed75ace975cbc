"""Bag-of-words inversion (Song & Raghunathan, CCS 2020).

An MLP learns, from the auxiliary corpus embedded through the deployment's own pipeline, to
predict which words a text contains from its vector alone. Scored on the sample, it reports how
many of the text's content words an attacker who holds only the vectors recovers.
Stop words are excluded on both sides: recovering "the" is no leak.

On real, non-templated prose an MLP over the corpus' frequent words alone recovers little (token F1
~0.25 with 5.5k attacker sentences), so the attack adds what an attacker who can query the
deployed pipeline also has (`stack=True`, the default):

- re-embedding: every word of a large candidate vocabulary (the auxiliary corpus' words, public
  text) is embedded alone through the pipeline once, at fit; a target's candidates are scored by
  the cosine between its vector and each word's vector, raw, centred per word (hub words are
  near every vector) and ranked per target;
- neighbours: the words of the target's nearest auxiliary texts, weighted by similarity;
- a stacker (gradient-boosted trees on these features and the MLP's probability, fitted on the
  attacker's held-out validation split) turns them into one probability per (target, word), and
  a threshold tuned on out-of-fold validation predictions picks the words.

Without an oracle (`aux.embed` is None) the stacker uses the MLP and the neighbours only. The MLP
is here; the stacked half is audits.probes.bow_stacking, a mixin of the probe.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, ClassVar, Literal

import numpy as np

from audits.errors import ProbeError
from audits.metrics import mean_with_ci, set_prf
from audits.params import Bool, Int, Real, parameters
from audits.probes.base import Auxiliary
from audits.probes.bow_stacking import StackedWords
from audits.probes.words import by_count, content_words, stop_words
from audits.results import Sample, Score

log = logging.getLogger(__name__)

_stop_words = stop_words  # its name here before audits.probes.words held it (benchmarks/ import it so)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero while training: weights decaying towards zero otherwise
    become denormals, which the CPU handles in microcode (measured: a 3,000-text fit 63 s -> 28 s)."""
    import torch

    supported = torch.set_flush_denormal(True)  # returns whether the CPU supports it, not the old state
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


class BowInversion(StackedWords):
    """Multi-label MLP from vector to the words of the text.

    Besides token precision/recall/F1 it reports `secret_recovery` on targets with known
    secrets: the share of their secret words (names, conditions, ...) among the predicted words.
    Words found in more than `common_word_share` of the auxiliary texts ("example" of every
    email address) identify nobody and are not counted as secrets.
    """

    name: ClassVar[str] = "bow_inversion"
    # metric -> (lowest, highest) value it can take; thresholds outside are refused
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        "token_precision": (0, 1), "token_recall": (0, 1), "token_f1": (0, 1), "secret_recovery": (0, 1)}
    needs = ("texts",)
    common_word_share = 0.05

    @parameters
    def __init__(self, seed: int = 0, vocab_size: Annotated[int, Int(1, 1_000_000)] = 4000,
                 min_count: Annotated[int, Int(1)] = 2, hidden: Annotated[int, Int(1, 65_536)] = 1024,
                 epochs: Annotated[int, Int(1, 10_000)] = 30,
                 learning_rate: Annotated[float, Real(above=0, high=10)] = 1e-3,
                 batch_size: Annotated[int, Int(1, 1_000_000)] = 128,
                 weight_decay: Annotated[float, Real(0, 10)] = 1e-5, dropout: Annotated[float, Real(0, below=1)] = 0.1,
                 noise_draws: Annotated[int, Int(1, 1000)] = 8, layers: Annotated[int, Int(1, 2)] = 1,
                 positive_weight: Literal["sqrt", "balanced", "none"] = "sqrt",
                 validation_fraction: Annotated[float, Real(above=0, below=1)] = 0.15,
                 bootstrap_resamples: Annotated[int, Int(100, 100_000)] = 2000,
                 stack: Bool = True, reembed: Bool = True, candidate_vocab: Annotated[int, Int(0, 1_000_000)] = 20000,
                 neighbours: Annotated[int, Int(0, 10_000)] = 20, candidates: Annotated[int, Int(1, 100_000)] = 50,
                 stacker_iterations: Annotated[int, Int(1, 100_000)] = 150,
                 selection: Literal["expected_f1", "threshold"] = "expected_f1") -> None:
        self.seed = seed
        self.vocab_size = vocab_size
        self.min_count = min_count
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.noise_draws = noise_draws
        self.selection = selection
        self.layers = layers
        self.positive_weight = positive_weight
        self.validation_fraction = validation_fraction
        self.bootstrap_resamples = bootstrap_resamples
        # The stacked attack (module docstring): re-embedding scores, neighbours, MLP -> one probability.
        self.stack = bool(stack)
        self.reembed = bool(reembed)
        self.candidate_vocab = candidate_vocab
        self.neighbours = neighbours
        self.candidates = candidates
        self.stacker_iterations = stacker_iterations

    # -- fit -------------------------------------------------------------------------------
    def fit(self, aux: Auxiliary) -> BowInversion:
        import torch

        texts, vectors = aux.texts, np.asarray(aux.vectors, dtype=np.float32)
        if len(texts) < 20:
            raise ProbeError(f"bow_inversion.fit: auxiliary corpus has {len(texts)} texts, expected >= 20")
        stop = stop_words()
        words = [content_words(t, stop) for t in texts]

        counts = Counter(w for ws in words for w in ws)
        self.common_words_ = frozenset(w for w, c in counts.items() if c > self.common_word_share * len(texts))

        rng = np.random.default_rng(self.seed)
        n_val = max(1, int(len(texts) * self.validation_fraction))
        is_val = np.zeros(len(texts), dtype=bool)
        is_val[rng.permutation(len(texts))[:n_val]] = True
        # The vocabulary from the training split: a word seen once there and once in a validation
        # text would otherwise be "in the vocabulary" mostly because that text holds it.
        train_counts = Counter(w for ws, v in zip(words, is_val, strict=True) if not v for w in ws)
        vocab = [w for w, c in by_count(train_counts)[:self.vocab_size] if c >= self.min_count]
        if not vocab:
            raise ProbeError("bow_inversion.fit: no word occurs twice in the auxiliary corpus")
        index = {w: i for i, w in enumerate(vocab)}
        targets = np.zeros((len(texts), len(vocab)), dtype=np.float32)
        for row, ws in enumerate(words):
            for w in ws:
                if w in index:
                    targets[row, index[w]] = 1.0

        # Centre each coordinate and scale all by one factor: what tells texts of one template
        # apart (a name, a condition) is a small deviation from the corpus' mean direction, and
        # unit scale is where the network learns fastest (token F1 0.68 -> 0.71 on 8.5k texts).
        # One factor, not one per coordinate: MiniLM has a constant coordinate, and dividing by
        # its zero spread would blow any noise on it up to swamp everything else.
        self.center_ = vectors[~is_val].mean(0)
        self.scale_ = float((vectors[~is_val] - self.center_).std()) or 1.0
        vectors = (vectors - self.center_) / self.scale_
        draws = [vectors[~is_val]]
        redraw = aux.redraw

        def epoch_inputs(epoch: int) -> np.ndarray:
            """Fresh transform noise for each epoch (up to `noise_draws` copies) when the pipeline
            can be called again: the attacker learns the noise instead of memorising one draw."""
            if redraw is None:
                return draws[0]
            k = epoch % self.noise_draws
            while len(draws) <= k:
                redrawn = np.asarray(redraw(), dtype=np.float32)
                draws.append(((redrawn - self.center_) / self.scale_)[~is_val])
            return draws[k]

        started = time.perf_counter()
        torch.manual_seed(self.seed)
        dim = vectors.shape[1]
        blocks = []
        for i in range(self.layers):
            blocks += [torch.nn.Linear(dim if i == 0 else self.hidden, self.hidden), torch.nn.ReLU(),
                       torch.nn.Dropout(self.dropout)]
        model = torch.nn.Sequential(*blocks, torch.nn.Linear(self.hidden, len(vocab)))
        with flush_denormals():
            self._train(model, epoch_inputs, targets[~is_val])

        self.vocabulary_ = vocab
        self.model_ = model
        self.stacker_ = None
        val_probs = self._probabilities(vectors[is_val], standardized=True)
        val_words = [words[i] for i in np.flatnonzero(is_val)]
        self.threshold_ = self._tune_threshold(val_probs, val_words)
        log.info("bow_inversion: MLP trained in %.1f s", time.perf_counter() - started)
        if self.stack:
            started = time.perf_counter()
            self._fit_stacker(aux, words, is_val, np.asarray(aux.vectors, dtype=np.float32))
            log.info("bow_inversion: stacker fitted in %.1f s", time.perf_counter() - started)
        log.info("bow_inversion fitted: %d texts, vocabulary %d, threshold %.2f%s",
                 len(texts), len(vocab), self.threshold_,
                 f", stacked over {len(self.candidate_words_)} candidate words" if self.stacker_ is not None else "")
        return self

    def _train(self, model, epoch_inputs, y: np.ndarray) -> None:
        import torch

        yt = torch.from_numpy(y)
        # Positive words are rare per text; weighting them keeps the MLP from predicting nothing.
        pos = yt.mean(0).clamp(min=1e-4)
        balanced = (1 - pos) / pos
        weight = {"sqrt": balanced.sqrt(), "balanced": balanced, "none": torch.ones_like(pos)}[self.positive_weight]
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
        opt = torch.optim.AdamW(model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        model.train()
        for epoch in range(self.epochs):
            xt = torch.from_numpy(epoch_inputs(epoch))
            perm = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), self.batch_size):
                idx = perm[start : start + self.batch_size]
                opt.zero_grad()
                loss_fn(model(xt[idx]), yt[idx]).backward()
                opt.step()
        model.eval()

    def _probabilities(self, vectors: np.ndarray, standardized: bool = False) -> np.ndarray:
        import torch

        x = np.asarray(vectors, np.float32)
        if not standardized:
            x = ((x - self.center_) / self.scale_).astype(np.float32)
        with torch.inference_mode(), flush_denormals():
            return torch.sigmoid(self.model_(torch.from_numpy(x))).numpy()

    def _predict_sets(self, probs: np.ndarray, threshold: float) -> list[set[str]]:
        vocab = self.vocabulary_
        return [{vocab[j] for j in np.flatnonzero(row >= threshold)} for row in probs]

    def _tune_threshold(self, probs: np.ndarray, actual: list[set[str]]) -> float:
        best, best_f1 = 0.5, -1.0
        for threshold in np.arange(0.05, 0.96, 0.05):
            predicted = self._predict_sets(probs, threshold)
            f1 = np.mean([set_prf(p, a)[2] for p, a in zip(predicted, actual, strict=True) if a])
            if f1 > best_f1:
                best, best_f1 = float(threshold), float(f1)
        return best

    # -- score -----------------------------------------------------------------------------
    def predict(self, vectors: np.ndarray) -> list[set[str]]:
        """The words the attacker believes each vector's text contains."""
        if not hasattr(self, "model_"):
            raise ProbeError("bow_inversion used before fit")
        vectors = np.asarray(vectors, np.float32)
        if getattr(self, "stacker_", None) is None:
            return self._predict_sets(self._probabilities(vectors), self.threshold_)
        return self._predict_stacked(vectors)

    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "model_"):
            raise ProbeError("bow_inversion.score called before fit")
        if sample.texts is None:
            raise ProbeError(
                "bow_inversion needs the sample's texts to check what was recovered; "
                "set source.columns.text for this deployment"
            )
        return self.score_predicted(sample, self.predict(sample.vectors))

    def score_predicted(self, sample: Sample, predicted: list[set[str]]) -> list[Score]:
        """Scores of words already predicted for `sample` (one set per row): segments of a sample
        reuse the whole sample's predictions (audits.audit.segment_scores)."""
        if sample.texts is None:
            raise ProbeError("bow_inversion needs the sample's texts to check what was recovered")
        stop = stop_words()
        rows, recovered = [], []
        for i, (pred, text) in enumerate(zip(predicted, sample.texts, strict=True)):
            actual = content_words(text, stop)
            if actual:
                rows.append(set_prf(pred, actual))
            if sample.secrets is not None:
                secret = {w for value in sample.secrets[i].values() for w in content_words(value, stop)}
                secret -= self.common_words_
                if secret:
                    recovered.append(len(secret & pred) / len(secret))
        if not rows:
            raise ProbeError("bow_inversion: no text in the sample has a content word to recover")
        per_text = np.asarray(rows)
        columns = {"token_precision": per_text[:, 0], "token_recall": per_text[:, 1], "token_f1": per_text[:, 2]}
        if recovered:
            columns["secret_recovery"] = np.asarray(recovered)
        scores = []
        for offset, (metric, values) in enumerate(columns.items()):
            value, low, high = mean_with_ci(values, seed=self.seed + offset, n_resamples=self.bootstrap_resamples)
            scores.append(Score(self.name, metric, value, low, high, len(values)))
        return scores
