"""`embwarden audit`: probe a model directory before it is deployed, same code path as the DAG.

Texts come from JSONL files (`{"text", "secrets"?, "label"?}` per line); the targets are
embedded through the pipeline under test (encoder + optional Gaussian noise) and each probe is
fitted on the auxiliary file, or loaded from the model cache. The output holds numbers only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter, ValidationError

from audits import corpora
from audits.audit import Auditor, embed_corpus, has, needs_of
from audits.encoders import LocalEncoder, resolve_model_dir
from audits.errors import ConfigError
from audits.pipeline import Pipeline
from audits.probes import PROBES, make_probe
from audits.transforms import GaussianNoise, Identity, describe_guarantee, make_transform
from monitors.config import MAX_SIGMA, TransformConfig, format_errors

# generative_inversion trains for minutes: run it when asked for by name.
DEFAULT_PROBES = ("bow_inversion", "candidate_inversion", "attribute_inference")


@dataclass(frozen=True)
class AdhocAudit:
    encoder: str
    aux: Path | str      # a JSONL/Parquet file, `synthetic[:SIZE]` or `general[:SIZE]`, or several joined by +
    targets: Path
    noise_sigma: float = 0.0
    transform: dict | None = None   # a transform spec as in embwarden.yaml; excludes noise_sigma
    probes: tuple[str, ...] | None = None
    seed: int = 0
    params: dict | None = None
    cache_dir: Path | None = None
    naive: bool = False


def run(spec: AdhocAudit) -> dict:
    """Audit as `spec` says; returns the JSON document `embwarden audit --json` writes."""
    started = time.perf_counter()
    params = spec.params or {}
    unknown = sorted(set(spec.probes or ()) - set(PROBES))
    if unknown:
        raise ConfigError(f"--probes: unknown probe(s) {unknown}; expected some of {sorted(PROBES)}")
    if not isinstance(params, dict):
        raise ConfigError(f"--params: expected a JSON object of probe -> parameters, found {type(params).__name__}")
    bad = sorted(set(params) - set(PROBES))
    if bad:
        raise ConfigError(f"--params: unknown probe(s) {bad}; expected some of {sorted(PROBES)}")
    for name, probe_params in params.items():   # every parameter checked before anything is embedded
        make_probe(name, probe_params, seed=spec.seed)
    if not (0 <= spec.seed < 2**32):
        raise ConfigError(f"--seed: expected an integer from 0 to {2**32 - 1}, found {spec.seed}")
    if not (0 <= spec.noise_sigma <= MAX_SIGMA):
        raise ConfigError(f"--noise-sigma: expected a number from 0 to {MAX_SIGMA}, found {spec.noise_sigma}")
    if spec.transform is not None and spec.noise_sigma > 0:
        raise ConfigError("give --transform or --noise-sigma, not both")
    if spec.transform is not None:
        try:
            transform = make_transform(TypeAdapter(TransformConfig).validate_python(spec.transform).spec())
        except ValidationError as exc:
            raise ConfigError("--transform: " + format_errors(exc)) from None
    else:
        transform = GaussianNoise(spec.noise_sigma) if spec.noise_sigma > 0 else Identity()
    pipeline = Pipeline(LocalEncoder(resolve_model_dir(spec.encoder)), transform)
    aux = attacker_corpus(spec.aux, spec.seed, spec.cache_dir)
    target_texts = corpora.read_file(spec.targets)

    auditor = Auditor(pipeline, aux, seed=spec.seed, cache_dir=spec.cache_dir, naive=spec.naive)
    t0 = time.perf_counter()
    targets = embed_corpus(pipeline, target_texts, np.random.default_rng(spec.seed + 2), "adhoc", prefix="target-")
    timings = {"embed_targets_seconds": round(time.perf_counter() - t0, 3)}

    skipped = {}
    names = list(spec.probes or DEFAULT_PROBES)
    if spec.probes is None:  # by default, only the probes these targets can feed
        for name in list(names):
            needs = needs_of(make_probe(name, params.get(name), seed=spec.seed))
            if not has(targets, needs):
                skipped[name] = f"targets lack {', '.join(sorted(needs))}"
                names.remove(name)
    results = [auditor.run(name, params.get(name), {"targets": targets}) for name in names]
    coverage = auditor.coverage(targets)
    timings.update(auditor.timings)
    for result in results:
        timings.update({f"{result.probe}.{k}": v for k, v in result.timings.items()})
    timings["total_seconds"] = round(time.perf_counter() - started, 3)
    return {
        "scores": [s.to_dict() for r in results for s in r.scores],
        "timings": timings,
        "errors": {r.probe: r.error for r in results if r.error},
        "skipped": skipped,
        "cached": {r.probe: r.cached for r in results if not r.error},
        "coverage": judge_coverage(coverage),
        "setup": {"encoder": spec.encoder, "noise_sigma": spec.noise_sigma, "transform": repr(transform),
                  "guarantee": describe_guarantee(transform), "seed": spec.seed,
                  "attacker": "naive" if spec.naive else "noise_aware", "auxiliary_texts": len(aux),
                  "targets": len(targets)},
    }


def write(document: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def attacker_corpus(spec: Path | str, seed: int, cache_dir: Path | None) -> corpora.Corpus:
    """`--aux`: a file, `synthetic[:SIZE]` or `general[:SIZE]`, or several of them joined by `+`."""
    from audits import general
    from monitors.attacker import combine

    parts = []
    for item in str(spec).split("+"):
        kind, _, size = item.partition(":")
        if kind in ("synthetic", "general") and not Path(item).exists():
            try:
                n = int(size) if size else (3000 if kind == "synthetic" else 20_000)
            except ValueError:
                raise ConfigError(f"--aux {item}: expected {kind}:SIZE with a whole number, found {size!r}") from None
            if n < 20:
                raise ConfigError(f"--aux {item}: expected a size of at least 20, found {n}")
            parts.append(corpora.synthetic(n, seed + 1) if kind == "synthetic" else
                         corpora.Corpus(tuple(general.sentences(n, seed + 1, cache_dir))))
        else:
            parts.append(corpora.read_file(Path(item)))
    return parts[0] if len(parts) == 1 else combine(parts)


def judge_coverage(result) -> dict:
    """Coverage against the default levels: covered or not, the scores, and what to do when not."""
    from monitors.coverage import DEFAULT_THRESHOLDS, explain
    from monitors.policy import evaluate

    if result.error:
        return {"covered": False, "scores": [], "error": result.error,
                "explanation": f"coverage could not be measured ({result.error}); the scores cannot be judged"}
    verdict = evaluate(result.scores, DEFAULT_THRESHOLDS)
    document = {"covered": bool(verdict.covered), "scores": [s.to_dict() for s in result.scores],
                "levels": {m: lv.warn for m, lv in DEFAULT_THRESHOLDS.items()}}
    if not verdict.covered:
        document["explanation"] = explain(verdict.uncovered)
    return document
