"""`embwarden audit`: probe a model directory before it is deployed, same code path as the DAG.

Texts come from JSONL files (`{"text", "secrets"?, "label"?}` per line); the targets are
embedded through the pipeline under test (encoder + optional Gaussian noise) and each probe is
fitted on the auxiliary file, or loaded from the model cache. The output holds numbers only.
"""

from __future__ import annotations

import argparse
import json
import sys
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
from monitors.candidates import EXIT_CODES
from monitors.cli.args import json_object, names, number
from monitors.config import MAX_SIGMA, TransformConfig, format_errors

# generative_inversion trains for minutes: run it when asked for by name.
DEFAULT_PROBES = ("bow_inversion", "candidate_inversion", "attribute_inference")


def add_parser(sub) -> None:
    au = sub.add_parser("audit", help="judge a candidate version with a deployment's thresholds (CI check), or "
                                      "probe a model directory on your own texts",
                        description="Two forms. With --deployment: judge a candidate version (from embwarden.yaml, "
                                    "or --version-spec FILE) with the deployment's probes and thresholds; the exit "
                                    "code says the verdict: " + ", ".join(f"{v} {c}" for v, c in EXIT_CODES.items())
                                    + ", 2 bad input. Without: probe --encoder on --targets, the attacker trained "
                                      "on --aux.")
    au.add_argument("--deployment", help="judge a candidate of this deployment (the CI pre-deploy check)")
    au.add_argument("--version", help="with --deployment: the candidate's version name (in embwarden.yaml, or "
                                      "the name to give --version-spec; default 'candidate')")
    au.add_argument("--version-spec", type=Path,
                    help="with --deployment: a YAML/JSON file with the candidate's `encoder` and `transform`, "
                         "as a version in embwarden.yaml")
    au.add_argument("--strict", action="store_true", help="with --deployment: a warn verdict exits 1")
    au.add_argument("--encoder", help="Hugging Face model directory, or bundled:all-MiniLM-L6-v2")
    au.add_argument("--aux",
                    help="the attacker's texts: a JSONL or Parquet file, synthetic[:SIZE] (templated PII messages), "
                         "general[:SIZE] (real English from Debian's packages), or several joined by +")
    au.add_argument("--targets", type=Path, help="texts to attack: JSONL or Parquet")
    au.add_argument("--noise-sigma", type=number("--noise-sigma"), default=0.0,
                    help="Gaussian noise the pipeline adds (default 0)")
    au.add_argument("--transform", type=json_object("--transform"), default=None,
                    help="the pipeline's transform as in embwarden.yaml, e.g. "
                         '\'{"kind": "clip_gaussian", "epsilon": 1000}\'')
    au.add_argument("--probes", type=lambda v: tuple(names(v)),
                    help="comma-separated probes (default: the CPU probes the targets can feed)")
    au.add_argument("--params", type=json_object("--params"), default=None,
                    help='probe parameters as JSON, e.g. \'{"bow_inversion": {"epochs": 10}}\'')
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--naive", action="store_true", help="train on clean vectors (a noise-unaware attacker)")
    au.add_argument("--cache", type=Path, default=Path(".embwarden/cache"),
                    help="embeddings and fitted attack models are cached here (default .embwarden/cache)")
    au.add_argument("--json", type=Path, dest="json_out", help="where to write the scores (required without "
                                                                 "--deployment or --layers; with --layers, - prints "
                                                                 "them instead of the table)")
    au.add_argument("--layers", nargs="?", const="all", metavar="all|0,3,6|2-4",
                    help="audit each transformer layer of a local encoder (0 = the embedding output, the last = "
                         "the output): --encoder DIR --aux ... [--targets FILE|canaries:COUNT, default 200 "
                         "canaries], or --deployment NAME [--version V]")
    au.add_argument("--report", type=Path, metavar="PATH.html",
                    help="with --layers: an HTML page with token F1 per layer and what to do about it")
    au.set_defaults(handler=run, log_level="INFO")


