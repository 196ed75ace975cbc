"""Inversion attacks on real, non-templated English (the `real_text` benchmark section).

Two kinds of prose, both from Debian packages installed here (audits.general):

| kind | sentences from | targets | in-domain attacker |
|---|---|---|---|
| `definitions` | WordNet 3.0 definitions and usage examples | 2,500 | 5,500 others |
| `quotations` | GCIDE literary quotations and BSD fortunes | 2,500 | 5,500 others |
| `docstrings` | installed libraries' docstrings (first sentences; outside the general corpus) | 1,000 | 3,000 |

Targets and attacker sets are drawn with fixed seeds and are disjoint. A "general" attacker corpus
(`general.sentences(GENERAL_SIZE, GENERAL_SEED, exclude=every target and in-domain sentence)`, all
three sources) is added to the in-domain 5,500 for the `_general` figures. Everything is embedded
through all-MiniLM-L6-v2 without noise; clean embeddings are cached (in chunks of CHUNK sentences,
so a larger general corpus reuses a smaller one's) under `<cache_dir>/embeddings`.

`figures(cache_dir)` returns the flat dict `benchmarks/run.py` records:
`real_text_bow_f1_indomain_5500`, `real_text_bow_f1_general` (means over definitions and
quotations) and the same per kind (`real_text_bow_f1_indomain_5500_definitions`, ...);
`generative=True` adds `real_text_generative_bleu` and `real_text_generative_bleu_corrected`.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KINDS = {"definitions": ("wordnet",), "quotations": ("gcide", "fortunes")}
MAIN_KINDS = ("definitions", "quotations")
TARGETS, INDOMAIN = 2500, 5500
DOC_TARGETS, DOC_INDOMAIN = 1000, 3000
GENERAL_SIZE, GENERAL_SEED = 20_000, 11
CHUNK = 5000
SEEDS = {"definitions": 1, "quotations": 2, "docstrings": 3}


# -- the sentences ----------------------------------------------------------------------------
PACKAGES = ("sklearn", "scipy", "pandas", "numpy", "sqlalchemy", "transformers", "airflow", "torch", "alembic",
            "pydantic", "jinja2", "faker", "great_expectations", "evidently")
_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def _first_sentence(doc: str) -> str | None:
    text = " ".join(doc.strip().split())
    match = _SENTENCE.match(text)
    if not match:
        return None
    sentence = match.group(1)
    words = sentence.split()
    letters = sum(ch.isalpha() or ch == " " for ch in sentence) / max(1, len(sentence))
    if not 6 <= len(words) <= 30 or letters < 0.9 or any(ch in sentence for ch in "`=<>{}[]_\\|"):
        return None
    return sentence


def sentences(limit: int, seed: int = 0) -> list[str]:
    """Up to `limit` distinct docstring first sentences, the same ones for a seed on the same installation."""
    import importlib.util

    found: set[str] = set()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for path in sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    if doc and (sentence := _first_sentence(doc)):
                        found.add(sentence)
    ordered = sorted(found)
    random.Random(seed).shuffle(ordered)
    return ordered[:limit]


@dataclass(frozen=True)
class Split:
    kind: str
    targets: list[str]
    attacker: list[str]


def splits(cache_dir: Path, kinds: tuple[str, ...] = MAIN_KINDS) -> dict[str, Split]:
    """Targets and the disjoint in-domain attacker set of each kind, for fixed seeds."""
    from audits import general

    out = {}
    for kind in kinds:
        if kind == "docstrings":
            listing = Path(cache_dir) / "corpora" / "docstrings.json"
            if not listing.is_file():
                listing.parent.mkdir(parents=True, exist_ok=True)
                listing.write_text(json.dumps(sentences(DOC_TARGETS + DOC_INDOMAIN, seed=SEEDS[kind])))
            texts = json.loads(listing.read_text())
            out[kind] = Split(kind, texts[:DOC_TARGETS], texts[DOC_TARGETS:DOC_TARGETS + DOC_INDOMAIN])
            continue
        texts = general.build(cache_dir, KINDS[kind])
        order = list(range(len(texts)))
        random.Random(SEEDS[kind]).shuffle(order)
        picked = [texts[i] for i in order[:TARGETS + INDOMAIN]]
        out[kind] = Split(kind, picked[:TARGETS], picked[TARGETS:])
    return out


def general_corpus(cache_dir: Path, size: int = GENERAL_SIZE, kinds: tuple[str, ...] = MAIN_KINDS) -> list[str]:
    """General English from all sources, none of the targets' or in-domain attackers' sentences."""
    from audits import general

    exclude = [t for s in splits(cache_dir, kinds).values() for t in (*s.targets, *s.attacker)]
    return general.sentences(size, GENERAL_SEED, cache_dir=cache_dir, exclude=exclude)


def encoder():
    from audits.encoders import LocalEncoder, bundled_model_dir

    return LocalEncoder(bundled_model_dir())


def embed(cache_dir: Path, texts: list[str], enc=None) -> np.ndarray:
    """Clean embeddings, cached per CHUNK sentences (a longer list reuses a shorter one's chunks)."""
    from audits.pipeline import EmbeddingCache

    cache = EmbeddingCache(Path(cache_dir) / "embeddings")
    enc = enc or encoder()
    parts = [cache.encode(enc, texts[i:i + CHUNK]) for i in range(0, len(texts), CHUNK)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, enc.dimension), np.float32)


