"""The privacy-utility frontier of a deployment: one transform kind, swept over its strength.

For each strength of the grid (epsilon for `clip_gaussian` and `vmf`, sigma for
`gaussian_noise`, the output dimension for `random_projection`, bits for `quantize`), the base
version's encoder followed by that transform is

* attacked by the deployment's probes, trained noise-aware (on the auxiliary corpus embedded
  through that very transform) and scored on canaries; and
* used for retrieval: recall@10 of paraphrase pairs (audits.paraphrase), queries and documents
  both through the transform with fresh noise, cosine nearest neighbours among all documents.

A point passes when none of its scores reaches a `gate` or `rollback` level of the deployment's
thresholds (those in force in the ledger when it is reachable, else the file's), judged on each
threshold's basis exactly as an audit would. The recommendation is the passing point with the
smallest utility loss against no transform (on a tie, the weakest transform), with the command
that adds it as a new version. Everything measured is synthetic (auxiliary corpus, canaries,
paraphrases); the record is `frontier.json` and `frontier.html` under
`<artifacts root>/frontier/<deployment>/<run>/`, pruned with the run folders. Nothing is
written to the ledger.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import numpy as np

from audits.errors import ConfigError
from audits.results import Score
from monitors.policy import Levels

log = logging.getLogger(__name__)

K = 10                    # recall@K
DEFAULT_PAIRS = 500
MIN_PAIRS = 50
MAX_PAIRS = 20_000
BLOCKING = ("gate", "rollback")
# Probes the sweep leaves out: they measure something other than what one release of a vector
# leaks, and each is a run of its own.
SKIPPED_PROBES = {
    "dp_audit": "a distinguishing game through the live pipeline; it checks a version's claimed epsilon, "
                "not its leakage (run it in the audit of the version you create)",
    "repeat_query": "averages repeated queries of one text; a separate question from one release's leakage "
                    "(run it in the audit of the version you create)",
}


@dataclass(frozen=True)
class Knob:
    """The transform field one kind's grid sets, and how to read it."""

    param: str
    defaults: tuple[float, ...]
    weaker_when_larger: bool    # more signal (less privacy) as the value grows
    integer: bool
    axis: str
    short: str


# Measured with all-MiniLM-L6-v2 on 500 paraphrase pairs (recall@10 without transform 1.0; chance
# 0.02): clip_gaussian eps 10: 0.03, 30: 0.04, 100: 0.15, 300: 0.78, 1000 and up: 1.0 (sigma 1.0,
# 0.43, 0.19, 0.097, 0.049); eps 1 (sigma 7.46) is as useless as 10, so the grid starts there.
# vmf eps 100: 0.03, 300: 0.32, 600: 0.94, 1000: 1.0. gaussian_noise sigma <= 0.05: 1.0, 0.1: 0.73,
# 0.2: 0.13, 0.5: 0.04. random_projection d 4: 0.63, 8: 0.85, 16: 0.99, 32 and up: 1.0. quantize
# keeps recall (1 bit: 1.0). Each grid spans useless (or the smallest setting) to lossless, with
# points where the curve bends.
KNOBS: dict[str, Knob] = {
    "clip_gaussian": Knob("epsilon", (10, 100, 300, 1000, 3000, 10000), True, False,
                          "epsilon per query (log scale; larger = less noise)", "eps"),
    "vmf": Knob("epsilon", (100, 300, 600, 1000, 3000, 10000), True, False,
                "epsilon per query (log scale; larger = less noise)", "eps"),
    "gaussian_noise": Knob("sigma", (0.01, 0.02, 0.05, 0.1, 0.2, 0.5), False, False,
                           "sigma per coordinate (log scale; larger = more noise)", "sigma"),
    "random_projection": Knob("dimension", (4, 8, 16, 32, 64, 128), True, True,
                              "output dimension (log scale; larger = more kept)", "d"),
    "quantize": Knob("bits", (1, 2, 4, 8), True, True, "bits per coordinate (larger = more kept)", "bits"),
}
KINDS = tuple(KNOBS)


