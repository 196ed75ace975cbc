"""adversarial: a map trained against a bag-of-words inversion attacker, then optional Gaussian noise.

Attack model: whoever holds stored or sent vectors (a leaked vector store, a vendor, an insider) and
wants the words of the texts behind them, by training a classifier from vector to words on public
text (audits.probes.bow_inversion). The map learns, from the auxiliary corpus only, which directions
of the encoder's space carry the corpus' frequent content words, and removes them: g(x) =
normalize(x + x @ A), where A = -U U^T and U is an orthonormal basis of the removed directions (an
orthogonal projection), the output dimension the input's.

The training is a game played in rounds (Ravfogel et al. 2020, INLP; the alternation of Elazar &
Goldberg 2018 and Eguard, 2024). Each round a linear multi-label word classifier (the adversary,
least squares on the bag of words of each text) is fitted to the current outputs, and the map
removes the directions its predictions ride on (its activation patterns, the covariance of the
outputs with the words: Haufe et al. 2014). Every round, an adversary fitted on three quarters of
the corpus is scored on the rest (held-out R^2), and the corpus' pairwise cosine similarities are
compared with the clean ones. The map kept is the round that minimises

    utility_loss - privacy_weight * adversary_loss

utility_loss: the share of the corpus' similarity structure lost, 1 - the correlation of the
outputs' pairwise cosine similarities with the clean ones; adversary_loss: the share of the
unprotected adversary's held-out R^2 that it lost. Both are 0 at the identity and at most about 1;
privacy_weight 0 keeps the identity, and the weight at which directions start to go is where one
unit of leakage is worth one unit of similarity structure.

Why a projection rather than a map trained by gradient against a neural adversary (tried and
measured, MiniLM, 3,000 synthetic texts): a trained residual map defeats the adversary it was
trained with (an attacker trained on clean vectors: token F1 0.66 -> 0.03) and nothing else: an
attacker trained on the map's outputs recovers as much as on clean vectors (0.655 vs 0.657), the
finding of Elazar & Goldberg. Any invertible map is undone by such an attacker; only what the map
removes is gone, so the directions are removed exactly, and an adaptive attacker loses what they
carried (measured, same setting, 30 rounds: privacy_weight 1 removes 20 of 384 directions, the
adaptive attacker's token F1 0.66 -> 0.46, paraphrase recall@10 of 500 pairs stays 1.0; weight 2:
141 directions, 0.21, recall 0.998; weight 10: 251, 0.18, 0.95; weights up to 0.5 keep the
identity; a fit takes about 4 s). The rounds are `epochs`; the directions removed per round grow
with the round (fine steps first, up to three quarters of the dimensions at the last).

What it does not protect against: information that survives outside the removed directions. The
adversary is linear and its vocabulary is the corpus' few hundred most frequent content words, so
rare words (names, account numbers) and what a non-linear attacker reads from the directions kept
stay exposed; texts unlike the auxiliary corpus carry their words in directions it never saw. A
deterministic map that keeps neighbourhoods keeps what retrieval needs, and an attacker trained on
its outputs learns whatever is left: the frontier judges it with exactly that attacker. `sigma`
adds fresh Gaussian noise after the map. No differential-privacy guarantee is claimed, with or
without noise (the map is fitted on data, the noise is not calibrated): `guarantee()` is None.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from audits.dp import Guarantee
from audits.transforms.base import FitMaterial, NoiseModel
from audits.transforms.basic import _noisy_norm_range

log = logging.getLogger(__name__)

VOCABULARY = 300          # the adversary's words: the corpus' most frequent content words (seen at least twice)
MIN_TEXTS = 50            # fewer and the held-out adversary scores nothing
HELD_OUT = 0.25           # share of the corpus the adversary is scored on, never fitted on
RIDGE = 1e-3              # the adversary's ridge penalty, per text (unit vectors: ~2.6e-3 variance per coordinate)
UTILITY_TEXTS = 1000      # texts whose pairwise similarities the utility loss compares
MAX_REMOVED_SHARE = 0.75  # the last round removes this share of the dimensions


def _check(privacy_weight, sigma, epochs) -> None:
    if isinstance(privacy_weight, bool) or not isinstance(privacy_weight, int | float) \
            or not (privacy_weight >= 0 and math.isfinite(privacy_weight)):
        raise ValueError(f"adversarial.privacy_weight must be a finite number >= 0, got {privacy_weight!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"adversarial.sigma must be a finite number >= 0, got {sigma!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"adversarial.epochs must be an integer >= 1, got {epochs!r}")


@dataclass(frozen=True)
class Adversarial:
    """g(x) = normalize(x + x @ A), A learnt against a word classifier (module docstring), then
    N(0, sigma^2) per coordinate when sigma > 0 (fresh noise on every call). States no
    differential-privacy guarantee: the audit's adaptive attacker, trained on its outputs, judges it."""

    privacy_weight: float
    sigma: float = 0.0
    epochs: int = 30
    artifact: str = ""
    sha256: str = ""
    name: str = "adversarial"

    fitted: ClassVar[bool] = True
    fit_parameters: ClassVar[tuple[str, ...]] = ("privacy_weight", "epochs")

    def __post_init__(self) -> None:
        _check(self.privacy_weight, self.sigma, self.epochs)
        if not isinstance(self.artifact, str) or not isinstance(self.sha256, str):
            raise ValueError("adversarial.artifact and adversarial.sha256 must be strings")
        if not self.artifact or not self.sha256:
            missing = " and ".join(f for f in ("artifact", "sha256") if not getattr(self, f))
            raise ValueError(f"adversarial.{missing} missing: the map is fitted on the auxiliary corpus; "
                             "`embwarden versions add ... --transform` or the frontier fits it and fills both")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"adversarial.sha256 must be 64 lower-case hex digits, got {self.sha256!r}")

    # -- fit -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, params: dict, material: FitMaterial) -> dict[str, np.ndarray]:
        """The map's arrays, learnt from `material` (public or synthetic text and its clean vectors):
        `A` (d x d, the residual map), `basis` (d x r, the removed directions) and `path` (one row per
        round: directions removed, utility loss, adversary loss)."""
        if "privacy_weight" not in params:
            raise ValueError("adversarial.privacy_weight is required")
        privacy_weight = params["privacy_weight"]
        epochs = params.get("epochs", cls.__dataclass_fields__["epochs"].default)
        _check(privacy_weight, 0.0, epochs)
        from threadpoolctl import threadpool_limits

        started = time.perf_counter()
        # One BLAS thread: these matrices are small, and on shared CPUs a second thread made the
        # decompositions up to 20 times slower (measured, 2 cores under load).
        with threadpool_limits(1):
            arrays = _fit(np.asarray(material.clean), material.texts, float(privacy_weight), int(epochs),
                          material.seed)
        removed, path = arrays["basis"].shape[1], arrays["path"]
        chosen = path[path[:, 0] == removed][0]
        log.info("adversarial (privacy_weight %g, %d rounds): %d of %d directions removed, utility loss %.3f, "
                 "adversary loss %.3f; fitted on %d texts in %.1f s", privacy_weight, epochs, removed,
                 arrays["A"].shape[0], chosen[1], chosen[2], len(material.texts), time.perf_counter() - started)
        return arrays

    # -- apply -----------------------------------------------------------------------------
    @cached_property
    def matrix(self) -> np.ndarray:
        """A of g(x) = normalize(x + x @ A), read from the artifact (checked against its SHA-256)."""
        from audits.transforms.fitting import TransformArtifactError, load

        arrays = load(self.name, self.artifact, self.sha256)
        a = arrays.get("A")
        if a is None or a.ndim != 2 or a.shape[0] != a.shape[1] or not np.issubdtype(a.dtype, np.floating) \
                or not np.isfinite(a).all():
            raise TransformArtifactError(f"transform {self.name}: artifact {self.artifact} holds no square, finite "
                                         "matrix `A`: not an adversarial map")
        return a.astype(np.float32)

    def apply(self, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        a = self.matrix
        if x.ndim != 2 or x.shape[1] != a.shape[0]:
            raise ValueError(f"adversarial: the map was fitted on {a.shape[0]}-dimensional vectors, got shape "
                             f"{x.shape}")
        out = x + x @ a
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        if self.sigma > 0:
            out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(self.sigma)
        return out

    def guarantee(self) -> Guarantee | None:
        return None

    def statement(self) -> str | None:
        return None

    def noise_model(self, dimension: int) -> NoiseModel | None:
        return NoiseModel(self.sigma**2) if self.sigma > 0 else None

    def output_dimension(self, dimension: int) -> int:
        return dimension

    def norm_range(self, dimension: int) -> tuple[float, float]:
        if self.sigma > 0:
            return _noisy_norm_range(dimension, 1.0, self.sigma)
        return 1 - 1e-3, 1 + 1e-3


# -- the game -------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _word_targets(texts: Sequence[str]) -> np.ndarray:
    """One row per text, one column per vocabulary word: 1 where the text contains it."""
    from audits.probes.words import by_count, content_words, stop_words

    stop = stop_words()
    words = [content_words(t, stop) for t in texts]
    counts = Counter(w for ws in words for w in ws)
    vocab = [w for w, c in by_count(counts)[:VOCABULARY] if c >= 2]
    index = {w: i for i, w in enumerate(vocab)}
    targets = np.zeros((len(texts), len(vocab)))
    for row, ws in enumerate(words):
        for w in ws:
            if w in index:
                targets[row, index[w]] = 1.0
    return targets


def schedule(rounds: int, dimension: int) -> list[int]:
    """Directions removed after each round: quadratic in the round (fine steps where the first,
    most telling directions go), strictly growing, up to MAX_REMOVED_SHARE of `dimension`."""
    top = max(1, int(dimension * MAX_REMOVED_SHARE))
    rounds = min(rounds, top)
    out: list[int] = []
    for k in range(1, rounds + 1):
        out.append(min(top, max(round(top * (k / rounds) ** 2), out[-1] + 1 if out else 1)))
    return out


def _fit(clean: np.ndarray, texts: Sequence[str], privacy_weight: float, rounds: int,
         seed: int) -> dict[str, np.ndarray]:
    if clean.ndim != 2 or len(clean) != len(texts):
        raise ValueError(f"adversarial.fit: expected one vector per text, got {clean.shape} for {len(texts)} texts")
    n, d = clean.shape
    if n < MIN_TEXTS:
        raise ValueError(f"adversarial.fit: the auxiliary corpus has {n} texts, the map needs at least {MIN_TEXTS}")
    x = _unit(np.asarray(clean, dtype=np.float64))
    y = _word_targets(texts)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    test, train = order[: max(1, int(n * HELD_OUT))], order[max(1, int(n * HELD_OUT)):]
    sample = order[:UTILITY_TEXTS]
    pairs = np.triu_indices(len(sample), 1)
    clean_sims = (x[sample] @ x[sample].T)[pairs]

    def utility_loss(z: np.ndarray) -> float:
        """The share of the corpus' similarity structure lost: 1 - the correlation of the pairwise
        cosine similarities of the outputs with the clean ones."""
        sims = (z[sample] @ z[sample].T)[pairs]
        if sims.std() == 0 or clean_sims.std() == 0:
            return 0.0 if np.allclose(sims, clean_sims) else 1.0
        return 1 - float(np.corrcoef(sims, clean_sims)[0, 1])
    y_mean = y[train].mean(0)
    y_train, y_test = y[train] - y_mean, y[test] - y_mean
    y_test_ss = float((y_test**2).sum())

    def held_out_r2(z: np.ndarray) -> float:
        """R^2 on the held-out texts of a ridge word classifier fitted on the others."""
        if not y.shape[1] or y_test_ss == 0:
            return 0.0
        mean = z[train].mean(0)
        zc = z[train] - mean
        w = np.linalg.solve(zc.T @ zc + RIDGE * len(train) * np.eye(d), zc.T @ y_train)
        return 1 - float(((y_test - (z[test] - mean) @ w) ** 2).sum()) / y_test_ss

    basis = np.zeros((d, 0))
    path = []   # (removed, utility loss, held-out R^2)
    targets = schedule(rounds, d)
    for k in range(len(targets) + 1):
        z = _unit(x - (x @ basis) @ basis.T)
        path.append((basis.shape[1], utility_loss(z), held_out_r2(z)))
        if k == len(targets) or not y.shape[1]:
            break
        # The adversary's activation patterns: covariance of the outputs with its words.
        zc = z[train] - z[train].mean(0)
        patterns = zc.T @ y_train
        patterns -= basis @ (basis.T @ patterns)
        # their strongest directions: the top eigenvectors of patterns @ patterns.T (eigh: ascending)
        new = np.linalg.eigh(patterns @ patterns.T)[1][:, ::-1][:, : targets[k] - basis.shape[1]]
        new -= basis @ (basis.T @ new)
        basis = np.hstack([basis, np.linalg.qr(new)[0]])

    table = np.asarray(path, dtype=np.float64)
    leak0 = table[0, 2]
    # adversary loss: the share of the unprotected adversary's held-out R^2 it lost (nothing to lose: 0)
    adversary_loss = np.clip(1 - table[:, 2] / leak0, 0.0, 1.0) if leak0 > 0 else np.zeros(len(table))
    objective = table[:, 1] - privacy_weight * adversary_loss
    best = int(np.argmin(objective))   # the first minimum: on a tie, fewer directions removed
    removed = basis[:, : int(table[best, 0])]
    return {"A": (-removed @ removed.T).astype(np.float32), "basis": removed.astype(np.float32),
            "path": np.column_stack([table[:, 0], table[:, 1], adversary_loss]).astype(np.float32)}