def prepare(cache_dir: Path, general_size: int = GENERAL_SIZE, kinds: tuple[str, ...] = MAIN_KINDS) -> None:
    """Embed every corpus once (cached); logs how long it took."""
    enc = encoder()
    for split in splits(cache_dir, kinds).values():
        started = time.perf_counter()
        embed(cache_dir, split.targets, enc), embed(cache_dir, split.attacker, enc)
        log.info("%s embedded in %.0f s", split.kind, time.perf_counter() - started)
    started = time.perf_counter()
    embed(cache_dir, general_corpus(cache_dir, general_size), enc)
    log.info("general corpus (%d) embedded in %.0f s", general_size, time.perf_counter() - started)


def _oracle(cache_dir: Path, enc):
    """The clean pipeline as the attacker's oracle; what it embeds here (public words, the
    benchmark's own sentences) is cached like every other corpus."""
    from audits.pipeline import EmbeddingCache

    cache = EmbeddingCache(Path(cache_dir) / "embeddings")
    return lambda texts: cache.encode(enc, list(texts))


def _sample(texts: list[str], vectors: np.ndarray):
    from audits.results import Sample

    return Sample(tuple(map(str, range(len(texts)))), vectors, tuple(texts), "bench")


def bow_figures(cache_dir: Path, general_size: int = GENERAL_SIZE, kinds: tuple[str, ...] = MAIN_KINDS,
                params: dict | None = None, out: dict | None = None) -> dict[str, float]:
    """bow_inversion (default settings unless `params`) per kind: in-domain 5,500 attackers, then
    those plus the general corpus. Also the plain MLP's F1 from the same fit (`_mlp`), fit and
    400-target scoring seconds."""
    from audits.metrics import set_prf
    from audits.probes.base import Auxiliary
    from audits.probes.bow_inversion import BowInversion, _stop_words, content_words

    enc = encoder()
    oracle = _oracle(cache_dir, enc)
    general = general_corpus(cache_dir, general_size) if general_size else []
    general_vectors = embed(cache_dir, general, enc) if general else None
    stop = _stop_words()
    figures = {} if out is None else out
    for kind, split in splits(cache_dir, kinds).items():
        targets, attacker = embed(cache_dir, split.targets, enc), embed(cache_dir, split.attacker, enc)
        actual = [content_words(t, stop) for t in split.targets]
        settings = {f"indomain_{len(split.attacker)}": (split.attacker, attacker)}
        if general:
            settings["general"] = (split.attacker + general, np.concatenate([attacker, general_vectors]))
        for setting, (texts, vectors) in settings.items():
            started = time.perf_counter()
            probe = BowInversion(**(params or {})).fit(Auxiliary(tuple(texts), vectors, embed=oracle))
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            probe.predict(targets[:400])
            score_seconds = time.perf_counter() - started
            scores = {s.metric: s.value for s in probe.score(_sample(split.targets, targets))}
            mlp = probe._predict_sets(probe._probabilities(targets), probe.threshold_)
            mlp_f1 = float(np.mean([set_prf(p, a)[2] for p, a in zip(mlp, actual, strict=True) if a]))
            name = f"real_text_bow_f1_{setting}"
            figures[f"{name}_{kind}"] = round(scores["token_f1"], 3)
            figures[f"{name}_{kind}_precision"] = round(scores["token_precision"], 3)
            figures[f"{name}_{kind}_recall"] = round(scores["token_recall"], 3)
            figures[f"{name}_{kind}_mlp"] = round(mlp_f1, 3)
            figures[f"real_text_bow_fit_seconds_{setting}_{kind}"] = round(fit_seconds, 1)
            figures[f"real_text_bow_score400_seconds_{setting}_{kind}"] = round(score_seconds, 2)
            figures[f"real_text_bow_aux_texts_{setting}_{kind}"] = len(texts)
            log.info("%s %s: %s", kind, setting, {k: v for k, v in figures.items() if kind in k and setting in k})
    for setting in ("indomain_5500", "general"):
        values = [figures[f"real_text_bow_f1_{setting}_{k}"] for k in MAIN_KINDS
                  if f"real_text_bow_f1_{setting}_{k}" in figures]
        if len(values) == len(MAIN_KINDS):
            figures[f"real_text_bow_f1_{setting}"] = round(float(np.mean(values)), 3)
    return figures