def run(args: argparse.Namespace) -> int:
    if args.layers is not None:
        from monitors.cli import audit_layers

        return audit_layers.run(args)
    if args.report is not None:
        raise ConfigError("audit: --report goes with --layers (a layer audit's HTML page)")
    if args.deployment:
        return run_candidate(args)
    missing = [flag for flag, value in (("--encoder", args.encoder), ("--aux", args.aux), ("--targets", args.targets),
                                        ("--json", args.json_out)) if value is None]
    if missing:
        raise ConfigError(f"audit: {', '.join(missing)} required (or --deployment NAME to judge a candidate)")
    document = audit(AdhocAudit(
        encoder=args.encoder, aux=args.aux, targets=args.targets, noise_sigma=args.noise_sigma,
        transform=args.transform, probes=args.probes, seed=args.seed, params=args.params, cache_dir=args.cache,
        naive=args.naive))
    write(document, args.json_out)
    for score in document["scores"]:
        print(f"{score['probe']}.{score['metric']} = {score['value']:.3f} "
              f"[{score['ci_low']:.3f}, {score['ci_high']:.3f}] n={score['n']}")
    coverage = document["coverage"]
    print("coverage: " + ("covered" if coverage["covered"] else "NOT COVERED") + " (" + ", ".join(
        f"{c['metric']} {c['value']:.3f}" for c in coverage["scores"]) + ")")
    if not coverage["covered"]:
        print(f"embwarden: inconclusive: {coverage['explanation']}", file=sys.stderr)
    for probe, why in document["skipped"].items():
        print(f"skipped {probe}: {why}")
    for probe, error in document["errors"].items():
        print(f"embwarden: {probe} failed: {error}", file=sys.stderr)
    print(f"written to {args.json_out}")
    return 1 if document["errors"] else 0


def run_candidate(args: argparse.Namespace) -> int:
    """`--deployment`: the candidate's verdict, as an exit code a CI job can gate on."""
    from monitors.candidates import EXIT_CODES, judge, with_version
    from monitors.config import load_config

    given = [flag for flag, value in (("--encoder", args.encoder), ("--aux", args.aux), ("--targets", args.targets),
                                      ("--noise-sigma", args.noise_sigma or None), ("--transform", args.transform))
             if value is not None]
    if given:
        raise ConfigError(f"audit --deployment: {', '.join(given)} belong to the other form; the candidate's pipeline "
                          "comes from --version or --version-spec")
    config = load_config(args.config)
    version = args.version or ("candidate" if args.version_spec else None)
    if version is None:
        raise ConfigError("audit --deployment: give --version NAME (in embwarden.yaml) or --version-spec FILE")
    if args.version_spec:
        config = with_version(config, args.deployment, version, args.version_spec)
    try:
        result = judge(config, args.deployment, version)
    except ConfigError:
        raise
    except Exception as exc:   # a source, encoder or ledger that cannot be reached, a crash: no verdict
        print(f"embwarden: {args.deployment} {version}: error: the audit could not run "
              f"({type(exc).__name__}: {exc}) -> exit {EXIT_CODES['error']}", file=sys.stderr)
        return EXIT_CODES["error"]
    for score in result.scores:
        print(f"{score.probe}.{score.metric} = {score.value:.3f} [{score.ci_low:.3f}, {score.ci_high:.3f}] n={score.n}")
    for probe, error in result.errors.items():
        print(f"embwarden: {probe} failed: {error}", file=sys.stderr)
    code = 1 if result.verdict == "warn" and args.strict else EXIT_CODES[result.verdict]
    if args.json_out:
        write({**result.to_json(), "exit_code": code}, args.json_out)
    print(f"{args.deployment} {version}: {result.verdict} ({result.reason}; thresholds from {result.thresholds_from}, "
          f"{result.sample_size} {result.target} texts) -> exit {code}")
    return code


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


def audit(spec: AdhocAudit) -> dict:
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
    from monitors.auxiliary_corpus import combine

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
    from monitors.verdicts import evaluate

    if result.error:
        return {"covered": False, "scores": [], "error": result.error,
                "explanation": f"coverage could not be measured ({result.error}); the scores cannot be judged"}
    verdict = evaluate(result.scores, DEFAULT_THRESHOLDS)
    document = {"covered": bool(verdict.covered), "scores": [s.to_dict() for s in result.scores],
                "levels": {m: lv.warn for m, lv in DEFAULT_THRESHOLDS.items()}}
    if not verdict.covered:
        document["explanation"] = explain(verdict.uncovered)
    return document
