"""The bodies of the privacy_audit tasks. Each takes and returns a small RunRef, never data.

sample -> probe -> record -> evaluate -> act -> report, then cleanup (always). Every step reads
what it needs from the ledger or the run's artifact folder, so any step can be retried alone.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from audits.corpus import generate_messages
from audits.encoders import LocalEncoder, resolve_model_dir
from audits.errors import ConfigError, EmbwardenError, InvalidSample, ProbeError, SourceError
from audits.pipeline import EmbeddingCache, Pipeline
from audits.probes import make_probe
from audits.probes.base import Auxiliary
from audits.sources import Columns, ParquetSource, SqlTableSource
from audits.transforms import GaussianNoise, Identity
from monitors import actions, artifacts, report
from monitors.config import EmbwardenConfig, load_config
from monitors.database import LedgerUnavailable, connection_url, migrate, session_scope
from monitors.ledger import Action, AuditRun, Score, Version, utcnow
from monitors.registry import effective_thresholds, sync, sync_deployment

log = logging.getLogger(__name__)

PROBE_TASK = "probe"


@dataclass(frozen=True)
class RunRef:
    """What tasks hand each other through XCom: ids and a folder, nothing sampled."""

    deployment: str
    dag_id: str
    run_id: str
    audit_run_id: int
    artifact_dir: str

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, data: dict) -> RunRef:
        return cls(**data)


def run_seed(*parts: str) -> int:
    """A seed fixed by the run's identity: a retried task draws the same sample."""
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:4], "big")


def _no_retry(exc: EmbwardenError) -> Exception:
    """Bad input will be as bad on a retry: tell Airflow not to retry it."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # pragma: no cover - used outside Airflow
        return exc
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


@contextmanager
def _failing_run(audit_run_id: int | None) -> Iterator[None]:
    """Record any error on the audit run before re-raising it, so no run looks clean by accident.

    Bad input or configuration is raised so that Airflow does not retry it; an unreachable
    source or ledger, and unexpected errors, keep Airflow's retries.
    """
    try:
        yield
    except Exception as exc:
        log.error("audit run %s stopped: %s: %s", audit_run_id, type(exc).__name__, exc)
        if audit_run_id is not None:
            _mark_stopped(audit_run_id, exc)
        if isinstance(exc, EmbwardenError) and not isinstance(exc, SourceError | LedgerUnavailable):
            raise _no_retry(exc) from exc
        raise


def _mark_stopped(audit_run_id: int, exc: Exception) -> None:
    invalid = isinstance(exc, InvalidSample)
    try:
        with session_scope() as session:
            run = session.get(AuditRun, audit_run_id)
            run.status = "invalid" if invalid else "failed"
            run.verdict = "invalid" if invalid else None
            run.error = f"{type(exc).__name__}: {exc}"
            run.finished_at = utcnow()
    except LedgerUnavailable as ledger_down:  # the original error matters more; say both
        log.error("audit run %s could not be marked stopped: %s", audit_run_id, ledger_down)


# -- building the audited pipeline from configuration --------------------------------------------
def build_pipeline(config: EmbwardenConfig, deployment: str, version: str) -> Pipeline:
    vcfg = config.deployment(deployment).versions.get(version)
    if vcfg is None:
        raise ConfigError(f"deployments.{deployment}.versions: no version {version!r} in the configuration")
    enc = vcfg.encoder
    encoder = LocalEncoder(resolve_model_dir(enc.model, config.base_dir), batch_size=enc.batch_size,
                           max_length=enc.max_length)
    tcfg = vcfg.transform
    transform = GaussianNoise(tcfg.sigma) if tcfg.kind == "gaussian_noise" else Identity()
    return Pipeline(encoder, transform)


def build_source(config: EmbwardenConfig, deployment: str):
    scfg = config.deployment(deployment).source
    columns = Columns(**scfg.columns.model_dump())
    if scfg.kind == "parquet":
        return ParquetSource(config.resolve(scfg.path), columns)
    url = scfg.url and config.resolve_url(scfg.url)
    if scfg.connection:
        url = connection_url(scfg.connection)
        if url is None:
            raise ConfigError(f"deployments.{deployment}.source.connection: Airflow connection "
                              f"{scfg.connection!r} is not defined")
    return SqlTableSource(url, scfg.table, columns, schema=scfg.db_schema)


def _folder(config: EmbwardenConfig, deployment: str, dag_id: str, run_id: str) -> Path:
    return artifacts.run_dir(config.resolve(config.artifacts.root), deployment, dag_id, run_id)


# -- tasks ---------------------------------------------------------------------------------------
def list_deployments(only: str | None = None) -> list[str]:
    """The deployments this run audits, after bringing the ledger's schema and registry up to date."""
    config = load_config()
    names = [only] if only else sorted(config.deployments)
    for name in names:
        config.deployment(name)
    migrate()
    with session_scope() as session:
        sync(session, config)
    return names


