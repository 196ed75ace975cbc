"""Judging a candidate version before it is deployed: the deployment's probes, coverage and thresholds.

A candidate has no production vectors yet, so its sample is what it *would* produce: the texts of a
reproducible sample of the active version's rows, embedded through the candidate's pipeline (the
source needs a text column); without texts, the deployment's canaries, which can show a leak but never
clear one (whether the attacker covers production text cannot be measured: at best inconclusive).
The sample is validated like a production sample, each probe is fitted (or loaded from the model
cache) by the same `Auditor` as the daily audit, and the scores are set against the deployment's thresholds: those in
the ledger (the UI's changes win) when one is configured (unreachable: no verdict), else
embwarden.yaml's, and the verdict says which. Nothing sampled leaves this module: the sample lives
in an owner-only temporary folder.

Used by `PrivacyAuditOperator` (monitors.provider) and `embwarden audit --deployment` (CI).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from audits import corpora
from audits.audit import Auditor, ProbeResult, embed_corpus
from audits.errors import ConfigError, EmbwardenError
from audits.results import Sample, Score
from monitors import auxiliary_corpus
from monitors.config import NAME, EmbwardenConfig, format_errors, uses_production
from monitors.config.pipeline import VersionConfig
from monitors.deployments import auditor_seed, build_pipeline, build_source, build_transform, run_seed
from monitors.thresholds import Levels
from monitors.verdicts import INCONCLUSIVE, evaluate

log = logging.getLogger("embwarden.candidates")

# `embwarden audit --deployment`'s exit code per verdict (2 is a bad command line or configuration).
EXIT_CODES = {"pass": 0, "warn": 0, "gate": 3, "rollback": 4, "inconclusive": 5, "invalid": 6, "error": 7}


@dataclass(frozen=True)
class CandidateVerdict:
    deployment: str
    version: str
    verdict: str                      # pass, warn, gate, rollback, inconclusive, invalid, error
    scores: tuple[Score, ...]
    thresholds_from: str              # "ledger" or "file"
    target: str                       # what was attacked: "sample" (re-embedded production texts) or "canaries"
    sample_size: int
    errors: dict[str, str] = field(default_factory=dict)      # probe -> error
    reason: str = ""                  # what crossed which threshold, or why it could not judge
    thresholds: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"deployment": self.deployment, "version": self.version, "verdict": self.verdict,
                "reason": self.reason, "exit_code": EXIT_CODES[self.verdict], "target": self.target,
                "sample_size": self.sample_size, "thresholds_from": self.thresholds_from,
                "scores": [s.to_dict() for s in self.scores], "errors": self.errors, "thresholds": self.thresholds}


def with_version(config: EmbwardenConfig, deployment: str, name: str, spec_path: Path) -> EmbwardenConfig:
    """`config` with the candidate from a version spec file (YAML or JSON: `encoder`, `transform`, as a
    version in embwarden.yaml) added as version `name`; the file is validated like embwarden.yaml."""
    dep = config.deployment(deployment)
    if not re.match(NAME, name):
        raise ConfigError(f"--version: {name!r} is not a valid version name")
    try:
        data = yaml.safe_load(Path(spec_path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--version-spec {spec_path}: cannot read it ({exc})") from None
    try:
        spec = VersionConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(f"--version-spec {spec_path}: " + format_errors(exc)) from None
    spec = _pinned(config, deployment, name, spec, f"--version-spec {spec_path}: transform")
    if name in dep.versions and dep.versions[name] != spec:
        raise ConfigError(f"--version: {deployment} already has a version {name!r} that differs from "
                          f"{spec_path}; versions are immutable, choose another name")
    changed = dep.model_copy(update={"versions": {**dep.versions, name: spec}})
    return config.model_copy(update={"deployments": {**config.deployments, deployment: changed}})


def _pinned(config: EmbwardenConfig, deployment: str, name: str, spec: VersionConfig, where: str) -> VersionConfig:
    """A fitted transform without an artifact fitted as `embwarden versions add` would fit it (the same
    material through the candidate's encoder, hence the same artifact), so that the candidate judged
    is the version that would be added; one that names an artifact is loaded (a ConfigError when it
    is missing or changed)."""
    from pydantic import TypeAdapter

    from audits.transforms import needs_fit
    from monitors.config import TransformConfig
    from monitors.fitted_transforms import pin

    transform = spec.transform.spec()
    if not transform.get("artifact") and not needs_fit(transform):
        return spec
    dep = config.deployment(deployment)
    trial = config.model_copy(update={"deployments": {**config.deployments, deployment: dep.model_copy(
        update={"versions": {**dep.versions, name: spec}})}})
    pinned = pin(trial, deployment, name, transform, where)
    return spec.model_copy(update={"transform": TypeAdapter(TransformConfig).validate_python(pinned.spec)})


def thresholds_for(config: EmbwardenConfig, deployment: str) -> tuple[dict[str, Levels], str]:
    """The ledger's effective thresholds when the ledger is configured and reachable, else the file's."""
    import os

    from monitors.ledger.database import CONNECTION_ID, airflow_connection, session_scope
    from monitors.ledger.registry import get_deployment
    from monitors.thresholds import effective_thresholds

    if airflow_connection(CONNECTION_ID) is not None or os.environ.get("EMBWARDEN_DB_URL"):
        # A configured ledger that cannot be read raises (LedgerUnavailable: no verdict), never falls back to
        # the file: the UI may have tightened a threshold there.
        with session_scope() as session:
            try:
                return effective_thresholds(session, get_deployment(session, deployment)), "ledger"
            except ConfigError:   # not registered yet: the file's thresholds are the ones a sync would store
                log.info("%s is not in the ledger yet: thresholds from embwarden.yaml", deployment)
    return {key: t.levels() for key, t in config.deployment(deployment).thresholds.items()}, "file"


def judge(config: EmbwardenConfig, deployment: str, version: str,
          thresholds: tuple[dict[str, Levels], str] | None = None) -> CandidateVerdict:
    """Audit `version` of `deployment` (in `config`) before it is deployed; see the module's docstring."""
    dep_cfg = config.deployment(deployment)
    if version not in dep_cfg.versions:
        raise ConfigError(f"deployments.{deployment}.versions: no version {version!r}; "
                          f"it has {sorted(dep_cfg.versions)}")
    levels, source_of_levels = thresholds or thresholds_for(config, deployment)
    pipeline = build_pipeline(config, deployment, version)
    source = build_source(config, deployment)
    with tempfile.TemporaryDirectory(prefix="embwarden-candidate-") as tmp:   # 0700: owner-only
        folder = Path(tmp)
        sample, target = candidate_sample(config, deployment, version, pipeline, source, folder)
        unjudged = CandidateVerdict(deployment, version, "invalid", (), source_of_levels, target, len(sample),
                                    thresholds={k: asdict(v) for k, v in levels.items()})
        from monitors import validation  # Great Expectations: imported where it is used

        vcfg = dep_cfg.validation
        rules = validation.rules_for(build_transform(config, deployment, version), sample.dimension, vcfg.min_rows,
                                     [version], None, vcfg.norm_range)
        report = validation.validate(sample, rules)
        if not report.success:
            return replace(unjudged, reason=f"the candidate's sample failed validation: {report.summary()}")
        auditor = Auditor(pipeline, auxiliary_corpus.corpus(config, deployment, folder),
                          seed=auditor_seed(config, deployment),
                          cache_dir=auxiliary_corpus.cache_dir(config, deployment, folder))
        targets = {"sample": sample}
        if dep_cfg.canaries.count and target == "sample":
            rng = np.random.default_rng(run_seed("candidate", deployment, version, "canaries"))
            canaries = corpora.canaries(dep_cfg.canaries.count, dep_cfg.canaries.seed)
            targets["canaries"] = embed_corpus(pipeline, canaries, rng, version, prefix="canary-")
        results: list[ProbeResult] = [auditor.run(name, params, targets) for name, params in dep_cfg.probes.items()]
        results.append(auditor.coverage(sample))
    errors = {r.probe: r.error for r in results if r.error}
    judged = evaluate([s for r in results for s in r.scores], levels)
    name, reason = judged.verdict, _reason(judged)
    if name in ("pass", "warn"):   # a leak found is real; an absence of one needs an attacker that could find it
        if errors or judged.covered is None:
            name, reason = INCONCLUSIVE, "not judged: " + ("; ".join(f"{p}: {e}" for p, e in errors.items())
                                                           or "coverage was not measured")
        elif target == "canaries":
            name, reason = INCONCLUSIVE, ("not judged: without the source's texts the candidate was attacked on "
                                          "synthetic canaries only, and whether the attacker covers production "
                                          "text cannot be measured; set source.columns.text to judge it")
    return replace(unjudged, verdict=name, scores=tuple(s for r in results for s in r.scores), errors=errors,
                   reason=reason)


def _reason(judged) -> str:
    if judged.verdict == INCONCLUSIVE:
        return "inconclusive: the attacker does not cover the sample (" + ", ".join(
            f"{f.metric} {f.value:.3f}" for f in judged.uncovered) + ")"
    worst = judged.worst
    if worst is None:
        return "no threshold crossed"
    limit = getattr(worst.levels, worst.level) if worst.levels else None
    return f"{worst.metric} = {worst.value:.3f} crossed {worst.level} threshold {limit}"


def candidate_sample(config: EmbwardenConfig, deployment: str, version: str, pipeline, source,
                     folder: Path) -> tuple[Sample, str]:
    """What the candidate would produce: production texts (of the active version's rows) embedded
    through its pipeline, or, without a text column, the deployment's canaries. With a production
    attacker's corpus, its slice is drawn into `folder`, disjoint from the sample."""
    dep_cfg = config.deployment(deployment)
    seed = run_seed("candidate", deployment, version)
    rng = np.random.default_rng(seed)
    if dep_cfg.source.columns.text is None:
        if not dep_cfg.canaries.count:
            raise ConfigError(f"deployments.{deployment}: a candidate is judged on production texts embedded through "
                              "it (source.columns.text) or on canaries (canaries.count > 0); this deployment has "
                              "neither")
        canaries = corpora.canaries(dep_cfg.canaries.count, dep_cfg.canaries.seed)
        return embed_corpus(pipeline, canaries, rng, version, prefix="canary-"), "canaries"
    drawn = source.draw(dep_cfg.active_version, dep_cfg.sample_size, seed, pipeline.dimension)
    if drawn.texts is None or not any(drawn.texts):
        raise EmbwardenError(f"{deployment}: the source's rows of {dep_cfg.active_version} have no texts to embed "
                             "through the candidate")
    vectors = pipeline.embed(list(drawn.texts), rng)
    sample = Sample(ids=drawn.ids, vectors=np.asarray(vectors, dtype=np.float32), texts=drawn.texts, version=version,
                    labels=drawn.labels)
    if uses_production(dep_cfg.auxiliary_corpus):
        auxiliary_corpus.draw_production(config, deployment, source, dep_cfg.active_version, drawn,
                                         run_seed("candidate", deployment, version, "attacker"), folder)
    return sample, "sample"


def record(session, config: EmbwardenConfig, result: CandidateVerdict, dag_id: str, run_id: str) -> int:
    """Record a candidate's verdict as an audit run of its version (keyed by the DAG run, so a retry
    overwrites it); returns its id. Candidate runs never count as "passed" for a rollback target,
    which only the privacy_audit DAG's audits of deployed versions decide."""
    import sqlalchemy as sa

    from monitors.ledger.models import AuditRun, utcnow
    from monitors.ledger.models import Score as ScoreRow
    from monitors.ledger.registry import get_version, sync_deployment

    dep = sync_deployment(session, result.deployment, config.deployment(result.deployment))
    version = get_version(session, dep, result.version)
    run = session.scalar(sa.select(AuditRun).where(AuditRun.dag_id == dag_id, AuditRun.run_id == run_id,
                                                   AuditRun.deployment_id == dep.id))
    if run is None:
        run = AuditRun(dag_id=dag_id, run_id=run_id, deployment_id=dep.id, version_id=version.id)
        session.add(run)
    run.version_id = version.id
    session.flush()
    session.execute(sa.delete(ScoreRow).where(ScoreRow.audit_run_id == run.id))
    for s in result.scores:
        session.add(ScoreRow(audit_run_id=run.id, task="candidate", probe=s.probe, metric=s.metric, value=s.value,
                             ci_low=s.ci_low, ci_high=s.ci_high, n=s.n, target=result.target))
    run.status = "invalid" if result.verdict == "invalid" else "succeeded"
    run.verdict = result.verdict if result.verdict != "error" else None
    run.sample_size = result.sample_size
    run.thresholds = result.thresholds
    run.error = "; ".join(f"{p}: {e}" for p, e in result.errors.items()) or (
        result.reason if result.verdict in ("invalid", "error") else None)
    run.finished_at = utcnow()
    session.flush()
    return run.id
