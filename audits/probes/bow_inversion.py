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

Without an oracle (`aux.embed` is None) the stacker uses the MLP and the neighbours only.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Literal

import numpy as np

from audits.errors import ProbeError
from audits.metrics import mean_with_ci, set_prf
from audits.params import Bool, Int, Real, parameters
from audits.probes.base import Auxiliary
from audits.results import Sample, Score

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def content_words(text: str, stop_words: frozenset[str]) -> set[str]:
    """The set of lower-cased content words of a text: what the attack tries to recover."""
    return {w for w in _WORD.findall(text.lower()) if w not in stop_words and len(w) > 1}


def _by_count(counts: Counter) -> list[tuple[str, int]]:
    """Words by falling count, ties alphabetically: the same order in every process (a Counter
    filled from sets keeps the sets' order, which string hashing randomises per process)."""
    return sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))


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


class BowInversion:
    """Multi-label MLP from vector to the words of the text.

    Besides token precision/recall/F1 it reports `secret_recovery` on targets with known
    secrets: the share of their secret words (names, conditions, ...) among the predicted words.
    Words found in more than `common_word_share` of the auxiliary texts ("example" of every
    email address) identify nobody and are not counted as secrets.
    """

    name = "bow_inversion"
    # metric -> (lowest, highest) value it can take; thresholds outside are refused
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        "token_precision": (0, 1), "token_recall": (0, 1), "token_f1": (0, 1), "secret_recovery": (0, 1)}
    needs = ("texts",)
    common_word_share = 0.05

    @parameters
    def __init__(self, seed: int = 0, vocab_size: Int(1, 1_000_000) = 4000, min_count: Int(1) = 2,
                 hidden: Int(1, 65_536) = 1024, epochs: Int(1, 10_000) = 30,
                 learning_rate: Real(above=0, high=10) = 1e-3, batch_size: Int(1, 1_000_000) = 128,
                 weight_decay: Real(0, 10) = 1e-5, dropout: Real(0, below=1) = 0.1,
                 noise_draws: Int(1, 1000) = 8, layers: Int(1, 2) = 1,
                 positive_weight: Literal["sqrt", "balanced", "none"] = "sqrt",
                 validation_fraction: Real(above=0, below=1) = 0.15,
                 bootstrap_resamples: Int(100, 100_000) = 2000,
                 stack: Bool = True, reembed: Bool = True, candidate_vocab: Int(0, 1_000_000) = 20000,
                 neighbours: Int(0, 10_000) = 20, candidates: Int(1, 100_000) = 50,
                 stacker_iterations: Int(1, 100_000) = 150,
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
        stop = _stop_words()
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
        vocab = [w for w, c in _by_count(train_counts)[:self.vocab_size] if c >= self.min_count]
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

        def epoch_inputs(epoch: int) -> np.ndarray:
            """Fresh transform noise for each epoch (up to `noise_draws` copies) when the pipeline
            can be called again: the attacker learns the noise instead of memorising one draw."""
            k = epoch % self.noise_draws if aux.redraw is not None else 0
            while len(draws) <= k:
                redrawn = np.asarray(aux.redraw(), dtype=np.float32)
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

    # -- the stacked attack ----------------------------------------------------------------------
    def _fit_stacker(self, aux: Auxiliary, words: list[set[str]], is_val: np.ndarray, raw: np.ndarray) -> None:
        """Candidate vocabulary, its re-embeddings, the neighbour index, and the stacker fitted on
        the validation split (whose texts neither the MLP nor the neighbour index saw)."""
        from scipy import sparse
        from sklearn.ensemble import HistGradientBoostingClassifier

        # The MLP's words first, then the rest of the training split's words by frequency. Words
        # and counts from the training split only: the validation texts, on which the stacker
        # learns, must look like unseen targets (with their words in the vocabulary and counted,
        # "a word seen once, near this vector" would give their own words away).
        train = np.flatnonzero(~is_val)
        counts = Counter(w for i in train for w in words[i])
        in_mlp = set(self.vocabulary_)
        rest = [w for w, _ in _by_count(counts) if w not in in_mlp]
        cand = list(self.vocabulary_) + rest[:max(0, self.candidate_vocab - len(self.vocabulary_))]
        index = {w: i for i, w in enumerate(cand)}
        self.candidate_words_ = cand
        self.candidate_doc_freq_ = np.log1p(np.asarray([counts[w] for w in cand], np.float32))
        self.candidate_length_ = np.asarray([len(w) for w in cand], np.float32)

        rows, cols = [], []
        for r, i in enumerate(train):
            for w in words[i]:
                if w in index:
                    rows.append(r)
                    cols.append(index[w])
        self.neighbour_words_ = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                                  shape=(len(train), len(cand)))
        self.neighbour_vectors_ = self._unit(raw[train] - self.center_).astype(np.float16)

        self.word_vectors_ = None
        if self.reembed and aux.embed is not None:
            started = time.perf_counter()
            embedded = np.concatenate([np.asarray(aux.embed(cand[i:i + 4096]), np.float32)
                                       for i in range(0, len(cand), 4096)])
            self.word_vectors_ = self._unit(embedded).astype(np.float16)
            # Hub words sit near every sentence: centre each word's cosine on the corpus.
            sample = self._unit(raw[train[:3000]])
            cos = sample @ self.word_vectors_.astype(np.float32).T
            self.word_cos_mean_ = cos.mean(0)
            self.word_cos_std_ = cos.std(0) + 1e-4
            log.info("bow_inversion: %d candidate words re-embedded in %.1f s", len(cand),
                     time.perf_counter() - started)

        val = np.flatnonzero(is_val)
        features, pairs = self._candidate_features(raw[val])
        actual = [words[i] for i in val]
        labels = np.asarray([cand[j] in actual[r] for r, j in pairs], dtype=np.int8)

        def stacker():
            return HistGradientBoostingClassifier(max_iter=self.stacker_iterations, learning_rate=0.1,
                                                  max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
                                                  early_stopping=False, random_state=self.seed)

        # Out-of-fold probabilities (two folds by text) to tune the threshold on unseen texts.
        fold = np.random.default_rng(self.seed + 1).permutation(len(val)) % 2
        oof = np.zeros(len(pairs), np.float32)
        for k in (0, 1):
            held = fold[pairs[:, 0]] == k
            if labels[~held].min(initial=1) == labels[~held].max(initial=0):
                continue
            oof[held] = stacker().fit(features[~held], labels[~held]).predict_proba(features[held])[:, 1]
        self.stacker_ = stacker().fit(features, labels) if labels.min() != labels.max() else None
        if self.stacker_ is not None:
            self.stack_threshold_ = self._tune_stack_threshold(oof, pairs, len(val), actual)

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

    def _candidate_features(self, vectors: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """For each target, its candidate words and one feature row per (target, word):
        returns (features, pairs) with pairs[:, 0] the target's row and pairs[:, 1] the word's index."""
        out_f, out_p = [], []
        n_mlp = len(self.vocabulary_)
        vocab_size = len(self.candidate_words_)
        c = min(self.candidates, vocab_size)
        for start in range(0, len(vectors), batch):
            raw = np.asarray(vectors[start:start + batch], np.float32)
            b = len(raw)
            mlp = np.zeros((b, vocab_size), np.float32)
            mlp[:, :n_mlp] = self._probabilities(raw)
            columns = {"mlp": mlp, "mlp_rel": mlp / np.maximum(mlp.max(1, keepdims=True), 1e-6)}
            chosen = np.zeros((b, vocab_size), bool)
            np.put_along_axis(chosen, np.argpartition(-mlp, c - 1, axis=1)[:, :c], True, axis=1)
            row_features = {"mlp_sum": mlp[:, :n_mlp].sum(1)}
            if self.neighbours:
                k = min(self.neighbours, self.neighbour_vectors_.shape[0])
                sims = self._unit(raw - self.center_) @ self.neighbour_vectors_.astype(np.float32).T
                top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                weights = np.take_along_axis(sims, top, axis=1).clip(min=0)
                from scipy import sparse

                w = sparse.csr_matrix((weights.ravel(), (np.repeat(np.arange(b), k), top.ravel())),
                                      shape=(b, sims.shape[1]))
                votes = np.asarray((w @ self.neighbour_words_).todense(), np.float32)
                columns["knn"] = votes / np.maximum(weights.sum(1, keepdims=True), 1e-6)
                columns["knn_top1"] = np.asarray(
                    (sparse.csr_matrix((np.ones(b, np.float32), (np.arange(b), sims.argmax(1))),
                                       shape=(b, sims.shape[1])) @ self.neighbour_words_).todense(), np.float32)
                row_features["nn_sim"] = sims.max(1)
                chosen |= columns["knn"] > 0
            if getattr(self, "word_vectors_", None) is not None:
                cos = self._unit(raw) @ self.word_vectors_.astype(np.float32).T
                z = (cos - self.word_cos_mean_) / self.word_cos_std_
                kth = -np.partition(-z, 9, axis=1)[:, 9:10]
                columns.update(cos=cos, cos_gap=cos - cos.max(1, keepdims=True), z=z, z_gap=z - kth)
                np.put_along_axis(chosen, np.argpartition(-z, c - 1, axis=1)[:, :c], True, axis=1)
                np.put_along_axis(chosen, np.argpartition(-cos, c - 1, axis=1)[:, :c], True, axis=1)
            r, j = np.nonzero(chosen)
            feats = [col[r, j] for col in columns.values()]
            if getattr(self, "word_vectors_", None) is not None:
                feats.append(self._composition(raw, r, j))
            feats += [self.candidate_doc_freq_[j], self.candidate_length_[j], (j < n_mlp).astype(np.float32)]
            feats += [v[r] for v in row_features.values()]
            out_f.append(np.stack(feats, axis=1).astype(np.float32))
            out_p.append(np.stack([r + start, j], axis=1))
        return np.concatenate(out_f), np.concatenate(out_p)

    def _composition(self, raw: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Each candidate's weight when the target vector is written as a non-negative sum of its
        candidates' word vectors: a word the others already explain gets little weight (a bag
        refinement without queries: MiniLM's mean pooling makes a sentence vector roughly such a sum)."""
        from scipy.optimize import nnls

        out = np.zeros(len(rows), np.float32)
        targets = self._unit(raw)
        starts = np.searchsorted(rows, np.arange(len(raw) + 1))  # np.nonzero's rows come sorted
        for r in range(len(raw)):
            part = slice(starts[r], starts[r + 1])
            if part.start < part.stop:
                try:
                    out[part] = nnls(self.word_vectors_[cols[part]].astype(np.float64).T, targets[r], maxiter=500)[0]
                except RuntimeError:  # too many iterations: leave this target's weights at zero
                    pass
        return out

    def _stack_sets(self, probs: np.ndarray, pairs: np.ndarray, n: int, threshold: float) -> list[set[str]]:
        out: list[set[str]] = [set() for _ in range(n)]
        cand = self.candidate_words_
        for (r, j) in pairs[probs >= threshold]:
            out[r].add(cand[j])
        return out

    def _expected_f1_sets(self, probs: np.ndarray, pairs: np.ndarray, n: int) -> list[set[str]]:
        """Per target, its k likeliest words for the k that maximises the expected F1,
        2 * sum(top-k p) / (k + sum(all p)), taking the stacker's probabilities as calibrated."""
        out: list[set[str]] = [set() for _ in range(n)]
        order = np.lexsort((-probs, pairs[:, 0]))
        rows, p, cols = pairs[order, 0], probs[order], pairs[order, 1]
        bounds = np.searchsorted(rows, np.arange(n + 1))
        cand = self.candidate_words_
        for r in range(n):
            q = p[bounds[r]:bounds[r + 1]]
            if len(q):
                best = int(np.argmax(2 * np.cumsum(q) / (np.arange(1, len(q) + 1) + q.sum()))) + 1
                out[r] = {cand[j] for j in cols[bounds[r]:bounds[r] + best]}
        return out

    def _tune_stack_threshold(self, probs, pairs, n, actual) -> float:
        best, best_f1 = 0.5, -1.0
        for threshold in np.arange(0.05, 0.91, 0.025):
            predicted = self._stack_sets(probs, pairs, n, threshold)
            f1 = np.mean([set_prf(p, a)[2] for p, a in zip(predicted, actual, strict=True) if a])
            if f1 > best_f1:
                best, best_f1 = float(threshold), f1
        return best

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
                best, best_f1 = float(threshold), f1
        return best

    # -- score -----------------------------------------------------------------------------
    def predict(self, vectors: np.ndarray) -> list[set[str]]:
        """The words the attacker believes each vector's text contains."""
        if not hasattr(self, "model_"):
            raise ProbeError("bow_inversion used before fit")
        vectors = np.asarray(vectors, np.float32)
        if getattr(self, "stacker_", None) is None:
            return self._predict_sets(self._probabilities(vectors), self.threshold_)
        if len(vectors) == 0:
            return []
        features, pairs = self._candidate_features(vectors)
        probs = self.stacker_.predict_proba(features)[:, 1]
        if self.selection == "expected_f1":
            return self._expected_f1_sets(probs, pairs, len(vectors))
        return self._stack_sets(probs, pairs, len(vectors), self.stack_threshold_)

    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "model_"):
            raise ProbeError("bow_inversion.score called before fit")
        if sample.texts is None:
            raise ProbeError(
                "bow_inversion needs the sample's texts to check what was recovered; "
                "set source.columns.text for this deployment"
            )
        stop = _stop_words()
        predicted = self.predict(sample.vectors)
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