def sample(deployment: str, dag_id: str, run_id: str) -> dict:
    """Open (or reopen, on retry) the audit run and draw its sample into the run's folder."""
    config = load_config()
    dep_cfg = config.deployment(deployment)
    with session_scope() as session:
        dep = sync_deployment(session, deployment, dep_cfg)
        run = session.scalar(sa.select(AuditRun).where(
            AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, AuditRun.deployment_id == dep.id))
        if run is None:
            run = AuditRun(dag_id=dag_id, run_id=run_id, deployment_id=dep.id, version_id=dep.active_version_id)
            session.add(run)
        run.status, run.verdict, run.error, run.finished_at = "running", None, None, None
        session.flush()
        ref = RunRef(deployment, dag_id, run_id, run.id,
                     str(_folder(config, deployment, dag_id, run_id)))
        version = session.get(Version, run.version_id).name
    with _failing_run(ref.audit_run_id):
        started = time.perf_counter()
        pipeline = build_pipeline(config, deployment, version)
        drawn = build_source(config, deployment).draw(version, dep_cfg.sample_size,
                                                      run_seed(dag_id, run_id, deployment), pipeline.encoder.dimension)
        artifacts.write_sample(Path(ref.artifact_dir), drawn)
        with session_scope() as session:
            session.get(AuditRun, ref.audit_run_id).sample_size = len(drawn)
        log.info("audit run %d: sampled %d vectors of %s/%s in %.1f s", ref.audit_run_id, len(drawn),
                 deployment, version, time.perf_counter() - started)
    return ref.to_xcom()


def probe(ref_data: dict) -> dict:
    """Train each configured probe on the auxiliary corpus, noise-aware, and score the sample."""
    ref = RunRef.from_xcom(ref_data)
    config = load_config()
    dep_cfg = config.deployment(ref.deployment)
    with _failing_run(ref.audit_run_id):
        with session_scope() as session:
            version = session.get(AuditRun, ref.audit_run_id).version.name
        pipeline = build_pipeline(config, ref.deployment, version)
        drawn = artifacts.read_sample(Path(ref.artifact_dir))
        corpus = dep_cfg.auxiliary_corpus
        messages = generate_messages(corpus.size, corpus.seed)
        aux_texts = tuple(m.text for m in messages)
        cache = EmbeddingCache(config.resolve(config.cache_dir) / "embeddings")
        oracle_rng = np.random.default_rng(corpus.seed + 1)
        # The attacker embeds its corpus through the same pipeline, noise included (noise-aware),
        # and may call the pipeline itself, as anyone with access to the deployed API can.
        aux = Auxiliary(aux_texts, pipeline.embed(list(aux_texts), np.random.default_rng(corpus.seed), cache=cache),
                        labels=tuple(m.category for m in messages), secrets=tuple(m.secrets for m in messages),
                        embed=lambda texts: pipeline.embed(texts, oracle_rng))
        for name, params in dep_cfg.probes.items():
            started = time.perf_counter()
            attack = make_probe(name, params, seed=corpus.seed)
            scores = attack.fit(aux).score(drawn)
            artifacts.write_scores(Path(ref.artifact_dir), name, scores)
            log.info("audit run %d: %s scored %d metrics on n=%d in %.1f s", ref.audit_run_id, name,
                     len(scores), len(drawn), time.perf_counter() - started)
    return ref.to_xcom()


