"""dp_audit: does the pipeline deliver the differential privacy its transform claims?

A distinguishing game between two neighbouring inputs, played through the live pipeline
(Jagielski et al. 2020; Nasr et al. 2023). Each input is released many times with fresh noise; a
test guesses which input produced each output. Its false positive and false negative rates, with
Clopper-Pearson bounds, lower-bound the epsilon of the mechanism (see audits.dp): a lower bound
above the claimed epsilon means the pipeline leaks more than it says (noise dropped, a smaller
sigma, clipping skipped), whatever caused it.

Inputs (`inputs`):

* `worst_case` (default): x0 = c e and x1 = -c e, a fixed random unit direction e of the encoder's
  dimension scaled to the claimed sensitivity bound (c = sensitivity / 2, the clip norm; 1 without
  a claim: unit vectors). They go through `aux.release`, the deployment's transform alone. For the
  Gaussian and the von Mises-Fisher mechanism the likelihood ratio of the two is monotone in the
  projection of the output onto x1 - x0, so a threshold on that projection is the optimal
  (Neyman-Pearson) test, and the audit can be tight.
* `texts`: two texts that differ in one secret (a surname of the auxiliary corpus replaced by
  another) through `aux.embed`, encoder and all. This measures what the pipeline gives two real
  neighbours; their clean encodings are far closer than the worst case, so the bound is far below
  the claim even for an honest transform. The details carry the claim at the pair's actual
  distance (`Guarantee.epsilon_at`) to compare with.

Queries: `threshold_queries` draws per input pick the test (its direction and threshold) in
`fit`; `score` then draws `queries` fresh ones per input and counts the errors of that fixed test,
so the Clopper-Pearson bounds hold (the test never saw its evaluation draws). Candidate
directions are the known one (x1 - x0, or the pair's clean-encoding difference) and the mean
difference of the outputs on the first half of the threshold split (for pipelines that change
the space, e.g. a projection); each bound picks its own direction and threshold on the split.
Draws stream in chunks of `chunk` rows, so memory stays bounded whatever the query count.

Metrics: `empirical_epsilon` (the 95% lower bound as ci_low), by the GDP method (`mu_estimate`,
converted with the Gaussian privacy curve) for a Gaussian claim or none, by Jagielski's bound for
a pure-DP (vMF) claim; `empirical_epsilon_cp`, Jagielski's assumption-free bound, always; and
`epsilon_ratio` = empirical / claimed epsilon where the transform claims a guarantee, so a gate
on its ci_low at 1.0 stops a pipeline whose delivered privacy is worse than claimed. ci_high is a
one-sided 95% upper limit of the same estimate (so [ci_low, ci_high] is a 90% interval). `n` is
the evaluation draws per input. The sample's rows are not used: the probe measures the pipeline.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from functools import reduce
from typing import Annotated, ClassVar, Literal

import numpy as np

from audits.dp import Guarantee, Rates, epsilon_interval_cp, gdp_epsilon, mu_estimate_pooled
from audits.errors import ProbeError
from audits.params import Int, Real, parameters
from audits.probes.base import Auxiliary
from audits.probes.dp_game import ThresholdTest, best_threshold, clip_input, unit
from audits.results import Sample, Score

log = logging.getLogger(__name__)

MAX_QUERIES = 250_000  # threshold + evaluation draws per input: what one audit may cost
DEFAULT_DELTA = 1e-5   # the delta the GDP method converts at when the transform claims none
_Test = ThresholdTest  # its name here before the split: model-cache entries pickled then refer to it


@dataclass(frozen=True)
class DpAuditDetails:
    """What one audit found, for the report. `rates` are those of the test behind
    `empirical_epsilon` (GDP method), `rates_cp` those of the test behind `empirical_epsilon_cp`;
    triples are (lower bound, point, upper limit). `distance` is the L2 distance of the two
    inputs after clipping; `epsilon_at_distance` what the claim promises at that distance."""

    inputs: str
    mechanism: str | None
    claimed_epsilon: float | None
    claimed_delta: float | None
    delta: float
    method: Literal["gdp", "cp"]
    confidence: float
    queries: int
    threshold_queries: int
    direction: str
    direction_cp: str
    rates: Rates
    rates_cp: Rates
    mu: tuple[float, float, float]
    empirical_epsilon: tuple[float, float, float]
    empirical_epsilon_cp: tuple[float, float, float]
    distance: float | None = None
    epsilon_at_distance: float | None = None
    guarantee: str = field(default="none")

    @property
    def violated(self) -> bool:
        """The audit's lower bound exceeds the claimed epsilon (at 95% confidence)."""
        return self.claimed_epsilon is not None and self.empirical_epsilon[0] > self.claimed_epsilon

    def to_dict(self) -> dict:
        return {
            "inputs": self.inputs, "mechanism": self.mechanism, "guarantee": self.guarantee,
            "claimed_epsilon": self.claimed_epsilon, "claimed_delta": self.claimed_delta, "delta": self.delta,
            "method": self.method, "confidence": self.confidence, "queries": self.queries,
            "threshold_queries": self.threshold_queries, "direction": self.direction,
            "direction_cp": self.direction_cp, "rates": self.rates.to_dict(), "rates_cp": self.rates_cp.to_dict(),
            "mu": list(self.mu), "empirical_epsilon": list(self.empirical_epsilon),
            "empirical_epsilon_cp": list(self.empirical_epsilon_cp), "distance": self.distance,
            "epsilon_at_distance": self.epsilon_at_distance, "violated": self.violated,
        }


