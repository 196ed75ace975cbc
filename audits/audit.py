"""One audit of a pipeline: fit each probe on the auxiliary corpus (or reuse it), score targets.

The DAG's probe tasks and `embwarden audit` both go through `Auditor`, so a pre-deployment
check and the daily audit measure the same thing. Fitted attack models are cached on disk per
(pipeline, corpus hash, probe, parameters, seed, attacker kind) and reused by later runs; any
change in one of them is a different key, hence a fresh fit. Clean embeddings of the corpus are
cached separately (audits.pipeline.EmbeddingCache), so a new probe setting does not re-encode.

Targets are a production sample or canaries; each probe scores the first of them that has what
it needs (texts, known secrets, labels), and the result says which.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass, field

import numpy as np

from audits import storage
from audits.corpora import Corpus
from audits.errors import EmbwardenError, ProbeError
from audits.pipeline import EmbeddingCache, Pipeline
from audits.probes import make_probe
from audits.probes.base import Auxiliary
from audits.results import Sample, Score
from audits.storage import Location
from audits.transforms import AppliedByEncoder

log = logging.getLogger(__name__)
# The key of the model cache's digests, the same on every worker (see ModelCache).
CACHE_KEY_ENV = "EMBWARDEN_CACHE_KEY"

# Bump when a probe's fitted state changes shape: older cache entries are then ignored.
MODEL_CACHE_FORMAT = 3


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome on one set of targets; `error` is set instead of scores when it failed."""

    probe: str
    target: str
    scores: tuple[Score, ...] = ()
    error: str | None = None
    cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    # What the attacker recovered from a few canaries, every secret redacted (see redacted_examples).
    examples: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {"probe": self.probe, "target": self.target, "scores": [s.to_dict() for s in self.scores],
                "error": self.error, "cached": self.cached, "timings": self.timings,
                "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, data: dict) -> ProbeResult:
        return cls(data["probe"], data["target"], tuple(Score.from_dict(s) for s in data["scores"]),
                   data.get("error"), data.get("cached", False), data.get("timings", {}),
                   tuple(data.get("examples", ())))


def needs_of(probe) -> frozenset[str]:
    """What a probe needs its targets to carry besides vectors: texts, secrets, labels."""
    return frozenset(getattr(probe, "needs", ("texts",)))


def has(sample: Sample, needs: frozenset[str]) -> bool:
    return all(getattr(sample, what) is not None for what in needs)


def embed_corpus(pipeline: Pipeline, corpus: Corpus, rng: np.random.Generator, version: str,
                 prefix: str, cache: EmbeddingCache | None = None) -> Sample:
    """Targets the attacker did not see, embedded through the live pipeline (fresh noise).

    `cache` is for synthetic targets only (canaries, benchmarks): never cache production text.
    """
    vectors = pipeline.embed(list(corpus.texts), rng, cache=cache)
    ids = tuple(f"{prefix}{i}" for i in range(len(corpus)))
    return Sample(ids, vectors, corpus.texts, version, secrets=corpus.secrets, labels=corpus.labels)


class ModelCache:
    """Fitted probes pickled under `root` (a folder or an object store), each beside its digest.

    Loading a pickle runs code, so an entry is unpickled only when its bytes match the digest
    recorded with it when it was stored: a truncated, corrupted or replaced object is refitted,
    never loaded. With a key (`EMBWARDEN_CACHE_KEY`, shared by every worker and kept out of the
    store) the digest is an HMAC, so that someone who can write to the store cannot forge one;
    without, a plain SHA-256, and the store's write access is what keeps the pickles honest.
    """

    def __init__(self, root: Location, key: bytes | str | None = None) -> None:
        self.root = storage.as_location(root)
        key = os.environ.get(CACHE_KEY_ENV) if key is None else key
        self.key = key.encode() if isinstance(key, str) else key

    def path(self, key: str) -> Location:
        return self.root / f"{key}.pkl"

    def digest_path(self, key: str) -> Location:
        return self.root / f"{key}.digest"

    def digest(self, data: bytes) -> str:
        if self.key:
            return "hmac-sha256:" + hmac.new(self.key, data, hashlib.sha256).hexdigest()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def load(self, key: str):
        data = storage.read_bytes(self.path(key))
        if data is None:
            return None
        recorded = storage.read_bytes(self.digest_path(key))
        if recorded is None or not hmac.compare_digest(recorded.decode(errors="replace").strip(), self.digest(data)):
            why = "has no digest" if recorded is None else "does not match its digest"
            log.warning("model cache entry %s %s; not loaded, fitting afresh", self.path(key).name, why)
            return None
        try:
            return pickle.loads(data)
        except Exception as exc:  # an entry of an incompatible version is a miss, not a failure
            log.warning("model cache entry %s unreadable (%s); fitting afresh", self.path(key).name, exc)
            return None

    def store(self, key: str, probe) -> None:
        """Pickle `probe` without its live attributes (oracles onto the pipeline are not state;
        they are re-attached on load): `embed_`, and any a probe lists in `live_attributes`."""
        names = {"embed_", *getattr(probe, "live_attributes", ())}
        live = {name: getattr(probe, name) for name in names if getattr(probe, name, None) is not None}
        for name in live:
            setattr(probe, name, None)
        try:
            data = pickle.dumps(probe, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            for name, value in live.items():
                setattr(probe, name, value)
        # The pickle first: a reader that finds the new digest beside the old pickle refits, never loads it.
        storage.write_bytes(self.path(key), data)
        storage.write_bytes(self.digest_path(key), self.digest(data).encode())


class Auditor:
    """Fits and scores probes against one pipeline with one auxiliary corpus.

    `naive=True` trains the attacker on clean encoder output instead of vectors that went through
    the pipeline's transform: it shows how much a noise-unaware probe under-reports.
    """

    def __init__(self, pipeline: Pipeline, aux: Corpus, seed: int = 0, cache_dir: Location | None = None,
                 naive: bool = False, cache_oracle: bool = False) -> None:
        self.pipeline = pipeline
        self.corpus = aux
        self.seed = seed
        self.naive = naive
        root = storage.as_location(cache_dir) if cache_dir else None
        self.embedding_cache = EmbeddingCache(root / "embeddings") if root else None
        self.model_cache = ModelCache(root / "models") if root else None
        self._oracle_rng = np.random.default_rng(seed + 1)
        # Fitting may query the pipeline too (bow_inversion re-embeds its candidate words): from its own
        # stream, so a probe's scores are the same whether it was fitted now or loaded from the cache.
        self._fit_oracle_rng = np.random.default_rng(seed + 5)
        self._release_rng = np.random.default_rng(seed + 3)
        # Caching the oracle's clean encodings persists embeddings of variants of the targets'
        # texts: allowed for synthetic targets (benchmarks), never for production samples.
        self._oracle_cache = self.embedding_cache if cache_oracle else None
        self._aux: Auxiliary | None = None
        self.timings: dict[str, float] = {}

    def oracle(self, texts: list[str]) -> np.ndarray:
        """The live pipeline, as anyone with access to the deployed API can call it."""
        return self.pipeline.embed(texts, self._oracle_rng, cache=self._oracle_cache)

    def fit_oracle(self, texts: list[str]) -> np.ndarray:
        """The same pipeline for the attacker's own queries while it trains (public text only)."""
        return self.pipeline.embed(texts, self._fit_oracle_rng, cache=self.embedding_cache)

    @property
    def _local_transform(self) -> bool:
        """Whether the transform runs here (not inside the embedding API), so the auditor can call
        it alone on vectors it chooses, and the encoder's output is clean."""
        return not isinstance(self.pipeline.transform, AppliedByEncoder)

    @property
    def _noise(self):
        """The additive Gaussian noise the transform declares (a function of the output dimension)."""
        return getattr(self.pipeline.transform, "noise_model", None)

    def release(self, clean: np.ndarray) -> np.ndarray:
        """The pipeline's transform alone, fresh randomness per call, on vectors the auditor chose."""
        return self.pipeline.transform.apply(clean, self._release_rng)

    def oracles(self) -> Auxiliary:
        """The pipeline's oracles without the corpus: what a probe loaded from the cache re-attaches."""
        local = self._local_transform
        return Auxiliary((), np.zeros((0, self.pipeline.dimension), dtype=np.float32), embed=self.oracle,
                         release=self.release if local else None, guarantee=self.pipeline.transform.guarantee(),
                         encode=self.pipeline.encoder.encode if local else None, noise=self._noise)

    def auxiliary(self) -> Auxiliary:
        if self._aux is None:
            started = time.perf_counter()
            texts = list(self.corpus.texts)
            rng = np.random.default_rng(self.seed)
            if self.naive:
                clean = self.embedding_cache.encode(self.pipeline.encoder, texts) if self.embedding_cache \
                    else self.pipeline.encoder.encode(texts)
                vectors = np.asarray(clean, dtype=np.float32)
            else:
                vectors = self.pipeline.embed(texts, rng, cache=self.embedding_cache)
            redraw = None
            if not self.naive and self.pipeline.transform.name != "none":
                def redraw() -> np.ndarray:
                    return self.pipeline.embed(texts, rng, cache=self.embedding_cache)
            self._aux = Auxiliary(self.corpus.texts, vectors, labels=self.corpus.labels,
                                  secrets=self.corpus.secrets, embed=self.fit_oracle, redraw=redraw,
                                  release=self.release if self._local_transform else None,
                                  guarantee=self.pipeline.transform.guarantee(),
                                  encode=self.pipeline.encoder.encode if self._local_transform else None,
                                  noise=self._noise)
            self.timings["embed_auxiliary_seconds"] = round(time.perf_counter() - started, 3)
        return self._aux

    def model_key(self, name: str, params: dict) -> str:
        # What the attacker trained on: clean vectors (a naive attacker, or no transform) or
        # vectors through this transform. A naive model is the same whatever the transform.
        trained_on = "clean" if self.naive or self.pipeline.transform.name == "none" else repr(self.pipeline.transform)
        identity = {
            "format": MODEL_CACHE_FORMAT, "probe": name, "params": params, "seed": self.seed,
            "encoder": self.pipeline.encoder.fingerprint, "trained_on": trained_on,
            "corpus": self.corpus.hash, "corpus_size": len(self.corpus),
        }
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        return f"{name}-{hashlib.sha256(blob).hexdigest()[:20]}"

    def fitted(self, name: str, params: dict | None = None):
        """The probe fitted on the auxiliary corpus, from the cache when it holds this exact setup."""
        params = dict(params or {})
        probe = make_probe(name, params, seed=self.seed)
        key = self.model_key(name, params)
        cached = self.model_cache.load(key) if self.model_cache else None
        if cached is not None:
            self._attach(cached)
            log.info("%s: fitted model from cache (%s)", name, key)
            return cached, True, 0.0
        aux = self.auxiliary()
        started = time.perf_counter()
        probe.fit(aux)
        seconds = time.perf_counter() - started
        if self.model_cache:
            self.model_cache.store(key, probe)
        self._attach(probe)   # scored through the scoring oracle, as a probe loaded from the cache is
        return probe, False, seconds

    def _attach(self, probe) -> None:
        if hasattr(probe, "embed_"):
            probe.embed_ = self.oracle
        if hasattr(probe, "attach"):
            probe.attach(self.oracles())

    def coverage(self, sample: Sample) -> ProbeResult:
        """How well the attacker's corpus covers `sample` (audits.coverage), as a check's result."""
        from audits.coverage import PROBE, measure

        started = time.perf_counter()
        try:
            aux = self.auxiliary()
            scores = tuple(measure(sample.vectors, sample.texts, aux.vectors, aux.texts, seed=self.seed))
        except (EmbwardenError, ValueError) as exc:
            log.error("coverage failed: %s: %s", type(exc).__name__, exc)
            return ProbeResult(PROBE, "sample", error=f"{type(exc).__name__}: {exc}")
        seconds = round(time.perf_counter() - started, 3)
        log.info("coverage of %d sampled vectors by %d attacker texts: %s (%.1f s)", len(sample), len(aux.texts),
                 ", ".join(f"{s.metric} {s.value:.3f}" for s in scores), seconds)
        return ProbeResult(PROBE, "sample", scores, timings={"score_seconds": seconds})

    def run(self, name: str, params: dict | None, targets: dict[str, Sample]) -> ProbeResult:
        """Fit (or load) probe `name` and score the first of `targets` that has what it needs.

        An EmbwardenError (bad input, a probe that cannot run on these targets) becomes the
        result's `error`; anything else is a bug and propagates.
        """
        target = "none"
        try:
            needs = needs_of(make_probe(name, params, seed=self.seed))
            fitting = next((t for t, s in targets.items() if has(s, needs)), None)
            if fitting is None:
                raise ProbeError(f"{name} needs targets with {', '.join(sorted(needs))}; "
                                 f"none of {sorted(targets)} has them (configure canaries or a text column)")
            target = fitting
            probe, cached, fit_seconds = self.fitted(name, params)
            started = time.perf_counter()
            if name in SEGMENTED:   # predicted once, scored on the whole and on each segment
                predicted = probe.predict(targets[target].vectors)
                scores = tuple(probe.score_predicted(targets[target], predicted))
                scores += segment_scores(probe, targets[target], predicted)
            else:
                scores = tuple(probe.score(targets[target]))
            score_seconds = time.perf_counter() - started
        except EmbwardenError as exc:
            log.error("%s failed: %s: %s", name, type(exc).__name__, exc)
            return ProbeResult(name, target, error=f"{type(exc).__name__}: {exc}")
        log.info("%s on %s: %d scores, fit %.1f s%s, score %.1f s", name, target, len(scores), fit_seconds,
                 " (cached)" if cached else "", score_seconds)
        examples = redacted_examples(probe, targets["canaries"]) if "canaries" in targets else ()
        return ProbeResult(name, target, scores, cached=cached,
                           timings={"fit_seconds": round(fit_seconds, 3), "score_seconds": round(score_seconds, 3)},
                           examples=examples)


# Probes also scored per segment (TF Privacy's slicing) when the targets carry labels: their
# predictions are per row (`predict`) and their scores are of predictions (`score_predicted`).
SEGMENTED = frozenset({"bow_inversion"})
MIN_SEGMENT = 20
MAX_SEGMENTS = 12


def segment_scores(probe, sample: Sample, predicted: list) -> tuple[Score, ...]:
    """The probe's scores on each labelled segment of `sample` with at least MIN_SEGMENT rows, as
    metrics `metric[label]` (`token_f1[medical]`): which kinds of text leak most. Labels beyond the
    MAX_SEGMENTS largest are left out, so a free-text label column cannot flood the ledger."""
    if sample.labels is None:
        return ()
    from collections import Counter

    counts = Counter(sample.labels)
    out = []
    for label, n in counts.most_common(MAX_SEGMENTS):
        if n < MIN_SEGMENT:
            break
        rows = [i for i, x in enumerate(sample.labels) if x == label]
        subset = Sample(tuple(sample.ids[i] for i in rows), sample.vectors[rows],
                        None if sample.texts is None else tuple(sample.texts[i] for i in rows), sample.version,
                        secrets=None if sample.secrets is None else tuple(sample.secrets[i] for i in rows))
        segment = segment_name(label)
        try:
            scored = probe.score_predicted(subset, [predicted[i] for i in rows])
        except EmbwardenError as exc:   # e.g. a segment with no content words: say so, keep the rest
            log.info("%s: segment %s not scored: %s", probe.name, segment, exc)
            continue
        out += [Score(s.probe, f"{s.metric}[{segment}]", s.value, s.ci_low, s.ci_high, s.n) for s in scored]
    return tuple(out)


def segment_name(label: str) -> str:
    """A label as thresholds and the ledger can name it: at most 40 of [A-Za-z0-9_ .:-]."""
    import re

    return re.sub(r"[^A-Za-z0-9_ .:-]+", "_", str(label)).strip()[:40] or "_"


def redacted_examples(probe, canaries: Sample, count: int = 3) -> tuple[dict, ...]:
    """What a word-recovering probe got back from the first `count` canaries, for the report.

    Only canaries (synthetic texts with known secrets), never production texts. Every word of a
    secret is shown as its kind (`[SURNAME]`), every word written capitalised in the text as
    `[NAME]` and every word with a digit as `[NUMBER]`: the reader sees *that* a surname came back,
    never which.
    """
    import re

    from audits.probes.words import content_words, stop_words

    if not hasattr(probe, "predict") or canaries.texts is None or canaries.secrets is None:
        return ()
    stop = stop_words()
    examples = []
    for text, secrets, predicted in zip(canaries.texts[:count], canaries.secrets[:count],
                                        probe.predict(canaries.vectors[:count]), strict=True):
        kinds = {w: kind for kind, value in secrets.items() for w in content_words(value, stop)}
        capitalised = {w.lower() for w in re.findall(r"\b[A-Z][a-z]+\b", text)}
        actual = content_words(text, stop)
        examples.append({
            "recovered": sorted(_redact(w, kinds, capitalised) for w in predicted & actual),
            "missed": sorted(_redact(w, kinds, capitalised) for w in actual - predicted),
            "wrong_guesses": len(predicted - actual),
            "secrets_recovered": sorted({kinds[w] for w in predicted & set(kinds)}),
            "secrets": sorted(set(kinds.values())),
        })
    return tuple(examples)


def _redact(word: str, kinds: dict[str, str], capitalised: set[str]) -> str:
    if word in kinds:
        return f"[{kinds[word].upper()}]"
    if any(ch.isdigit() for ch in word):
        return "[NUMBER]"
    return "[NAME]" if word in capitalised else word