def record(ref_data: dict) -> dict:
    """Write the probes' scores to the ledger, overwriting this run's earlier attempt."""
    ref = RunRef.from_xcom(ref_data)
    by_probe = artifacts.read_scores(Path(ref.artifact_dir))
    with _failing_run(ref.audit_run_id), session_scope() as session:
        if not by_probe:
            raise ProbeError(f"audit run {ref.audit_run_id}: no probe wrote scores to {ref.artifact_dir}")
        existing = {(s.task, s.probe, s.metric): s for s in session.scalars(
            sa.select(Score).where(Score.audit_run_id == ref.audit_run_id))}
        for scores in by_probe.values():
            for s in scores:
                row = existing.get((PROBE_TASK, s.probe, s.metric))
                if row is None:
                    row = Score(audit_run_id=ref.audit_run_id, task=PROBE_TASK, probe=s.probe, metric=s.metric)
                    session.add(row)
                row.value, row.ci_low, row.ci_high, row.n = s.value, s.ci_low, s.ci_high, s.n
                row.recorded_at = utcnow()
    return ref.to_xcom()


def evaluate(ref_data: dict) -> dict:
    """Set the run's scores against the effective thresholds and store the verdict."""
    from monitors.policy import evaluate as verdict_of

    ref = RunRef.from_xcom(ref_data)
    with _failing_run(ref.audit_run_id), session_scope() as session:
        run = session.get(AuditRun, ref.audit_run_id)
        thresholds = effective_thresholds(session, run.deployment)
        result = verdict_of(run.scores, thresholds)
        run.thresholds = {metric: {**asdict(levels)} for metric, levels in thresholds.items()}
        run.verdict = result.verdict
        run.status, run.error = "succeeded", None
        run.finished_at = utcnow()
        # Known now, written after the actions, so alerts can link it.
        run.report_path = str(Path(ref.artifact_dir) / "report.html")
        log.info("audit run %d: verdict %s", run.id, run.verdict)
    return ref.to_xcom()


def act(ref_data: dict) -> dict:
    """Carry out the verdict's actions, each recorded before it happens and marked after."""
    ref = RunRef.from_xcom(ref_data)
    with session_scope() as session:
        verdict = session.get(AuditRun, ref.audit_run_id).verdict
    for kind in actions.planned(verdict):
        with session_scope() as session:  # commit `pending` before the side effect
            pending = actions.begin(session, session.get(AuditRun, ref.audit_run_id), kind, f"verdict {verdict}")
            pending_id = pending.id if pending else None
        if pending_id is None:
            log.info("audit run %d: %s already done", ref.audit_run_id, kind)
            continue
        try:
            with session_scope() as session:
                detail = actions.perform(session, session.get(AuditRun, ref.audit_run_id), kind)
                actions.mark(session.get(Action, pending_id), "done", detail)
        except EmbwardenError as exc:
            with session_scope() as session:
                actions.mark(session.get(Action, pending_id), "failed", error=str(exc))
            raise _no_retry(exc) from exc
    return ref.to_xcom()


def write_report(ref_data: dict) -> str:
    ref = RunRef.from_xcom(ref_data)
    with session_scope() as session:
        run = session.get(AuditRun, ref.audit_run_id)
        content = report.build(session, run)
        html_path = report.write(Path(ref.artifact_dir), content)
        run.report_path = str(html_path)
    return str(html_path)


def cleanup(deployment: str, dag_id: str, run_id: str) -> int:
    """Delete the run's sample (production data) and prune folders past retention."""
    config = load_config()
    folder = _folder(config, deployment, dag_id, run_id)
    deleted = artifacts.delete_sample(folder)
    pruned = artifacts.prune(config.resolve(config.artifacts.root), config.artifacts.retention_days)
    log.info("cleanup of %s: sample deleted=%s, %d old run folders pruned", folder.name, deleted, pruned)
    return pruned