# -- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Utility:
    """Retrieval recall@K of paraphrase pairs: the share of queries whose own document is among
    the K nearest of all documents, with its exact binomial 95% interval."""

    recall: float
    ci_low: float
    ci_high: float
    queries: int
    documents: int
    k: int = K

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FrontierPoint:
    """One transform of the grid (or the no-transform baseline, `strength` None) and what it gives."""

    transform: dict
    label: str
    strength: float | None
    scores: dict[str, Score]
    utility: Utility
    utility_loss: float                       # baseline recall minus this point's
    passes_gates: bool
    failed: tuple[str, ...] = ()              # the thresholds crossed, one line each
    guarantee: str = "none"
    errors: dict[str, str] = field(default_factory=dict)   # probe -> why it produced no scores
    seconds: float = 0.0

    @property
    def baseline(self) -> bool:
        return self.strength is None

    def to_dict(self) -> dict:
        return {"transform": self.transform, "label": self.label, "strength": self.strength,
                "scores": {k: s.to_dict() for k, s in self.scores.items()}, "utility": self.utility.to_dict(),
                "utility_loss": self.utility_loss, "passes_gates": self.passes_gates, "failed": list(self.failed),
                "guarantee": self.guarantee, "errors": self.errors, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: Mapping) -> FrontierPoint:
        return cls(dict(data["transform"]), data["label"], data["strength"],
                   {k: Score.from_dict(s) for k, s in data["scores"].items()}, Utility(**data["utility"]),
                   data["utility_loss"], data["passes_gates"], tuple(data.get("failed", ())),
                   data.get("guarantee", "none"), dict(data.get("errors", {})), data.get("seconds", 0.0))


@dataclass(frozen=True)
class Recommendation:
    """The point to deploy, or None when no point of the grid passes; `message` says which and why."""

    message: str
    label: str | None = None
    transform: dict | None = None
    version: str | None = None      # a free version name for it
    command: str | None = None      # `embwarden versions add ...`
    utility_loss: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Frontier:
    deployment: str
    base_version: str
    kind: str
    param: str
    points: tuple[FrontierPoint, ...]          # the baseline first, then the grid by strength
    baseline_utility: float
    recommendation: Recommendation
    thresholds: dict[str, Levels]
    thresholds_source: str
    probes: tuple[str, ...]
    skipped: dict[str, str]
    notes: tuple[str, ...] = ()
    run_id: str = ""
    created_at: str = ""
    pairs: int = 0
    canaries: int = 0

    @property
    def grid(self) -> tuple[FrontierPoint, ...]:
        return tuple(p for p in self.points if not p.baseline)

    def to_dict(self) -> dict:
        return {"deployment": self.deployment, "base_version": self.base_version, "kind": self.kind,
                "param": self.param, "points": [p.to_dict() for p in self.points],
                "baseline_utility": self.baseline_utility, "recommendation": self.recommendation.to_dict(),
                "thresholds": {m: asdict(lv) for m, lv in self.thresholds.items()},
                "thresholds_source": self.thresholds_source, "probes": list(self.probes),
                "skipped": self.skipped, "notes": list(self.notes), "run_id": self.run_id,
                "created_at": self.created_at, "pairs": self.pairs, "canaries": self.canaries}

    @classmethod
    def from_dict(cls, data: Mapping) -> Frontier:
        return cls(data["deployment"], data["base_version"], data["kind"], data["param"],
                   tuple(FrontierPoint.from_dict(p) for p in data["points"]), data["baseline_utility"],
                   Recommendation(**data["recommendation"]),
                   {m: Levels(**lv) for m, lv in data["thresholds"].items()}, data["thresholds_source"],
                   tuple(data["probes"]), dict(data["skipped"]), tuple(data.get("notes", ())),
                   data.get("run_id", ""), data.get("created_at", ""), data.get("pairs", 0), data.get("canaries", 0))


# -- the grid ------------------------------------------------------------------------------------
def knob(kind: str) -> Knob:
    try:
        return KNOBS[kind]
    except KeyError:
        raise ConfigError(f"frontier: kind {kind!r} cannot be swept; expected one of {list(KINDS)}") from None


