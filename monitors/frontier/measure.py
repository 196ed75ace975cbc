"""The privacy-utility frontier of a deployment: one or more transform kinds, each swept over its strength.

For each strength of each kind's grid (epsilon for `clip_gaussian`, `vmf` and `jl_gaussian`,
sigma for `gaussian_noise`, the output dimension for `random_projection`, bits for `quantize`,
the mutual-information budget for `pac_gaussian`, the components kept for `spectral`, the privacy
weight for `adversarial`), the base version's encoder followed by that transform is

* attacked by the deployment's probes, trained noise-aware (on the auxiliary corpus embedded
  through that very transform, the pipeline as the attacker's oracle) and scored on canaries; and
* used for retrieval: recall@10 of paraphrase pairs (audits.paraphrase), queries and documents
  both through the transform with fresh noise, cosine nearest neighbours among all documents.

A fitted kind (pac_gaussian, spectral on a PCA basis, adversarial) is fitted for each grid spec
before it is measured (monitors.fitted_transforms: the public auxiliary corpus through the base
version's encoder, the artifact under `<artifacts root>/transforms/<deployment>/`), so the point
measured is exactly the transform a version made from it pins: its spec carries the artifact and
its SHA-256.

A point passes when none of its scores reaches a `gate` or `rollback` level of the deployment's
thresholds (those in force in the ledger when it is reachable, else the file's), judged on each
threshold's basis exactly as an audit would. All kinds share the no-transform baseline. The
recommendation is the passing point with the smallest utility loss against no transform, across
kinds (on a tie, the weakest transform of a kind, then the first kind in KINDS' order), with the
command that adds it as a new version. Everything measured is synthetic (auxiliary corpus,
canaries, paraphrases); the record is `frontier.json` and `frontier.html` under
`<artifacts root>/frontier/<deployment>/<run>/`, pruned with the run folders. Nothing is
written to the ledger.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from audits.errors import ConfigError
from audits.results import Score
from audits.storage import Location
from monitors.frontier.grid import (
    DEFAULT_PAIRS,
    KNOBS,
    MAX_PAIRS,
    MIN_PAIRS,
    as_configured,
    grids,
    kinds_of,
    knob,
    label_of,
)
from monitors.frontier.recommend import judge, recommend
from monitors.frontier.render import folder_for, write
from monitors.frontier.results import BLOCKING, Frontier, FrontierPoint, K, Utility
from monitors.thresholds import Levels

log = logging.getLogger("monitors.frontier")

# Probes the sweep leaves out: they measure something other than what one release of a vector
# leaks, and each is a run of its own.
SKIPPED_PROBES = {
    "dp_audit": "a distinguishing game through the live pipeline; it checks a version's claimed epsilon, "
                "not its leakage (run it in the audit of the version you create)",
    "repeat_query": "averages repeated queries of one text; a separate question from one release's leakage "
                    "(run it in the audit of the version you create)",
}


def recall_at_k(queries: np.ndarray, documents: np.ndarray, k: int = K, chunk: int = 1024) -> Utility:
    """Query i's own document is documents[i]; cosine similarity. Documents exactly as similar as the
    own one are ties broken at random, counted by their expectation: with g more similar and t tied,
    the own document is among the k nearest with probability (k - g) / (t + 1), clipped to [0, 1].
    (Counted in its favour, a transform whose outputs collapse onto a few values, e.g. spectral
    keeping one component, would look lossless.)"""
    from audits.metrics import proportion_with_ci

    if len(queries) != len(documents) or len(queries) <= k:
        raise ConfigError(f"frontier: recall@{k} needs more than {k} pairs, found {len(queries)}")
    q = _unit(queries)
    d = _unit(documents)
    hits = 0.0
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ d.T
        own = sims[np.arange(len(sims)), np.arange(start, start + len(sims))]
        greater = (sims > own[:, None]).sum(axis=1)
        tied = (sims == own[:, None]).sum(axis=1) - 1
        hits += float(np.clip((k - greater) / (tied + 1), 0.0, 1.0).sum())
    value, low, high = proportion_with_ci(round(hits), len(q))
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

    from monitors.ledger.database import LedgerUnavailable, session_scope
    from monitors.ledger.models import Deployment
    from monitors.ledger.registry import sync_deployment
    from monitors.thresholds import effective_thresholds

    dep_cfg = config.deployment(deployment)
    from_file = {metric: t.levels() for metric, t in dep_cfg.thresholds.items()}
    try:
        with session_scope() as session:
            source = "ledger"
            try:
                dep: Deployment | None = sync_deployment(session, deployment, dep_cfg)
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


Strengths = Sequence[float] | Mapping[str, Sequence[float]]


def sweep(config, deployment: str, kind: str | Sequence[str] | None = None, strengths: Strengths | None = None,
          pairs: int = DEFAULT_PAIRS, probes: Sequence[str] | None = None, version: str | None = None,
          run_id: str = "", config_path: str | None = None) -> Frontier:
    """Measure every point of every kind's grid (and no transform, the utility baseline).

    `kind`: one kind, several (a list or comma-separated), or `all`; None: the base version's kind
    when it can be swept, else clip_gaussian. `strengths`: a list (one kind), or per kind a mapping.
    """
    from audits import corpora
    from audits.audit import Auditor, embed_corpus
    from audits.paraphrase import paraphrase_pairs
    from audits.pipeline import EmbeddingCache, Pipeline
    from audits.probes import PROBES
    from audits.transforms import describe_guarantee, make_transform
    from monitors import auxiliary_corpus
    from monitors.config import CanaryConfig, uses_production
    from monitors.deployments import auditor_seed, build_version_encoder, run_seed
    from monitors.fitted_transforms import Fitter

    started = time.perf_counter()
    dep_cfg = config.deployment(deployment)
    base = version or dep_cfg.active_version
    if base not in dep_cfg.versions:
        raise ConfigError(f"deployments.{deployment}.versions: no version {base!r}; it has {sorted(dep_cfg.versions)}")
    base_transform = dep_cfg.versions[base].transform.spec()
    kinds = kinds_of(kind, base_transform["kind"] if base_transform["kind"] in KNOBS else "clip_gaussian")
    specs = [spec for of_kind in grids(kinds, strengths, base_transform).values() for spec in of_kind]
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

    encoder = build_version_encoder(config, deployment, base)   # the base's own transform is not needed
    aux = auxiliary_corpus.public_corpus(config, deployment)
    if uses_production(dep_cfg.auxiliary_corpus):
        notes.append("The attacker's production slice exists only inside audit runs: the sweep trained on the "
                     "configured corpus without it, a weaker attacker than the audit's.")
    seed = auditor_seed(config, deployment)
    cache_dir = config.cache_root
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

    # Fitted kinds learn from the same public corpus the attacker trains on, through the base's encoder:
    # the material (its clean encodings come from the embedding cache the Auditor fills) is built on the
    # first spec that needs it, and each fit is found again when identical. Every point is fitted and
    # built (and tried on two vectors) before any is measured: a setting the encoder cannot take fails
    # the sweep at once, naming it.
    fitter = Fitter(config, deployment, base, encoder)
    built = []
    for grid_spec in [{"kind": "none"}, *specs]:
        label = label_of(grid_spec)
        fit_started = time.perf_counter()
        spec = fitter.pin(grid_spec, f"frontier: {label}").spec   # + artifact and sha256 for a fitted kind
        transform = make_transform(as_configured(spec))
        try:
            transform.apply(clean_q[:2], np.random.default_rng(0))
        except ValueError as exc:
            raise ConfigError(f"frontier: {label}: {exc}") from None
        built.append((grid_spec, spec, transform, label, time.perf_counter() - fit_started))
    fitted_kinds = sorted({spec["kind"] for _, spec, *_ in built if spec.get("artifact")}, key=kinds.index)
    if fitted_kinds:
        from monitors.fitted_transforms import store

        notes.append(f"Fitted on the auxiliary corpus's public text through {base}'s encoder: "
                     f"{', '.join(fitted_kinds)}; each point's spec pins its artifact (under "
                     f"{store(config, deployment)}), so a version made from it applies the transform measured.")

    measured: list[tuple[dict, float | None, dict[str, Score], dict[str, str], Utility, str, float]] = []
    for grid_spec, spec, transform, label, fit_seconds in built:
        point_started = time.perf_counter() - fit_seconds
        pipeline = Pipeline(encoder, transform)
        rng = np.random.default_rng(run_seed(deployment, "frontier", json.dumps(grid_spec, sort_keys=True)))
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
        measured.append((spec, None if spec["kind"] == "none" else spec[knob(spec["kind"]).param], scores, errors,
                         utility, describe_guarantee(transform), seconds))
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
    recommendation = recommend(points, kinds, deployment, list(dep_cfg.versions), from_version, config_path)
    log.info("frontier %s: %d points in %.1f s; %s", deployment, len(points), time.perf_counter() - started,
             recommendation.label or "no recommendation")
    return Frontier(deployment, base, ",".join(kinds), ",".join(knob(k).param for k in kinds), tuple(points),
                    baseline_recall, recommendation, dict(thresholds), thresholds_source, tuple(wanted), skipped,
                    tuple(notes), run_id, datetime.now(UTC).isoformat(timespec="seconds"), len(pp), len(canaries),
                    kinds)


def sweep_and_write(deployment: str, kind: str | Sequence[str] | None = None, strengths: Strengths | None = None,
        pairs: int = DEFAULT_PAIRS, run_id: str | None = None, config_path: str | None = None,
        probes: Sequence[str] | None = None, version: str | None = None) -> tuple[Frontier, Location, Location]:
    """Sweep and write the artifacts; returns the frontier and the paths of its JSON and HTML."""
    from monitors.config import load_config

    config = load_config(config_path)
    run_id = run_id or "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    frontier = sweep(config, deployment, kind, strengths, pairs, probes, version, run_id, config_path)
    json_path, html_path = write(frontier, folder_for(config, deployment, run_id))
    return frontier, json_path, html_path