def _floats(triple: tuple[float, float, float]) -> tuple[float, float, float]:
    """(lower bound, point, upper limit) as Python floats, for the report."""
    return float(triple[0]), float(triple[1]), float(triple[2])


class DpAudit:
    """Parameters: `inputs` ("worst_case" or "texts"), `queries` (evaluation draws per input),
    `threshold_queries` (draws per input that choose the test), `confidence`, `delta` (default:
    the claim's, else 1e-5), `chunk` (rows per call to the pipeline)."""

    name: ClassVar[str] = "dp_audit"
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        "empirical_epsilon": (0, None), "empirical_epsilon_cp": (0, None), "epsilon_ratio": (0, None)}
    needs: ClassVar[tuple[str, ...]] = ()
    # Oracles onto the pipeline: not state; the model cache drops them and `attach` restores them.
    live_attributes: ClassVar[tuple[str, ...]] = ("release_", "embed_")

    @parameters
    def __init__(self, seed: int = 0, inputs: Literal["worst_case", "texts"] = "worst_case",
                 queries: Annotated[int, Int(1, MAX_QUERIES)] = 200_000,
                 threshold_queries: Annotated[int, Int(2, MAX_QUERIES)] = 50_000,
                 confidence: Annotated[float, Real(0.5, below=1)] = 0.95,
                 delta: Annotated[float, Real(0, below=1)] | None = None,
                 chunk: Annotated[int, Int(1, 10_000_000)] = 20_000) -> None:
        if queries + threshold_queries > MAX_QUERIES:
            raise ValueError(f"queries: queries + threshold_queries must be <= {MAX_QUERIES:,} per input, "
                             f"found {queries + threshold_queries:,}")
        self.seed = seed
        self.inputs = inputs
        self.queries = queries
        self.threshold_queries = threshold_queries
        self.confidence = confidence
        self.delta = delta
        self.chunk = chunk

    # -- oracles -------------------------------------------------------------------------------

    def attach(self, aux: Auxiliary) -> DpAudit:
        """(Re-)attach the pipeline's oracles, e.g. to a probe loaded from the model cache."""
        self.release_ = aux.release
        self.embed_ = aux.embed
        return self

    def _stream(self, which: int, count: int):
        """`count` outputs of input `which` (0 or 1) through the pipeline, `chunk` rows at a time."""
        done = 0
        while done < count:
            rows = min(self.chunk, count - done)
            if self.inputs == "worst_case":
                if self.release_ is None:
                    raise ProbeError("dp_audit needs the pipeline's transform (aux.release); re-attach it")
                out = self.release_(np.repeat(self.inputs_[which][None, :], rows, axis=0))
            else:
                if self.embed_ is None:
                    raise ProbeError("dp_audit needs the pipeline as an embedding oracle (aux.embed); re-attach it")
                out = self.embed_([self.texts_[which]] * rows)
            out = np.asarray(out, dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != rows:
                raise ProbeError(f"dp_audit: the pipeline returned shape {out.shape} for {rows} inputs")
            yield out
            done += rows

    # -- fit: choose the inputs and the test -----------------------------------------------------

    def _resolve_delta(self, guarantee: Guarantee | None) -> float:
        if self.delta is not None:
            return float(self.delta)
        return float(guarantee.delta) if guarantee is not None else DEFAULT_DELTA

    def fit(self, aux: Auxiliary) -> DpAudit:
        self.attach(aux)
        guarantee = aux.guarantee
        self.guarantee_ = guarantee
        self.delta_ = self._resolve_delta(guarantee)
        self.method_: Literal["gdp", "cp"] = "cp" if guarantee is not None and guarantee.mechanism == "vmf" else "gdp"
        if self.method_ == "gdp" and self.delta_ <= 0:
            raise ProbeError("dp_audit.delta must be > 0 to audit a Gaussian (or unstated) mechanism")
        rng = np.random.default_rng(self.seed)
        if self.inputs == "worst_case":
            if aux.release is None:
                raise ProbeError("dp_audit: worst-case inputs need the transform alone, which is out of reach when "
                                 "the embedding API applies it (applied_by: encoder); use inputs: texts")
            dimension = self._input_dimension(aux)
            e = rng.standard_normal(dimension)
            e /= np.linalg.norm(e)
            c = guarantee.sensitivity / 2 if guarantee is not None else 1.0
            self.inputs_ = ((c * e).astype(np.float32), (-c * e).astype(np.float32))
            known, known_label = -e, "crafted"
            x0, x1 = (clip_input(x, guarantee) for x in self.inputs_)
            self.distance_: float | None = float(np.linalg.norm(x1 - x0))
        else:
            if aux.embed is None:
                raise ProbeError("dp_audit needs the pipeline as an embedding oracle (aux.embed) for text inputs")
            self.texts_ = self._pair(aux, rng)
            known, known_label, self.distance_ = None, "clean difference", None
            if aux.encode is not None:
                clean = np.asarray(aux.encode(list(self.texts_)), dtype=np.float64)
                a, b = clip_input(clean[0], guarantee), clip_input(clean[1], guarantee)
                known, self.distance_ = b - a, float(np.linalg.norm(b - a))
        self.tests_ = self._choose_tests(unit(known) if known is not None else None, known_label)
        log.info("dp_audit: %s inputs, test chosen on %d draws per input (GDP: %s direction, cp: %s direction)",
                 self.inputs, self.threshold_queries, self.tests_["gdp"].label, self.tests_["cp"].label)
        return self

    @staticmethod
    def _input_dimension(aux: Auxiliary) -> int:
        """The encoder's dimension (a transform may change it: the crafted inputs are before it)."""
        if aux.encode is not None:
            return int(np.asarray(aux.encode(["dp_audit"])).shape[1])
        return int(aux.vectors.shape[1])

    def _pair(self, aux: Auxiliary, rng: np.random.Generator) -> tuple[str, str]:
        """Two texts that differ in one secret: an auxiliary text with another surname in it
        (texts of the synthetic generator where the corpus has no surnames)."""
        from audits.corpora import secret_kind

        def surnames(texts, secrets):
            rows = []
            for text, row in zip(texts, secrets, strict=True):
                for key, value in sorted(row.items()):
                    if secret_kind(key) == "surname" and value and re.search(rf"\b{re.escape(value)}\b", text):
                        rows.append((text, value))
                        break
            return rows

        rows = surnames(aux.texts, aux.secrets) if aux.secrets is not None else []
        if len({value for _, value in rows}) < 2:
            from audits.corpus import generate_messages

            messages = generate_messages(60, seed=self.seed + 7919)
            rows = surnames([m.text for m in messages], [m.secrets for m in messages])
        text, surname = rows[int(rng.integers(len(rows)))]
        others = sorted({value for _, value in rows} - {surname})
        other = others[int(rng.integers(len(others)))]
        return text, re.sub(rf"\b{re.escape(surname)}\b", lambda _: other, text)

    def _choose_tests(self, known: np.ndarray | None, known_label: str) -> dict[str, ThresholdTest]:
        """Threshold split: the first half of each input's draws gives the mean-difference
        direction; every draw is projected onto the known direction, the second half onto both.
        Each method keeps the (direction, threshold) with the best bound on the split."""
        first = self.threshold_queries // 2
        sums: list[np.ndarray] = []
        known_proj: list[list[np.ndarray]] = [[], []]
        for which in (0, 1):
            chunk_sums = []
            for out in self._stream(which, first):
                if known is not None and out.shape[1] != known.shape[0]:
                    known = None  # the transform changed the space: only the estimated direction applies
                if known is not None:
                    known_proj[which].append(out @ known)
                chunk_sums.append(out.sum(axis=0, dtype=np.float64))
            sums.append(reduce(np.add, chunk_sums))  # summed in draw order
        mean_dir = unit(sums[1] / first - sums[0] / first)
        mean_proj: list[list[np.ndarray]] = [[], []]
        for which in (0, 1):
            for out in self._stream(which, self.threshold_queries - first):
                if known is not None:
                    known_proj[which].append(out @ known)
                if mean_dir is not None:
                    mean_proj[which].append(out @ mean_dir)
        candidates = []
        if known is not None:
            candidates.append((known, known_label, [np.concatenate(p) for p in known_proj]))
        if mean_dir is not None:
            candidates.append((mean_dir, "mean difference", [np.concatenate(p) for p in mean_proj]))
        if not candidates:  # the two inputs' outputs do not differ on average: any direction is as good
            dimension = sums[0].shape[0]
            return {m: ThresholdTest(np.eye(1, dimension, dtype=np.float32)[0], 0.0, "none", 0.0)
                    for m in ("gdp", "cp")}
        tests = {}
        for method in ("gdp", "cp"):
            tried = []
            for direction, label, (s0, s1) in candidates:
                threshold, bound = best_threshold(s0, s1, method, self.delta_, self.confidence)
                tried.append(ThresholdTest(direction, threshold, label, bound))
            tests[method] = max(tried, key=lambda test: test.split_bound)  # the first of equals
        return tests

    # -- score: fresh draws, fixed tests ---------------------------------------------------------

    def claimed_epsilon(self) -> float | None:
        """The claimed epsilon at the audit's delta (the claim's own epsilon at its own delta)."""
        g = self.guarantee_
        if g is None:
            return None
        mu = g.mu  # None for a pure-DP (vMF) claim, whose epsilon holds at any delta
        if mu is None or math.isclose(self.delta_, g.delta, rel_tol=1e-12):
            return float(g.epsilon)
        return gdp_epsilon(mu, self.delta_)

    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "tests_"):
            raise ProbeError("dp_audit.score called before fit")
        tests = [self.tests_["gdp"], self.tests_["cp"]]
        directions = np.stack([t.direction for t in tests], axis=1)
        thresholds = np.array([t.threshold for t in tests], dtype=np.float64)
        errors = [np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64)]
        for which in (0, 1):
            for out in self._stream(which, self.queries):
                proj = (out @ directions).astype(np.float64)
                wrong = proj > thresholds if which == 0 else proj <= thresholds
                errors[which] += wrong.sum(axis=0)
        n = self.queries
        rates = Rates(int(errors[0][0]), n, int(errors[1][0]), n)
        rates_cp = Rates(int(errors[0][1]), n, int(errors[1][1]), n)
        mu = mu_estimate_pooled(rates, self.confidence)
        eps_cp = epsilon_interval_cp(rates_cp, self.delta_, self.confidence)
        eps_gdp = (gdp_epsilon(mu[0], self.delta_), gdp_epsilon(mu[1], self.delta_),
                   gdp_epsilon(mu[2], self.delta_)) if self.delta_ > 0 else eps_cp
        primary = eps_cp if self.method_ == "cp" else eps_gdp
        claimed = self.claimed_epsilon()
        g = self.guarantee_
        epsilon_at = None
        if g is not None and self.distance_ is not None:
            epsilon_at = g.epsilon_at(self.distance_)
            if g.mechanism == "gaussian" and not math.isclose(self.delta_, g.delta):
                epsilon_at = gdp_epsilon(self.distance_ / g.noise, self.delta_)
        self.details_ = DpAuditDetails(
            inputs=self.inputs, mechanism=g.mechanism if g else None, claimed_epsilon=claimed,
            claimed_delta=g.delta if g else None, delta=self.delta_, method=self.method_,
            confidence=self.confidence, queries=n, threshold_queries=self.threshold_queries,
            direction=self.tests_["gdp"].label, direction_cp=self.tests_["cp"].label, rates=rates,
            rates_cp=rates_cp, mu=_floats(mu), empirical_epsilon=_floats(primary),
            empirical_epsilon_cp=_floats(eps_cp), distance=self.distance_,
            epsilon_at_distance=epsilon_at, guarantee=g.describe() if g else "none")
        log.info("dp_audit (%s inputs): empirical epsilon >= %.3f (point %.3f, %s) vs claimed %s; "
                 "FPR %.4f FNR %.4f over %d draws per input", self.inputs, primary[0], primary[1],
                 self.method_, "none" if claimed is None else f"{claimed:g}", rates.fpr, rates.fnr, n)
        low, point, high = primary
        scores = [Score(self.name, "empirical_epsilon", point, low, high, n),
                  Score(self.name, "empirical_epsilon_cp", eps_cp[1], eps_cp[0], eps_cp[2], n)]
        if claimed is not None and claimed > 0:
            scores.append(Score(self.name, "epsilon_ratio", point / claimed, low / claimed, high / claimed, n))
        return scores