def grid(kind: str, strengths: Sequence[float] | None = None, base_transform: Mapping | None = None) -> list[dict]:
    """The transform specs of the sweep, ordered by strength value (ascending), each validated.

    Fields other than the swept one (delta, clip_norm, seed) come from the base version's
    transform when it is of the same kind.
    """
    kn = knob(kind)
    values = list(kn.defaults if not strengths else strengths)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"frontier: strengths must be finite numbers, found {v!r}")
        if kn.integer and float(v) != int(v):
            raise ConfigError(f"frontier: {kind}.{kn.param} takes whole numbers, found {v!r}")
    base = {k: v for k, v in dict(base_transform or {}).items() if k != kn.param} \
        if (base_transform or {}).get("kind") == kind else {"kind": kind}
    specs = []
    for v in sorted({int(v) if kn.integer or float(v).is_integer() else float(v) for v in values}):
        spec = {**base, kn.param: v}
        as_configured(spec)   # ConfigError naming the field when a value is out of range
        specs.append(spec)
    return specs


def as_configured(spec: Mapping) -> dict:
    """The transform as a version of it would be configured (validated, defaults filled): the sweep
    builds exactly the transform the created version will have, so the version's first audit
    finds the sweep's fitted attack models in the cache."""
    from pydantic import TypeAdapter, ValidationError

    from monitors.config import TransformConfig, format_errors

    try:
        return TypeAdapter(TransformConfig).validate_python(dict(spec)).spec()
    except ValidationError as exc:
        raise ConfigError(f"frontier: transform {dict(spec)}: {format_errors(exc)}") from None


def label_of(spec: Mapping) -> str:
    kind = spec.get("kind", "none")
    if kind == "none":
        return "no transform"
    kn = KNOBS.get(kind)
    return f"{kind} {kn.param}={_num(spec[kn.param])}" if kn else kind


def _num(v: float) -> str:
    return f"{v:g}"


def strength_rank(point: FrontierPoint, kind: str) -> float:
    """Orders a kind's points from the weakest transform (least noise: smallest rank) to the strongest."""
    if point.strength is None:
        return -math.inf
    return -point.strength if knob(kind).weaker_when_larger else point.strength