def generative_figures(cache_dir: Path, kinds: tuple[str, ...] = MAIN_KINDS, targets: int = 200,
                       steps: tuple[int, ...] = (0, 1, 3), params: dict | None = None) -> dict[str, float]:
    """generative_inversion trained on each kind's in-domain 5,500 (defaults unless `params`), on
    `targets` of its targets: BLEU and token F1 without correction (reranked beam only) and after
    each number of correction steps in `steps`; `real_text_generative_bleu(_corrected)` are the
    means over the kinds without and with the probe's default number of steps."""
    from audits.probes.base import Auxiliary
    from audits.probes.bow_inversion import _stop_words, content_words
    from audits.probes.generative_inversion import GenerativeInversion, _bleu_with_ci, _output_words

    enc = encoder()
    stop = _stop_words()
    out: dict[str, float] = {}
    default_steps = GenerativeInversion().correction_steps
    for kind, split in splits(cache_dir, kinds).items():
        vectors = embed(cache_dir, split.targets[:targets], enc)
        attacker = embed(cache_dir, split.attacker, enc)
        started = time.perf_counter()
        probe = GenerativeInversion(**(params or {})).fit(Auxiliary(tuple(split.attacker), attacker, embed=enc.encode))
        out[f"real_text_generative_fit_seconds_{kind}"] = round(time.perf_counter() - started, 1)
        truths = split.targets[:targets]
        for n in steps:
            started = time.perf_counter()
            outputs = probe.invert(vectors, correction_steps=n)
            seconds = time.perf_counter() - started
            bleu = _bleu_with_ci(outputs, truths, 0, 10)[0]
            f1 = np.mean([set_f1(_output_words(o, stop), a) for o, t in zip(outputs, truths, strict=True)
                          if (a := content_words(t, stop))])
            out[f"real_text_generative_bleu_{kind}_steps{n}"] = round(bleu, 2)
            out[f"real_text_generative_f1_{kind}_steps{n}"] = round(float(f1), 3)
            out[f"real_text_generative_seconds_{kind}_steps{n}"] = round(seconds, 1)
            log.info("generative %s, %d correction steps: BLEU %.2f, F1 %.3f, %.0f s (%d targets); e.g. %r -> %r",
                     kind, n, bleu, f1, seconds, len(truths), truths[0], outputs[0])
    for name, n in (("real_text_generative_bleu", 0), ("real_text_generative_bleu_corrected", default_steps),
                    ("real_text_generative_f1", 0), ("real_text_generative_f1_corrected", default_steps)):
        metric = "bleu" if "bleu" in name else "f1"
        values = [out.get(f"real_text_generative_{metric}_{k}_steps{n}") for k in kinds]
        if all(v is not None for v in values):
            out[name] = round(float(np.mean(values)), 3)
    return out


def set_f1(predicted: set[str], actual: set[str]) -> float:
    from audits.metrics import set_prf

    return set_prf(predicted, actual)[2]


def figures(cache_dir: Path, general_size: int = GENERAL_SIZE, kinds: tuple[str, ...] = MAIN_KINDS,
            generative: bool = False) -> dict[str, float]:
    """The flat dict of real-text figures for benchmarks/run.py."""
    out = bow_figures(cache_dir, general_size, kinds)
    if generative:
        out.update(generative_figures(cache_dir, kinds=kinds))
    return out


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".bench/cache")
    size = int(sys.argv[2]) if len(sys.argv) > 2 else GENERAL_SIZE
    what = sys.argv[3] if len(sys.argv) > 3 else "prepare"
    if what == "prepare":
        prepare(root, size)
    else:
        result = figures(root, size, generative=what == "all") if what in ("bow", "all") else \
            generative_figures(root)
        print(json.dumps(result, indent=1, sort_keys=True))
