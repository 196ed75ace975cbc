"""The stacked half of bag-of-words inversion (audits.probes.bow_inversion, whose docstring describes
the attack): a candidate vocabulary re-embedded through the pipeline, the words of the nearest
auxiliary texts, and a stacker (gradient-boosted trees) that turns these and the MLP's probability
into one probability per (target, word).

A mixin of BowInversion, not a probe: it reads the probe's parameters and its MLP, and keeps its
fitted state on the probe, so that a fitted probe pickles (the model cache) as one object.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from audits.metrics import set_prf
from audits.probes.base import Auxiliary
from audits.probes.words import by_count

log = logging.getLogger(__name__)


class StackedWords:
    """Fit (`_fit_stacker`) and predict (`_predict_stacked`) of the stacked attack; BowInversion
    provides the parameters and the MLP declared here."""

    # The host probe's parameters and fitted MLP.
    seed: int
    candidate_vocab: int
    candidates: int
    neighbours: int
    reembed: bool
    stacker_iterations: int
    selection: str
    vocabulary_: list[str]
    center_: np.ndarray
    # Fitted here.
    stacker_: Any
    stack_threshold_: float
    candidate_words_: list[str]
    candidate_doc_freq_: np.ndarray
    candidate_length_: np.ndarray
    neighbour_words_: Any  # scipy.sparse.csr_matrix
    neighbour_vectors_: np.ndarray
    word_vectors_: np.ndarray | None
    word_cos_mean_: np.ndarray
    word_cos_std_: np.ndarray

    if TYPE_CHECKING:
        def _probabilities(self, vectors: np.ndarray, standardized: bool = False) -> np.ndarray: ...

    def _predict_stacked(self, vectors: np.ndarray) -> list[set[str]]:
        """The words of each target by the stacker's probabilities (`selection`)."""
        if len(vectors) == 0:
            return []
        # The stacker's trees run without the GIL: one batch is scored on a second thread while the
        # next batch's features (NNLS, which holds the GIL) are computed.
        with ThreadPoolExecutor(1) as pool:
            parts = [(pairs, pool.submit(self.stacker_.predict_proba, features))
                     for features, pairs in self._feature_batches(vectors)]
            pairs = np.concatenate([p for p, _ in parts])
            probs = np.concatenate([f.result()[:, 1] for _, f in parts])
        if self.selection == "expected_f1":
            return self._expected_f1_sets(probs, pairs, len(vectors))
        return self._stack_sets(probs, pairs, len(vectors), self.stack_threshold_)

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
        rest = [w for w, _ in by_count(counts) if w not in in_mlp]
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

    def _candidate_features(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each target, its candidate words and one feature row per (target, word):
        returns (features, pairs) with pairs[:, 0] the target's row and pairs[:, 1] the word's index."""
        parts = list(self._feature_batches(vectors))
        return np.concatenate([f for f, _ in parts]), np.concatenate([p for _, p in parts])

    def _feature_batches(self, vectors: np.ndarray, batch: int = 512):
        """(features, pairs) of `_candidate_features`, one batch of targets at a time. Features of
        a (target, word) are gathered from per-row quantities, never a whole targets x words matrix
        more than the candidates' choice needs."""
        from scipy import sparse

        n_mlp = len(self.vocabulary_)
        word_vectors = getattr(self, "word_vectors_", None)  # None without an oracle (or pickled before it)
        if word_vectors is not None:
            word_vectors32 = word_vectors.astype(np.float32)
            word_columns = np.ascontiguousarray(word_vectors.T, dtype=np.float64)   # NNLS's type and order
        neighbour_vectors = self.neighbour_vectors_.astype(np.float32) if self.neighbours else None
        vocab_size = len(self.candidate_words_)
        c = min(self.candidates, vocab_size)
        for start in range(0, len(vectors), batch):
            raw = np.asarray(vectors[start:start + batch], np.float32)
            b = len(raw)
            mlp = np.zeros((b, vocab_size), np.float32)
            mlp[:, :n_mlp] = self._probabilities(raw)
            chosen = np.zeros((b, vocab_size), bool)
            np.put_along_axis(chosen, _top(mlp, c), True, axis=1)
            row_features = {"mlp_sum": mlp[:, :n_mlp].sum(1)}
            if neighbour_vectors is not None:
                k = min(self.neighbours, neighbour_vectors.shape[0])
                sims = self._unit(raw - self.center_) @ neighbour_vectors.T
                top = _top(sims, k)
                weights = np.take_along_axis(sims, top, axis=1).clip(min=0)
                w = sparse.csr_matrix((weights.ravel(), (np.repeat(np.arange(b), k), top.ravel())),
                                      shape=(b, sims.shape[1]))
                votes = np.asarray((w @ self.neighbour_words_).todense(), np.float32)
                knn = votes / np.maximum(weights.sum(1, keepdims=True), 1e-6)
                nearest = sparse.csr_matrix((np.ones(b, np.float32), (np.arange(b), sims.argmax(1))),
                                            shape=(b, sims.shape[1])) @ self.neighbour_words_
                row_features["nn_sim"] = sims.max(1)
                chosen |= knn > 0
            if word_vectors is not None:
                cos = self._unit(raw) @ word_vectors32.T
                z = (cos - self.word_cos_mean_) / self.word_cos_std_
                kth = _top(z, 10, values=True)[:, 9]
                np.put_along_axis(chosen, _top(z, c), True, axis=1)
                np.put_along_axis(chosen, _top(cos, c), True, axis=1)
            r, j = np.nonzero(chosen)
            mlp_rj = mlp[r, j]
            feats = [mlp_rj, mlp_rj / np.maximum(mlp.max(1), 1e-6)[r]]
            if neighbour_vectors is not None:
                feats += [knn[r, j], np.asarray(nearest[r, j], np.float32).ravel()]
            if word_vectors is not None:
                cos_rj, z_rj = cos[r, j], z[r, j]
                feats += [cos_rj, cos_rj - cos.max(1)[r], z_rj, z_rj - kth[r]]
                feats.append(self._composition(word_columns, raw, r, j))
            feats += [self.candidate_doc_freq_[j], self.candidate_length_[j], (j < n_mlp).astype(np.float32)]
            feats += [v[r] for v in row_features.values()]
            yield np.stack(feats, axis=1).astype(np.float32), np.stack([r + start, j], axis=1)

    def _composition(self, word_columns: np.ndarray, raw: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray) -> np.ndarray:
        """Each candidate's weight when the target vector is written as a non-negative sum of its
        candidates' word vectors: a word the others already explain gets little weight (a bag
        refinement without queries: MiniLM's mean pooling makes a sentence vector roughly such a sum).
        `word_columns` holds one word vector per column, in float64 and C order: nnls's own, uncopied."""
        from scipy.optimize import nnls

        out = np.zeros(len(rows), np.float32)
        targets = self._unit(raw)
        starts = np.searchsorted(rows, np.arange(len(raw) + 1))  # np.nonzero's rows come sorted
        for r in range(len(raw)):
            part = slice(starts[r], starts[r + 1])
            if part.start < part.stop:
                try:
                    out[part] = nnls(word_columns[:, cols[part]], targets[r], maxiter=500)[0]
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
                best, best_f1 = float(threshold), float(f1)
        return best


def _top(x: np.ndarray, k: int, values: bool = False) -> np.ndarray:
    """Per row, the columns of the k largest entries (their values, descending, with `values`):
    torch's topk, ten times numpy's argpartition on 512 x 20,000 and on both cores."""
    import torch

    top = torch.topk(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), k, dim=1, sorted=values)
    return (top.values if values else top.indices).numpy()
