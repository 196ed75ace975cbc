"""Candidate inversion: is the true secret the best-matching candidate? (Carlini et al. 2019.)

For a target text with a known secret (a name, a condition), the attacker substitutes many
alternatives of the same kind into the text, embeds every variant through the live pipeline
(the oracle an attacker of a deployed API has) and ranks them by cosine similarity to the
target's vector. Metrics: top-1 and top-5 accuracy (exact binomial intervals) and exposure in
bits, log2(#candidates) - log2(rank of the truth), averaged (bootstrap interval).

Cost is one embedding per distinct candidate text, so trials are subsampled to `max_trials`; `n`
says how many were scored. A trial whose target the pipeline reproduces exactly from its own text
(a deterministic pipeline) is decided after that one query: its truth has cosine 1, which no
candidate can beat (by more than DECIDED_WITHIN, far less than any two distinct texts differ).
"""

from __future__ import annotations

import logging
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field

from audits.corpora import secret_kind
from audits.errors import ProbeError
from audits.metrics import mean_with_ci, proportion_with_ci
from audits.params import Int, parameters
from audits.probes.base import Auxiliary, Embed
from audits.results import Sample, Score

log = logging.getLogger(__name__)
DECIDED_WITHIN = 1e-6


class CandidateInversion:
    """`kinds` limits the trials to secrets of those kinds; None tries every kind the targets carry."""

    name: ClassVar[str] = "candidate_inversion"
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        "top1": (0, 1), "top5": (0, 1), "exposure_bits": (0, None)}
    needs = ("texts", "secrets")

    @parameters
    def __init__(self, seed: int = 0,
                 kinds: Annotated[tuple[str, ...], Field(min_length=1)] | None = ("surname", "condition", "secret"),
                 candidates: Annotated[int, Int(2, 100_000)] = 100,
                 max_trials: Annotated[int, Int(1, 100_000)] = 50,
                 bootstrap_resamples: Annotated[int, Int(100, 100_000)] = 2000) -> None:
        self.seed = seed
        self.kinds = None if kinds is None else tuple(kinds)
        self.candidates = candidates
        self.max_trials = max_trials
        self.bootstrap_resamples = bootstrap_resamples

    def fit(self, aux: Auxiliary) -> CandidateInversion:
        """Keep the oracle and, per kind, the attacker's pool of candidate values."""
        if aux.embed is None:
            raise ProbeError("candidate_inversion needs the pipeline as an embedding oracle (aux.embed)")
        self.pools_ = self._pools(aux.secrets or (), {})
        self.embed_: Embed = aux.embed
        return self

    def _wanted(self, key: str) -> bool:
        return self.kinds is None or secret_kind(key) in self.kinds

    def _pools(self, rows, pools: dict[str, set[str]]) -> dict[str, set[str]]:
        """Add each row's secret values to the pool of their kind."""
        for secrets in rows:
            for key, value in secrets.items():
                if self._wanted(key):
                    pools.setdefault(secret_kind(key), set()).add(value)
        return pools

    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "embed_"):
            raise ProbeError("candidate_inversion.score called before fit")
        if sample.texts is None or sample.secrets is None:
            raise ProbeError("candidate_inversion needs targets with texts and known secrets "
                             "(canaries or labelled targets)")
        rng = np.random.default_rng(self.seed)
        # Candidates of the same kind may also come from the other targets.
        pools = self._pools(sample.secrets, {kind: set(values) for kind, values in self.pools_.items()})
        trials = [(i, key) for i, secrets in enumerate(sample.secrets) for key in sorted(secrets)
                  if self._wanted(key) and secrets[key] and secrets[key] in sample.texts[i]]
        if not trials:
            wanted = "any kind" if self.kinds is None else f"kind {list(self.kinds)}"
            raise ProbeError(f"candidate_inversion: no target has a secret of {wanted} in its text")
        if len(trials) > self.max_trials:
            trials = [trials[j] for j in sorted(rng.choice(len(trials), self.max_trials, replace=False))]

        alternatives: list[list[str]] = []
        for i, key in trials:
            truth, kind = sample.secrets[i][key], secret_kind(key)
            others = sorted(pools[kind] - {truth})
            if not others:
                raise ProbeError(f"candidate_inversion: no alternative values of kind {kind!r} to compare against")
            picked = rng.choice(len(others), min(self.candidates - 1, len(others)), replace=False)
            alternatives.append([sample.texts[i].replace(truth, others[j]) for j in picked])
        targets = _unit(sample.vectors[[i for i, _ in trials]])
        # The truths first: a trial whose own text gives back the target's vector (a deterministic
        # pipeline) is decided, as no candidate's cosine can exceed 1; only the others query their candidates.
        truth_sims = np.einsum("ij,ij->i", self._embed_distinct([sample.texts[i] for i, _ in trials]), targets)
        open_trials = [t for t in range(len(trials)) if truth_sims[t] < 1 - DECIDED_WITHIN]
        is_open = set(open_trials)
        candidate_vectors = self._embed_distinct([v for t in open_trials for v in alternatives[t]])
        ranks, sizes, offset = [], [], 0
        for t in range(len(trials)):
            size = 1 + len(alternatives[t])
            beaten_by = 0
            if t in is_open:
                sims = candidate_vectors[offset:offset + size - 1] @ targets[t]
                offset += size - 1
                beaten_by = int((sims > truth_sims[t]).sum())
            ranks.append(1 + beaten_by)
            sizes.append(size)
        ranks_arr, sizes_arr = np.asarray(ranks), np.asarray(sizes)
        n = len(ranks)
        top1 = proportion_with_ci(int((ranks_arr == 1).sum()), n)
        top5 = proportion_with_ci(int((ranks_arr <= 5).sum()), n)
        exposure = mean_with_ci(np.log2(sizes_arr) - np.log2(ranks_arr), seed=self.seed,
                                n_resamples=self.bootstrap_resamples)
        log.info("candidate_inversion: %d trials, %d candidates each (median), %d decided by the truth alone, "
                 "top-1 %.3f", n, int(np.median(sizes_arr)), n - len(open_trials), top1[0])
        return [Score(self.name, "top1", *top1, n), Score(self.name, "top5", *top5, n),
                Score(self.name, "exposure_bits", *exposure, n)]

    def _embed_distinct(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of `texts` through the oracle, each distinct text queried once (trials built
        on one template share variants) and all in one call, so the encoder batches across trials."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        distinct, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        vectors = np.asarray(self.embed_([str(t) for t in distinct]), dtype=np.float32)
        return _unit(vectors)[inverse.ravel()]


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(min=1e-12)