# -- judging and recommending (pure) -------------------------------------------------------------
def judge(scores: Mapping[str, Score], thresholds: Mapping[str, Levels],
          probes: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
    """Whether no score reaches a gate or rollback level; the crossed thresholds otherwise.

    A threshold of a probe the sweep ran whose score is missing (the probe failed) fails the
    point: it cannot be shown to pass. Thresholds of other checks (drift, skipped probes) are
    not judged here.
    """
    failed = []
    for metric, levels in sorted(thresholds.items()):
        if metric.split(".", 1)[0] not in probes or all(getattr(levels, lv) is None for lv in BLOCKING):
            continue
        score = scores.get(metric)
        if score is None:
            failed.append(f"{metric}: not measured (its probe failed)")
            continue
        level = levels.crossed(levels.judged(score))
        if level in BLOCKING:
            failed.append(f"{metric}: {levels.basis} {levels.judged(score):.3f} reaches {level} "
                          f"{getattr(levels, level):g}")
    return not failed, tuple(failed)


def version_name(kind: str, spec: Mapping, existing: Sequence[str] = ()) -> str:
    """A free version name saying what the version is, e.g. `clip_gaussian-eps3000`."""
    kn = knob(kind)
    base = f"{kind}-{kn.short}{_num(spec[kn.param])}".replace("+", "")[:60]
    name, n = base, 2
    while name in existing:
        name, n = f"{base}-{n}", n + 1
    return name


def version_command(deployment: str, name: str, spec: Mapping, from_version: str | None = None,
                    config_path: str | None = None) -> str:
    """The shell command that adds `spec` as version `name` of `deployment`."""
    parts = ["embwarden", "versions", "add", deployment, name, "--transform", json.dumps(dict(spec))]
    if from_version:
        parts += ["--from", from_version]
    if config_path:
        parts += ["--config", str(config_path)]
    return shlex.join(parts)


def recommend(points: Sequence[FrontierPoint], kind: str, deployment: str, existing_versions: Sequence[str] = (),
              from_version: str | None = None, config_path: str | None = None) -> Recommendation:
    """Among the grid's points that pass every gate, the one with the smallest utility loss; on a tie
    the weakest transform. None passes: no recommendation, and the message says how far the
    strongest point tried is from passing."""
    tried = [p for p in points if not p.baseline]
    baseline = next((p for p in points if p.baseline), None)
    passing = [p for p in tried if p.passes_gates]
    if not tried:
        return Recommendation("No transform was tried.")
    if not passing:
        strongest = max(tried, key=lambda p: strength_rank(p, kind))
        return Recommendation(
            f"No transform of the grid passes the gates: even the strongest tried, {strongest.label} "
            f"(recall@{K} {strongest.utility.recall:.3f}), crosses "
            f"{'; '.join(strongest.failed) or 'a gate'}. Nothing is recommended: sweep stronger settings, "
            "or review the thresholds.")
    best = min(passing, key=lambda p: (round(p.utility_loss, 9), strength_rank(p, kind)))
    name = version_name(kind, best.transform, existing_versions)
    note = ""
    if baseline is not None and baseline.passes_gates:
        note = (" Without any transform the scores already pass the gates: a transform is not required by the "
                "thresholds, only chosen for margin.")
    without = best.utility.recall + best.utility_loss
    message = (f"{best.label}: it passes every gate, with the smallest loss of retrieval recall@{K} "
               f"({best.utility_loss:+.3f}: {best.utility.recall:.3f} against {without:.3f} without a transform) "
               f"of the {len(passing)} passing point{'s' if len(passing) != 1 else ''} of {len(tried)}.{note}")
    return Recommendation(message, best.label, dict(best.transform), name,
                          version_command(deployment, name, best.transform, from_version, config_path),
                          best.utility_loss)


# -- measuring -----------------------------------------------------------------------------------
def recall_at_k(queries: np.ndarray, documents: np.ndarray, k: int = K, chunk: int = 1024) -> Utility:
    """Query i's own document is documents[i]; cosine similarity, ties counted in its favour."""
    from audits.metrics import proportion_with_ci

    if len(queries) != len(documents) or len(queries) <= k:
        raise ConfigError(f"frontier: recall@{k} needs more than {k} pairs, found {len(queries)}")
    q = _unit(queries)
    d = _unit(documents)
    hits = 0
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ d.T
        own = sims[np.arange(len(sims)), np.arange(start, start + len(sims))]
        hits += int(((sims > own[:, None]).sum(axis=1) < k).sum())
    value, low, high = proportion_with_ci(hits, len(q))
    return Utility(value, low, high, len(q), len(d), k)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def gate_thresholds(config, deployment: str) -> tuple[dict[str, Levels], str]:
    """The thresholds the next audit would judge with, and where they came from.

    From the ledger when it is reachable: the configuration is synced into it inside a
    transaction that is rolled back (the thresholds come out as an audit would see them, and the
    sweep writes nothing). Otherwise the file's levels.
    """
    import sqlalchemy as sa

    from monitors.database import LedgerUnavailable, session_scope
    from monitors.ledger import Deployment
    from monitors.registry import effective_thresholds, sync_deployment

    dep_cfg = config.deployment(deployment)
    from_file = {metric: t.levels() for metric, t in dep_cfg.thresholds.items()}
    try:
        with session_scope() as session:
            source = "ledger"
            try:
                dep = sync_deployment(session, deployment, dep_cfg)
            except ConfigError as exc:   # the file contradicts the ledger: the ledger's levels as they are
                session.rollback()
                dep = session.scalar(sa.select(Deployment).where(Deployment.name == deployment))
                source = f"ledger (the file could not be synced: {exc})"
            levels = effective_thresholds(session, dep) if dep is not None else None
            session.rollback()
    except LedgerUnavailable as exc:
        return from_file, f"configuration file (ledger unavailable: {exc})"
    if levels is None:
        return from_file, "configuration file (the deployment is not in the ledger)"
    return levels, source


def sweep(config, deployment: str, kind: str | None = None, strengths: Sequence[float] | None = None,
          pairs: int = DEFAULT_PAIRS, probes: Sequence[str] | None = None, version: str | None = None,
          run_id: str = "", config_path: str | None = None) -> Frontier:
    """Measure every point of the grid (and no transform, the utility baseline)."""
    from audits import corpora
    from audits.audit import Auditor, embed_corpus
    from audits.paraphrase import paraphrase_pairs
    from audits.pipeline import EmbeddingCache, Pipeline
    from audits.probes import PROBES
    from audits.transforms import describe_guarantee, make_transform
    from monitors import attacker
    from monitors.config import CanaryConfig, uses_production
    from monitors.runs import _auditor_seed, build_pipeline, run_seed

    started = time.perf_counter()
    dep_cfg = config.deployment(deployment)
    base = version or dep_cfg.active_version
    if base not in dep_cfg.versions:
        raise ConfigError(f"deployments.{deployment}.versions: no version {base!r}; it has {sorted(dep_cfg.versions)}")
    base_transform = dep_cfg.versions[base].transform.spec()
    kind = kind or (base_transform["kind"] if base_transform["kind"] in KNOBS else "clip_gaussian")
    kn = knob(kind)
    specs = grid(kind, strengths, base_transform)
    if not MIN_PAIRS <= pairs <= MAX_PAIRS:
        raise ConfigError(f"frontier: pairs must be between {MIN_PAIRS} and {MAX_PAIRS}, found {pairs}")

    notes: list[str] = []
    skipped = {name: why for name, why in SKIPPED_PROBES.items() if name in dep_cfg.probes}
    wanted = list(probes) if probes else [p for p in dep_cfg.probes if p not in skipped]
    for name in wanted:
        if name not in PROBES:
            raise ConfigError(f"frontier: unknown probe {name!r}; expected one of {sorted(PROBES)}")
    if not wanted:
        raise ConfigError(f"frontier: {deployment} has no probe the sweep can run "
                          f"(configured: {sorted(dep_cfg.probes)}; skipped: {sorted(skipped)})")
    for name, why in skipped.items():
        log.info("frontier: probe %s skipped: %s", name, why)

    thresholds, thresholds_source = gate_thresholds(config, deployment)
    if not any(m.split(".", 1)[0] in wanted and any(getattr(lv, b) is not None for b in BLOCKING)
               for m, lv in thresholds.items()):
        notes.append("No gate or rollback threshold applies to the probes swept: every point passes trivially.")
    unjudged = sorted(m for m in thresholds if m.split(".", 1)[0] not in wanted)
    if unjudged:
        notes.append(f"Thresholds not judged by the sweep (not measured here): {', '.join(unjudged)}.")

    encoder = build_pipeline(config, deployment, base).encoder
    aux = attacker.public_corpus(config, deployment)
    if uses_production(dep_cfg.auxiliary_corpus):
        notes.append("The attacker's production slice exists only inside audit runs: the sweep trained on the "
                     "configured corpus without it, a weaker attacker than the audit's.")
    seed = _auditor_seed(config, deployment)
    cache_dir = config.resolve(config.cache_dir)
    cache = EmbeddingCache(cache_dir / "embeddings")
    can_cfg = dep_cfg.canaries if dep_cfg.canaries.count else CanaryConfig()
    if not dep_cfg.canaries.count:
        notes.append(f"canaries are off for {deployment} (count 0): the sweep scored {can_cfg.count} "
                     f"canaries of seed {can_cfg.seed}.")
    canaries = corpora.canaries(can_cfg.count, can_cfg.seed)
    aux_cfg = dep_cfg.auxiliary_corpus
    pair_seed = aux_cfg.seed if aux_cfg.kind == "synthetic" else 1
    if aux_cfg.kind != "synthetic":
        notes.append(f"The auxiliary corpus is a {aux_cfg.kind} corpus, whose texts have no paraphrases: utility "
                     "is measured on the built-in synthetic generator's paraphrase pairs (seed 1).")
    pp = paraphrase_pairs(pairs, pair_seed)
    clean_q = cache.encode(encoder, list(pp.queries))
    clean_d = cache.encode(encoder, list(pp.documents))

    measured: list[tuple[dict, float | None, dict[str, Score], dict[str, str], Utility, str, float]] = []
    for spec in [{"kind": "none"}, *specs]:
        point_started = time.perf_counter()
        transform = make_transform(as_configured(spec))
        pipeline = Pipeline(encoder, transform)
        label = label_of(spec)
        rng = np.random.default_rng(run_seed(deployment, "frontier", json.dumps(spec, sort_keys=True)))
        # Synthetic canaries only, so their clean encodings (and the oracle's) may be cached.
        auditor = Auditor(pipeline, aux, seed=seed, cache_dir=cache_dir, cache_oracle=True)
        targets = {"canaries": embed_corpus(pipeline, canaries, rng, base, prefix="canary-",
                                            cache=auditor.embedding_cache)}
        scores: dict[str, Score] = {}
        errors: dict[str, str] = {}
        for name in wanted:
            result = auditor.run(name, dep_cfg.probes.get(name, {}), targets)
            if result.error:
                errors[name] = result.error
            scores.update({s.key: s for s in result.scores})
        utility = recall_at_k(transform.apply(clean_q, rng), transform.apply(clean_d, rng))
        seconds = round(time.perf_counter() - point_started, 2)
        measured.append((spec, None if spec["kind"] == "none" else spec[kn.param], scores, errors, utility,
                         describe_guarantee(transform), seconds))
        log.info("frontier %s %s: recall@%d %.3f, %d scores, %d probe errors, %.1f s", deployment, label, K,
                 utility.recall, len(scores), len(errors), seconds)

    baseline_recall = measured[0][4].recall
    points = []
    for spec, strength, scores, errors, utility, guarantee, seconds in measured:
        passes, failed = judge(scores, thresholds, wanted)
        points.append(FrontierPoint(spec, label_of(spec), strength, scores, utility,
                                    round(baseline_recall - utility.recall, 9), passes, failed, guarantee,
                                    errors, seconds))
    from_version = base if base != dep_cfg.active_version else None
    recommendation = recommend(points, kind, deployment, list(dep_cfg.versions), from_version, config_path)
    log.info("frontier %s: %d points in %.1f s; %s", deployment, len(points), time.perf_counter() - started,
             recommendation.label or "no recommendation")
    return Frontier(deployment, base, kind, kn.param, tuple(points), baseline_recall, recommendation, dict(thresholds),
                    thresholds_source, tuple(wanted), skipped, tuple(notes), run_id,
                    datetime.now(UTC).isoformat(timespec="seconds"), len(pp), len(canaries))


# -- rendering -----------------------------------------------------------------------------------
def folder_for(config, deployment: str, run_id: str) -> Path:
    from monitors import artifacts

    return artifacts.run_dir(config.resolve(config.artifacts.root), "frontier", deployment, run_id)


def write(frontier: Frontier, folder: Path) -> tuple[Path, Path]:
    """frontier.json (the data) and frontier.html (rendered from it); numbers and names only."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = frontier.to_dict()
    json_path = folder / "frontier.json"
    json_path.write_text(json.dumps(data, indent=2))
    env = Environment(loader=PackageLoader("monitors", "templates"), autoescape=select_autoescape(["html"]))
    charts = [Markup(c) for c in charts_of(frontier)]
    metrics = sorted({m for p in frontier.points for m in p.scores})
    html_path = folder / "frontier.html"
    html_path.write_text(env.get_template("frontier.html").render(
        f=data, charts=charts, metrics=metrics, k=K, axis=knob(frontier.kind).axis))
    return json_path, html_path


def charts_of(frontier: Frontier) -> list[str]:
    """Utility, then each gated metric (or, without gates, each probe's first metric), against strength."""
    from audits.probes import PROBES

    grid_points = frontier.grid
    log_x = len(grid_points) > 1 and min(p.strength for p in grid_points) > 0 and \
        max(p.strength for p in grid_points) / min(p.strength for p in grid_points) >= 10
    baseline = next((p for p in frontier.points if p.baseline), None)
    chosen = frontier.recommendation.label
    axis = knob(frontier.kind).axis
    out = [strength_chart([_xy(p, p.utility.recall, p.utility.ci_low, p.utility.ci_high) for p in grid_points],
                          title=f"utility: retrieval recall@{K}", x_label=axis, log_x=log_x,
                          reference=baseline.utility.recall if baseline else None, highlight=chosen)]
    gated = [m for m, lv in sorted(frontier.thresholds.items())
             if m.split(".", 1)[0] in frontier.probes and any(getattr(lv, b) is not None for b in BLOCKING)]
    shown = gated or [f"{p}.{next(iter(PROBES[p].metrics))}" for p in frontier.probes if p in PROBES]
    for metric in shown:
        pts = [_xy(p, s.value, s.ci_low, s.ci_high) for p in grid_points if (s := p.scores.get(metric))]
        ref = baseline.scores.get(metric) if baseline else None
        levels = frontier.thresholds.get(metric)
        out.append(strength_chart(pts, title=f"leakage: {metric}", x_label=axis, log_x=log_x,
                                  levels=asdict(levels) if levels else None,
                                  reference=ref.value if ref else None, highlight=chosen))
    return out


def _xy(point: FrontierPoint, value: float, low: float, high: float) -> dict:
    return {"x": point.strength, "label": point.label, "value": value, "ci_low": low, "ci_high": high,
            "passes": point.passes_gates}


def strength_chart(points: Sequence[Mapping], *, title: str, x_label: str, log_x: bool,
                   levels: Mapping | None = None, reference: float | None = None, highlight: str | None = None,
                   width: int = 640, height: int = 190) -> str:
    """One measure against the transform's strength, drawn like monitors.charts.line_chart.

    points: {x, label, value, ci_low, ci_high, passes}; the 95% interval is a band, `levels`
    dashed lines, `reference` (the value without a transform) a dotted grey line; points that
    fail a gate are red, the point labelled `highlight` (the recommendation) is ringed.
    """
    from monitors.charts import BAND, GRID, LEVEL_COLOURS, LINE, MUTED, _fmt

    pts = sorted((dict(p) for p in points if math.isfinite(p["value"])), key=lambda p: p["x"])
    limits = [(name, float(levels[name])) for name in LEVEL_COLOURS
              if levels and isinstance(levels.get(name), int | float)]
    left, right, top, bottom = 48, 132, 24, 40
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}: {len(pts)} points">',
           f'<text x="{left}" y="15" font-size="13" fill="#1d2330" font-weight="600">{escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" font-size="12" fill="{MUTED}" '
                   'text-anchor="middle">not measured</text></svg>')
        return "".join(out)
    values = [v for p in pts for v in (p["value"], p["ci_low"], p["ci_high"])] + [v for _, v in limits]
    values += [reference] if reference is not None and math.isfinite(reference) else []
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    inset = 6

    def y(v: float) -> float:
        return top + inset + (hi - v) / (hi - lo) * (ph - 2 * inset)

    def pos(v: float) -> float:
        return math.log10(v) if log_x else v

    x_lo, x_hi = pos(pts[0]["x"]), pos(pts[-1]["x"])

    def x(v: float) -> float:
        return left + pw / 2 if x_hi == x_lo else left + 8 + (pos(v) - x_lo) / (x_hi - x_lo) * (pw - 16)

    for v in (hi, lo):
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 5}" y="{y(v) + 3.5:.1f}" font-size="10.5" fill="{MUTED}" '
                   f'text-anchor="end">{escape(_fmt(v))}</text>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#c5cad6"/>')
    for p in pts:
        out.append(f'<text x="{x(p["x"]):.1f}" y="{top + ph + 13}" font-size="10.5" fill="{MUTED}" '
                   f'text-anchor="middle">{escape(_fmt(p["x"]))}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 29}" font-size="10.5" fill="{MUTED}" '
               f'text-anchor="middle">{escape(x_label)} · shaded: 95% interval</text>')
    if len(pts) > 1:
        ring = [(x(p["x"]), y(p["ci_high"])) for p in pts] + [(x(p["x"]), y(p["ci_low"])) for p in reversed(pts)]
        out.append(f'<polygon points="{_coords(ring)}" fill="{BAND}" fill-opacity="0.45" stroke="none"/>')
        out.append(f'<polyline points="{_coords([(x(p["x"]), y(p["value"])) for p in pts])}" fill="none" '
                   f'stroke="{LINE}" stroke-width="1.6" stroke-linejoin="round"/>')
    labels: list[tuple[float, str, str, str]] = [(y(v), name, f"{name} {_fmt(v)}", LEVEL_COLOURS[name])
                                                 for name, v in limits]
    for ly, name, _, colour in labels:
        out.append(f'<line x1="{left}" y1="{ly:.1f}" x2="{left + pw}" y2="{ly:.1f}" stroke="{colour}" '
                   f'stroke-width="1.3" stroke-dasharray="5 4" class="level {name}"/>')
    if reference is not None and math.isfinite(reference):
        ry = y(reference)
        out.append(f'<line x1="{left}" y1="{ry:.1f}" x2="{left + pw}" y2="{ry:.1f}" stroke="{MUTED}" '
                   'stroke-width="1.1" stroke-dasharray="1.5 3" class="reference"/>')
        labels.append((ry, "reference", f"no transform {_fmt(reference)}", MUTED))
    placed: list[float] = []
    for ly, _, text, colour in sorted(labels):
        ty = max(ly + 3.5, placed[-1] + 11) if placed else ly + 3.5
        placed.append(ty)
        out.append(f'<text x="{left + pw + 5}" y="{ty:.1f}" font-size="10.5" fill="{colour}">{escape(text)}</text>')
    for p in sorted(pts, key=lambda p: p["label"] == highlight):
        tip = escape(f'{p["label"]}: {_fmt(p["value"])} (95% {_fmt(p["ci_low"])}–{_fmt(p["ci_high"])})'
                     f'{"" if p["passes"] else " · crosses a gate"}')
        colour = LINE if p["passes"] else LEVEL_COLOURS["gate"]
        if p["label"] == highlight:
            out.append(f'<circle cx="{x(p["x"]):.1f}" cy="{y(p["value"]):.1f}" r="5.5" fill="#fff" stroke="#1d2330" '
                       f'stroke-width="2.2" class="recommended"><title>recommended: {tip}</title></circle>')
        else:
            out.append(f'<circle cx="{x(p["x"]):.1f}" cy="{y(p["value"]):.1f}" r="3" fill="{colour}" '
                       f'class="{"pass" if p["passes"] else "fail"}"><title>{tip}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _coords(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in points)


# -- entry points (the DAG's task, the CLI) ------------------------------------------------------
def run(deployment: str, kind: str | None = None, strengths: Sequence[float] | None = None,
        pairs: int = DEFAULT_PAIRS, run_id: str | None = None, config_path: str | None = None,
        probes: Sequence[str] | None = None, version: str | None = None) -> tuple[Frontier, Path, Path]:
    """Sweep and write the artifacts; returns the frontier and the paths of its JSON and HTML."""
    from monitors.config import load_config

    config = load_config(config_path)
    run_id = run_id or "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    frontier = sweep(config, deployment, kind, strengths, pairs, probes, version, run_id, config_path)
    json_path, html_path = write(frontier, folder_for(config, deployment, run_id))
    return frontier, json_path, html_path


def task(deployment: str, kind: str | None, strengths: Sequence[float] | None, pairs: int, run_id: str) -> dict:
    """The privacy_frontier DAG's task: sweep, write the artifacts, return references only.

    Bad params or configuration fail once (no retry); an unreachable ledger only changes where
    the thresholds come from.
    """
    from audits.errors import EmbwardenError
    from monitors.runs import _no_retry

    try:
        frontier, json_path, html_path = run(deployment, kind, list(strengths) if strengths else None, pairs, run_id)
    except EmbwardenError as exc:
        raise _no_retry(exc) from exc
    rec = frontier.recommendation
    return {"deployment": deployment, "kind": frontier.kind, "points": len(frontier.grid),
            "passing": sum(p.passes_gates for p in frontier.grid), "json": str(json_path), "html": str(html_path),
            "recommendation": rec.label, "version": rec.version, "command": rec.command}


def table(frontier: Frontier) -> str:
    """The points as a plain-text table, for the CLI."""
    gated = [m for m, lv in sorted(frontier.thresholds.items())
             if m.split(".", 1)[0] in frontier.probes and any(getattr(lv, b) is not None for b in BLOCKING)]
    headline = gated or sorted({m for p in frontier.points for m in p.scores})[:4]
    head = ["transform", f"recall@{K}", "95% interval", "loss", *headline, "gates"]
    rows = []
    for p in frontier.points:
        rows.append([p.label, f"{p.utility.recall:.3f}", f"{p.utility.ci_low:.3f}-{p.utility.ci_high:.3f}",
                     "—" if p.baseline else f"{p.utility_loss:+.3f}",
                     *(f"{p.scores[m].value:.3f}" if m in p.scores else "—" for m in headline),
                     ("pass" if p.passes_gates else "FAIL") + (" (baseline)" if p.baseline else "")])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [head, *rows])
