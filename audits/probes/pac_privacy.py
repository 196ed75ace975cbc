"""pac_privacy: a PAC-privacy bound on what one output reveals about a secret (Xiao & Devadas 2023).

The empirical attacks say what *these* attackers recovered; this says what *no* attacker can
exceed, for a stated prior. The secret is drawn uniformly from K candidates:

* a secret kind (`prior: surname`, the default; any kind the targets carry): one target text with
  that secret, and K values of the kind substituted into it (the attacker's pool, as
  candidate_inversion builds it). The question: "knowing everything but the surname, which of K
  people is it?" Repeated for `templates` target texts; the largest bound is reported.
* `prior: texts`: K of the targets' texts. "Which of these K texts was embedded?"

Each candidate goes through the live pipeline (`aux.embed`, the oracle) `repeats` times, and
audits.pac.estimate_mi bounds I(secret; output) from the outputs, with the noise scale measured
and its shape taken from what the transform declares (`noise_model`). A deterministic pipeline,
or one whose noise is not declared additive Gaussian (vmf, quantize, projection, adversarial
without sigma), gets no bound below the cap log2 K: the report says which.

Metrics: `mutual_information_bits` (value and ci_high: the bound at `confidence`, the number to
gate on; ci_low: a lower limit of the Gaussian-channel value; the point estimate is in the details)
and `posterior_success` (the PAC bound on any adversary's chance of naming the secret, from the
prior 1/K, at the same values). `n` is the number of candidates. The outputs never leave the probe.

Assumed, and said in the report: the pipeline adds Gaussian noise of the shape its transform
declares, independent of the text. The scale is measured; two checks (kurtosis, per-coordinate
variance) turn a visibly wrong declaration into "no bound below the cap"; noise applied inside an
embedding API (`applied_by: encoder`) is never taken as declared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, ClassVar

import numpy as np

from audits.corpora import secret_kind
from audits.errors import ProbeError
from audits.pac import MiEstimate, bits, estimate_mi, posterior_success_bound
from audits.params import Int, Real, parameters
from audits.probes.base import Auxiliary
from audits.results import Sample, Score

log = logging.getLogger(__name__)

MAX_QUERIES = 100_000   # secrets x repeats x templates per audit


@dataclass(frozen=True)
class PacDetails:
    """What one audit found, for the report (numbers only: no texts, no secrets)."""

    prior: str
    secrets: int
    repeats: int
    templates: int
    confidence: float
    prior_success: float
    mi_bits: tuple[float, float, float]
    cap_bits: float
    posterior_success: tuple[float, float, float]
    basis: str
    estimates: tuple[MiEstimate, ...]
    declared_noise: str

    @property
    def capped(self) -> bool:
        return self.mi_bits[2] >= self.cap_bits - 1e-9

    def explanation(self) -> str:
        if self.basis == "deterministic":
            return (f"The pipeline is deterministic: each of the {self.secrets} candidates gives one fixed vector, so "
                    f"the bound is the cap, log2 {self.secrets} = {self.cap_bits:.2f} bits: a vector can reveal the "
                    "secret entirely.")
        if self.basis == "not_gaussian":
            why = next((e.note for e in self.estimates if e.note), "")
            return ("The pipeline is random but its noise is not additive Gaussian noise of a declared shape"
                    + (f" ({why})" if why else "") + f", so this method gives no bound below the cap "
                    f"({self.cap_bits:.2f} bits); the empirical attacks are the measure.")
        capped = " (at the cap: no better than no noise for this prior)" if self.capped else ""
        return (f"With {self.confidence:.0%} confidence one output reveals at most {self.mi_bits[2]:.3g} bits about "
                f"which of {self.secrets} candidates it came from{capped}; any adversary names it with probability "
                f"at most {self.posterior_success[2]:.3g} (prior {self.prior_success:.3g}).")

    def to_dict(self) -> dict:
        return {"prior": self.prior, "secrets": self.secrets, "repeats": self.repeats, "templates": self.templates,
                "confidence": self.confidence, "prior_success": self.prior_success, "mi_bits": list(self.mi_bits),
                "cap_bits": self.cap_bits, "posterior_success": list(self.posterior_success), "basis": self.basis,
                "capped": self.capped, "declared_noise": self.declared_noise, "explanation": self.explanation(),
                "estimates": [e.to_dict() for e in self.estimates]}


class PacPrivacy:
    """Parameters: `prior` (a secret kind, or "texts"), `secrets` (K), `repeats` (draws per
    candidate), `templates` (target texts tried for a secret-kind prior), `confidence`."""

    name: ClassVar[str] = "pac_privacy"
    metrics: ClassVar[dict[str, tuple[float, float | None]]] = {
        "mutual_information_bits": (0, None), "posterior_success": (0, 1)}
    live_attributes: ClassVar[tuple[str, ...]] = ("embed_", "noise_")

    @parameters
    def __init__(self, seed: int = 0, prior: str = "surname", secrets: Annotated[int, Int(2, 4096)] = 64,
                 repeats: Annotated[int, Int(2, 1024)] = 8, templates: Annotated[int, Int(1, 64)] = 3,
                 confidence: Annotated[float, Real(0.5, below=1)] = 0.95) -> None:
        if secrets * repeats * (1 if prior == "texts" else templates) > MAX_QUERIES:
            raise ValueError(f"secrets: secrets x repeats x templates must be <= {MAX_QUERIES:,} pipeline queries")
        if not prior or not prior.replace("_", "").isalnum():
            raise ValueError(f"prior: expected a secret kind (surname, condition, ...) or 'texts', got {prior!r}")
        self.seed = seed
        self.prior = prior
        self.secrets = secrets
        self.repeats = repeats
        self.templates = templates
        self.confidence = confidence
        self.needs = ("texts",) if prior == "texts" else ("texts", "secrets")

    def attach(self, aux: Auxiliary) -> PacPrivacy:
        self.embed_ = aux.embed
        self.noise_ = aux.noise
        return self

    def fit(self, aux: Auxiliary) -> PacPrivacy:
        """Keep the oracle, the declared noise, and the attacker's pool of values of the prior's kind."""
        if aux.embed is None:
            raise ProbeError("pac_privacy needs the pipeline as an embedding oracle (aux.embed)")
        self.attach(aux)
        self.pool_ = sorted({v for row in (aux.secrets or ()) for k, v in row.items()
                             if secret_kind(k) == self.prior and v}) if self.prior != "texts" else []
        return self

    # -- the priors --------------------------------------------------------------------------

    def _candidate_sets(self, sample: Sample, rng: np.random.Generator) -> list[list[str]]:
        if sample.texts is None:
            raise ProbeError("pac_privacy needs targets with texts (canaries or a text column)")
        if self.prior == "texts":
            texts = sorted(set(sample.texts))
            if len(texts) < 2:
                raise ProbeError("pac_privacy: prior 'texts' needs at least 2 distinct target texts")
            picked = rng.choice(len(texts), min(self.secrets, len(texts)), replace=False)
            return [[texts[i] for i in sorted(picked)]]
        if sample.secrets is None:
            raise ProbeError(f"pac_privacy: prior {self.prior!r} needs targets with known secrets (canaries)")
        rows = [(text, value) for text, row in zip(sample.texts, sample.secrets, strict=True)
                for key, value in sorted(row.items()) if secret_kind(key) == self.prior and value and value in text]
        if not rows:
            raise ProbeError(f"pac_privacy: no target has a secret of kind {self.prior!r} in its text")
        pool = sorted(set(self.pool_) | {value for _, value in rows})
        if len(pool) < 2:
            raise ProbeError(f"pac_privacy: fewer than 2 values of kind {self.prior!r} to draw the prior from")
        sets = []
        for j in rng.choice(len(rows), min(self.templates, len(rows)), replace=False):
            text, truth = rows[int(j)]
            values = [pool[i] for i in rng.choice(len(pool), min(self.secrets, len(pool)), replace=False)]
            sets.append([text.replace(truth, v) for v in values])
        return sets

    # -- score -------------------------------------------------------------------------------

    def _outputs(self, candidates: list[str]) -> np.ndarray:
        texts = [t for t in candidates for _ in range(self.repeats)]
        assert self.embed_ is not None
        out = np.asarray(self.embed_(texts), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ProbeError(f"pac_privacy: the pipeline returned shape {out.shape} for {len(texts)} inputs")
        if not np.isfinite(out).all():
            raise ProbeError("pac_privacy: the pipeline returned non-finite values (NaN or infinity)")
        return out.reshape(len(candidates), self.repeats, out.shape[1])

    def score(self, sample: Sample) -> list[Score]:
        if not hasattr(self, "pool_"):
            raise ProbeError("pac_privacy.score called before fit")
        if getattr(self, "embed_", None) is None:
            raise ProbeError("pac_privacy needs the pipeline as an embedding oracle; re-attach it")
        rng = np.random.default_rng(self.seed)
        sets = self._candidate_sets(sample, rng)
        # Several priors tried: each bound at its share of the error, so the largest holds at `confidence`.
        confidence = 1 - (1 - self.confidence) / len(sets)
        estimates = []
        for candidates in sets:
            outputs = self._outputs(candidates)
            declared = self.noise_(outputs.shape[2]) if self.noise_ is not None else None
            shape = None if declared is None else declared.covariance(outputs.shape[2])
            estimates.append(estimate_mi(outputs, shape, confidence))
        worst = max(estimates, key=lambda e: (e.mi_nats[2], e.mi_nats[1]))
        k = worst.secrets
        prior_success = 1 / k
        mi_bits = tuple(bits(v) for v in worst.mi_nats)
        posterior = tuple(posterior_success_bound(prior_success, v) for v in worst.mi_nats)
        self.details_ = PacDetails(
            self.prior, k, self.repeats, len(sets), self.confidence, prior_success,
            (float(mi_bits[0]), float(mi_bits[1]), float(mi_bits[2])), bits(worst.cap_nats),
            (float(posterior[0]), float(posterior[1]), float(posterior[2])), worst.basis, tuple(estimates),
            "none" if self.noise_ is None or declared is None else "additive Gaussian")
        log.info("pac_privacy (%s, K=%d, %d x %d queries): MI <= %.3f bits (point %.3f, cap %.2f, %s); "
                 "posterior success <= %.3f", self.prior, k, len(sets), k * self.repeats, mi_bits[2], mi_bits[1],
                 bits(worst.cap_nats), worst.basis, posterior[2])
        # The value is the bound itself (ci_high too), so a threshold on any basis but ci_low gates on
        # what is promised, not on an estimate; the estimate is in the details.
        return [Score(self.name, "mutual_information_bits", mi_bits[2], mi_bits[0], mi_bits[2], k),
                Score(self.name, "posterior_success", posterior[2], posterior[0], posterior[2], k)]
