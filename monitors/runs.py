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

from audits import corpora
from audits.audit import Auditor, ProbeResult, embed_corpus
from audits.corpora import Corpus
from audits.coverage import PROBE as COVERAGE
from audits.encoders import build_encoder
from audits.errors import ConfigError, EmbwardenError, EncoderUnavailable, InvalidSample, ProbeError, SourceUnavailable
from audits.pipeline import Pipeline
from audits.sources import Columns, ParquetSource, SqlTableSource
from audits.transforms import make_transform
from monitors import actions, artifacts, attacker, report
from monitors.alerts import Alert
from monitors.assets import AUDIT_DAG, DRIFT_DAG, REAUDIT_ASSET
from monitors.config import EmbwardenConfig, load_config, uses_production
from monitors.database import LedgerUnavailable, connection_url, migrate, session_scope
from monitors.ledger import Action, AlertRecord, AuditRun, Deployment, Score, Validation, Version, utcnow
from monitors.registry import effective_thresholds, sync, sync_deployment
from monitors.trends import trends_of

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


def _skip(reason: str) -> Exception:
    try:
        from airflow.sdk.exceptions import AirflowSkipException
    except ImportError:  # pragma: no cover - used outside Airflow
        return RuntimeError(reason)
    return AirflowSkipException(reason)


def _no_retry(exc: EmbwardenError) -> Exception:
    """Bad input will be as bad on a retry: tell Airflow not to retry it."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # pragma: no cover - used outside Airflow
        return exc
    return AirflowFailException(f"{type(exc).__name__}: {exc}")


RETRYABLE = "(retryable)"


@contextmanager
def _failing_run(audit_run_id: int | None, step: str) -> Iterator[None]:
    """Record any error on the audit run before re-raising it, so no run looks clean by accident.

    Bad input or configuration is raised so that Airflow does not retry it; an unreachable
    source, encoder API or ledger, and unexpected errors, keep Airflow's retries, and the error is marked
    retryable by `step`, so that the retried step resumes the run instead of skipping it.
    """
    try:
        yield
    except Exception as exc:
        log.error("audit run %s stopped in %s: %s: %s", audit_run_id, step, type(exc).__name__, exc)
        retryable = not isinstance(exc, EmbwardenError) or isinstance(
            exc, SourceUnavailable | EncoderUnavailable | LedgerUnavailable)
        if audit_run_id is not None:
            _mark_stopped(audit_run_id, exc, f"{RETRYABLE} {step}: " if retryable else "")
        if not retryable:
            raise _no_retry(exc) from exc
        raise


def _mark_stopped(audit_run_id: int, exc: Exception, prefix: str = "") -> None:
    invalid = isinstance(exc, InvalidSample)
    try:
        with session_scope() as session:
            run = session.get(AuditRun, audit_run_id)
            run.status = "invalid" if invalid else "failed"
            run.verdict = "invalid" if invalid else None
            run.error = f"{prefix}{type(exc).__name__}: {exc}"
            run.finished_at = utcnow()
    except LedgerUnavailable as ledger_down:  # the original error matters more; say both
        log.error("audit run %s could not be marked stopped: %s", audit_run_id, ledger_down)


# -- building the audited pipeline from configuration --------------------------------------------
def _version_config(config: EmbwardenConfig, deployment: str, version: str):
    vcfg = config.deployment(deployment).versions.get(version)
    if vcfg is None:
        raise ConfigError(f"deployments.{deployment}.versions: no version {version!r} in the configuration")
    return vcfg


def build_transform(config: EmbwardenConfig, deployment: str, version: str):
    return make_transform(_version_config(config, deployment, version).transform.spec())


def build_pipeline(config: EmbwardenConfig, deployment: str, version: str) -> Pipeline:
    enc = _version_config(config, deployment, version).encoder
    connection = None
    if getattr(enc, "connection", None):  # an HTTP encoder's credentials: resolved here, audits knows no Airflow
        from monitors.database import airflow_connection

        connection = airflow_connection(enc.connection)
        if connection is None:
            raise ConfigError(f"deployments.{deployment}.versions.{version}.encoder.connection: Airflow connection "
                              f"{enc.connection!r} is not defined (set AIRFLOW_CONN_{enc.connection.upper()} "
                              "or define it in Airflow)")
    return Pipeline(build_encoder(enc, config.base_dir, connection), build_transform(config, deployment, version))


def build_source(config: EmbwardenConfig, deployment: str):
    scfg = config.deployment(deployment).source
    columns = Columns(**scfg.columns.model_dump())
    if scfg.kind == "parquet":
        return ParquetSource(config.resolve(scfg.path), columns)
    return SqlTableSource(_sql_url(config, scfg, f"deployments.{deployment}.source"), scfg.table, columns,
                          schema=scfg.db_schema, connection=scfg.connection)


def _sql_url(config: EmbwardenConfig, where_cfg, where: str) -> str:
    """The SQLAlchemy URL of a config block that names a `url` or an Airflow `connection`."""
    if where_cfg.connection:
        url = connection_url(where_cfg.connection)
        if url is None:
            raise ConfigError(f"{where}.connection: Airflow connection {where_cfg.connection!r} is not defined")
        return url
    return config.resolve_url(where_cfg.url)


def _folder(config: EmbwardenConfig, deployment: str, dag_id: str, run_id: str) -> Path:
    return artifacts.run_dir(config.resolve(config.artifacts.root), deployment, dag_id, run_id)


# -- tasks ---------------------------------------------------------------------------------------
def list_deployments(only: str | None = None, reaudits: list[str] | None = None) -> list[str]:
    """The deployments this run audits, after bringing the ledger's schema and registry up to date.

    `only` comes from the run's params; `reaudits` from the re-audit Asset events that started
    the run (each names a deployment); neither: every deployment in the configuration.
    """
    config = load_config()
    names = [only] if only else sorted(set(reaudits)) if reaudits else sorted(config.deployments)
    for name in names:
        config.deployment(name)
    migrate()
    with session_scope() as session:
        sync(session, config)
    return names


def sample(deployment: str, dag_id: str, run_id: str, window_end: float | None = None) -> dict:
    """Open (or reopen, on retry) the audit run and draw its sample into the run's folder.

    With `window_end` (UTC epoch seconds, fixed by the DAG run so that a retry draws the same rows)
    it draws the drift window instead: the active version's rows created in the configured
    `drift.window_hours` before it, up to `drift.sample_size`.
    """
    config = load_config()
    dep_cfg = config.deployment(deployment)
    since, size = None, dep_cfg.sample_size
    if window_end is not None:
        if dep_cfg.drift is None:
            raise _skip(f"{deployment}: drift checks are off (drift: null)")
        since, size = window_end - dep_cfg.drift.window_hours * 3600, dep_cfg.drift.sample_size
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
    with _failing_run(ref.audit_run_id, "sample"):
        started = time.perf_counter()
        pipeline = build_pipeline(config, deployment, version)
        source = build_source(config, deployment)
        if window_end is None:   # an attacker's corpus that cannot be built fails the run before any drawing
            attacker.check(config, deployment, source, version)
        drawn = source.draw(version, size, run_seed(dag_id, run_id, deployment), pipeline.dimension, since=since)
        artifacts.write_sample(Path(ref.artifact_dir), drawn)
        if window_end is None and uses_production(dep_cfg.auxiliary_corpus):
            drew = attacker.draw_production(config, deployment, source, version, drawn,
                                            run_seed(dag_id, run_id, deployment, "attacker"), Path(ref.artifact_dir))
            log.info("audit run %d: %d production texts drawn for the attacker (disjoint from the sample)",
                     ref.audit_run_id, drew)
        with session_scope() as session:
            session.get(AuditRun, ref.audit_run_id).sample_size = len(drawn)
        log.info("audit run %d: sampled %d vectors of %s/%s in %.1f s", ref.audit_run_id, len(drawn),
                 deployment, version, time.perf_counter() - started)
    return ref.to_xcom()


def validate(deployment: str, dag_id: str, run_id: str) -> dict:
    """Check the run's sample with Great Expectations and record the result; a sample that fails
    is deleted and makes the run `invalid` (it alerts; its probes never run)."""
    from monitors import validation

    ref = _live_ref(deployment, dag_id, run_id, "validate")
    config = load_config()
    vcfg = config.deployment(deployment).validation
    folder = Path(ref.artifact_dir)
    with _failing_run(ref.audit_run_id, "validate"):
        with session_scope() as session:
            run = session.get(AuditRun, ref.audit_run_id)
            version = run.version.name
            known = session.scalars(sa.select(Version.name).where(Version.deployment_id == run.deployment_id)).all()
        drawn = artifacts.read_sample(folder)
        rules = validation.rules_for(build_transform(config, deployment, version), drawn.dimension, vcfg.min_rows,
                                     known, vcfg.max_age_hours, vcfg.norm_range)
        report = validation.validate(drawn, rules)
        record_validation(ref.audit_run_id, "sample", report)
        if not report.success:
            artifacts.delete_sample(folder)
            raise InvalidSample(report.summary())
    return ref.to_xcom()


def record_validation(audit_run_id: int, kind: str, report) -> None:
    with session_scope() as session:
        row = session.scalar(sa.select(Validation).where(Validation.audit_run_id == audit_run_id,
                                                         Validation.kind == kind))
        if row is None:
            row = Validation(audit_run_id=audit_run_id, kind=kind)
            session.add(row)
        row.success, row.row_count, row.results, row.created_at = (report.success, report.row_count,
                                                                   report.to_json(), utcnow())


def validated(audit_run_id: int) -> bool:
    with session_scope() as session:
        return bool(session.scalar(sa.select(Validation.success).where(Validation.audit_run_id == audit_run_id,
                                                                       Validation.kind == "sample")))


def auxiliary_corpus(config: EmbwardenConfig, deployment: str, folder: Path | None = None) -> Corpus:
    """The attacker's corpus as configured (see monitors.attacker); `folder` is the run's."""
    return attacker.corpus(config, deployment, folder)


def _auditor_seed(config: EmbwardenConfig, deployment: str) -> int:
    ccfg = config.deployment(deployment).auxiliary_corpus
    return getattr(ccfg, "seed", 0)


def find_ref(deployment: str, dag_id: str, run_id: str) -> RunRef | None:
    """The run's reference from the ledger, or None when its sample step never opened it."""
    config = load_config()
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun).join(AuditRun.deployment).where(
            AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, Deployment.name == deployment))
        if run is None:
            return None
        return RunRef(deployment, dag_id, run_id, run.id, str(_folder(config, deployment, dag_id, run_id)))


def probe_jobs(deployments: list[str], dag_id: str, run_id: str) -> list[dict]:
    """One job per (deployment, probe) whose sample was drawn: the mapped probe tasks' inputs.

    Read from the ledger rather than from the sample tasks' XCom, so one deployment's failed
    sample does not stop the others' probes.
    """
    config = load_config()
    jobs = []
    for deployment in deployments:
        ref = find_ref(deployment, dag_id, run_id)
        if ref is None or not (Path(ref.artifact_dir) / artifacts.SAMPLE_FILE).is_file():
            log.warning("%s: no sample for this run; its probes are skipped", deployment)
            continue
        if not validated(ref.audit_run_id):
            log.warning("%s: the sample did not pass validation; its probes are skipped", deployment)
            continue
        jobs += [{"ref": ref.to_xcom(), "probe": name} for name in [*config.deployment(deployment).probes, COVERAGE]]
    return jobs


def probe(ref_data: dict, name: str) -> dict:
    """Fit probe `name` on the auxiliary corpus (or load it from the model cache) and score it.

    Its scores, or its error, go to the run's folder; a failing probe loses no other probe's
    scores. Returns counts only.
    """
    ref = RunRef.from_xcom(ref_data)
    config = load_config()
    dep_cfg = config.deployment(ref.deployment)
    with session_scope() as session:
        version = session.get(AuditRun, ref.audit_run_id).version.name
    folder = Path(ref.artifact_dir)
    try:
        pipeline = build_pipeline(config, ref.deployment, version)
        seed = _auditor_seed(config, ref.deployment)
        auditor = Auditor(pipeline, auxiliary_corpus(config, ref.deployment, folder), seed=seed,
                          cache_dir=attacker.cache_dir(config, ref.deployment, folder))
        targets = {"sample": artifacts.read_sample(folder)}
        if name == COVERAGE:
            result = auditor.coverage(targets["sample"])
            artifacts.write_probe_result(folder, result)
            return {"deployment": ref.deployment, "probe": name, "target": result.target, "scores": len(result.scores)}
        if dep_cfg.canaries.count:
            rng = np.random.default_rng(run_seed(ref.dag_id, ref.run_id, ref.deployment, "canaries"))
            canaries = corpora.canaries(dep_cfg.canaries.count, dep_cfg.canaries.seed)
            targets["canaries"] = embed_corpus(pipeline, canaries, rng, version, prefix="canary-")
        result = auditor.run(name, dep_cfg.probes[name], targets)
    except (SourceUnavailable, LedgerUnavailable):
        raise  # transient: let Airflow retry
    except EmbwardenError as exc:
        result = ProbeResult(name, "none", error=f"{type(exc).__name__}: {exc}")
    artifacts.write_probe_result(Path(ref.artifact_dir), result)
    if result.error:
        raise _no_retry(ProbeError(f"{ref.deployment}/{name}: {result.error}"))
    log.info("audit run %d: %s scored %d metrics on %s", ref.audit_run_id, name, len(result.scores), result.target)
    return {"deployment": ref.deployment, "probe": name, "target": result.target, "scores": len(result.scores)}


def record(deployment: str, dag_id: str, run_id: str) -> dict:
    """Write every probe's scores to the ledger (overwriting this run's earlier attempt) and note
    the probes that failed on the run. Runs whatever became of the probe tasks."""
    ref = _live_ref(deployment, dag_id, run_id, "record")
    expected = ["drift"] if dag_id == DRIFT_DAG else [*load_config().deployment(deployment).probes, COVERAGE]
    results = artifacts.read_probe_results(Path(ref.artifact_dir))
    errors = [f"{name}: {results[name].error}" if name in results else f"{name}: no result (task failed, see its log)"
              for name in expected if name not in results or results[name].error]
    with _failing_run(ref.audit_run_id, "record"), session_scope() as session:
        run = session.get(AuditRun, ref.audit_run_id)
        existing = {(s.task, s.probe, s.metric): s for s in run.scores}
        recorded = 0
        for result in results.values():
            for s in result.scores:
                row = existing.get((PROBE_TASK, s.probe, s.metric))
                if row is None:
                    row = Score(audit_run_id=run.id, task=PROBE_TASK, probe=s.probe, metric=s.metric)
                    session.add(row)
                row.value, row.ci_low, row.ci_high, row.n = s.value, s.ci_low, s.ci_high, s.n
                row.target = result.target
                row.recorded_at = utcnow()
                recorded += 1
        run.error = "; ".join(errors) or None
        if not recorded:
            raise ProbeError(f"audit run {run.id}: no probe produced scores ({run.error})")
    return ref.to_xcom()


def _live_ref(deployment: str, dag_id: str, run_id: str, step: str) -> RunRef:
    """The run's reference, or skip `step` when the run stopped earlier (its error is recorded)."""
    ref = find_ref(deployment, dag_id, run_id)
    if ref is None:
        raise _skip(f"{deployment}: no audit run was opened; nothing to {step}")
    with session_scope() as session:
        run = session.get(AuditRun, ref.audit_run_id)
        if run.status == "failed" and (run.error or "").startswith(f"{RETRYABLE} {step}: "):
            log.info("audit run %d: retrying %s after: %s", run.id, step, run.error)
            run.status, run.error, run.finished_at = "running", None, None   # Airflow's retry of this step
        if run.status in ("failed", "invalid"):
            raise _skip(f"{deployment}: audit run {run.id} is {run.status} ({run.error}); nothing to {step}")
        if step == "evaluate" and not run.scores:
            raise _skip(f"{deployment}: audit run {run.id} has no recorded scores; nothing to evaluate")
        if step == "act" and run.verdict is None:
            raise _skip(f"{deployment}: audit run {run.id} has no verdict; nothing to act on")
    return ref


def evaluate(deployment: str, dag_id: str, run_id: str) -> dict:
    """Set the run's scores against the effective thresholds and store the verdict."""
    from monitors.policy import INCONCLUSIVE
    from monitors.policy import evaluate as verdict_of

    ref = _live_ref(deployment, dag_id, run_id, "evaluate")
    with _failing_run(ref.audit_run_id, "evaluate"), session_scope() as session:
        run = session.get(AuditRun, ref.audit_run_id)
        thresholds = effective_thresholds(session, run.deployment)
        result = verdict_of(run.scores, thresholds)
        run.thresholds = {metric: {**asdict(levels)} for metric, levels in thresholds.items()}
        rising = trends_of(session, run, thresholds, {f.metric: f.level for f in result.findings})
        run.trends = {t.metric: t.to_json() for t in rising} or None
        run.verdict = "warn" if rising and result.verdict == "pass" else result.verdict
        if result.covered is False:
            log.warning("audit run %d: the attacker does not cover the sample (%s)", run.id,
                        ", ".join(f"{f.metric} {f.value:.3f}" for f in result.uncovered))
        elif (result.covered is None or run.error) and dag_id != DRIFT_DAG and run.verdict in ("pass", "warn"):
            # The coverage task or a probe failed: what it would have found is unknown, so no pass.
            run.verdict = INCONCLUSIVE
            log.warning("audit run %d: %s; the verdict is inconclusive", run.id,
                        run.error or "coverage was not measured")
        run.status = "succeeded"  # `error` keeps the failed probes, if any
        run.finished_at = utcnow()
        # Known now, written after the actions, so alerts can link it.
        run.report_path = str(Path(ref.artifact_dir) / "report.html")
        log.info("audit run %d: verdict %s", run.id, run.verdict)
    return ref.to_xcom()


def policy_for(config: EmbwardenConfig, ref: RunRef) -> actions.Policy:
    dep_cfg = config.deployment(ref.deployment)
    return actions.Policy(on_audit_error=dep_cfg.on_audit_error, reopen=dep_cfg.reopen,
                          channels=tuple(config.alert_channels(ref.deployment)),
                          report_url=report_url(config, Path(ref.artifact_dir)))


def report_url(config: EmbwardenConfig, folder: Path) -> str:
    """Where the run's report can be opened: under `artifacts.base_url` when set, else its path."""
    html = folder / "report.html"
    if not config.artifacts.base_url:
        return str(html)
    relative = html.relative_to(config.resolve(config.artifacts.root)).as_posix()
    return f"{config.artifacts.base_url.rstrip('/')}/{relative}"


def act(deployment: str, dag_id: str, run_id: str) -> dict:
    """Carry out the run's actions (see monitors.actions), each recorded before it happens.

    Runs for every opened audit run, also one that failed or was invalid (the policy decides
    what an audit that could not run does). Ledger-side actions come first, so the gate closes
    even when no alert can be sent; undelivered alerts stay `failed` and make this task fail
    so that Airflow retries them; alerts of earlier runs that are still undelivered are retried.
    """
    ref = find_ref(deployment, dag_id, run_id)
    if ref is None:
        raise _skip(f"{deployment}: no audit run was opened; nothing to act on")
    config = load_config()
    policy = policy_for(config, ref)
    with session_scope() as session:
        run = session.get(AuditRun, ref.audit_run_id)
        if run.verdict is None and run.status not in ("failed", "invalid"):
            raise _skip(f"{deployment}: audit run {run.id} is {run.status} without a verdict; nothing to act on")
        level = actions.level_of(run)
        plan = actions.planned(session, run, policy)
    refused: list[EmbwardenError] = []
    for kind in plan:
        with session_scope() as session:  # commit `pending` before the side effect
            pending = actions.begin(session, session.get(AuditRun, ref.audit_run_id), kind, f"level {level}")
            pending_id = pending.id if pending else None
        if pending_id is None:
            log.info("audit run %d: %s already done", ref.audit_run_id, kind)
            continue
        try:
            with session_scope() as session:
                detail = actions.perform(session, session.get(AuditRun, ref.audit_run_id), kind, policy)
                # reaudit is done when its asset event is emitted, alert when every channel got it.
                status = "pending" if kind in ("reaudit", "alert") else "done"
                actions.mark(session.get(Action, pending_id), status, detail)
        except EmbwardenError as exc:
            with session_scope() as session:
                actions.mark(session.get(Action, pending_id), "failed", error=str(exc))
            refused.append(exc)
            log.error("audit run %d: %s failed: %s", ref.audit_run_id, kind, exc)
    undelivered = []
    if "alert" in plan:
        undelivered = deliver_alerts(config, audit_run_id=ref.audit_run_id)
        with session_scope() as session:
            action = session.scalar(sa.select(Action).where(Action.audit_run_id == ref.audit_run_id,
                                                            Action.kind == "alert"))
            if action is not None and action.status != "done":
                actions.mark(action, "failed" if undelivered else "done",
                             error="; ".join(undelivered) or None)
    retry_earlier = deliver_alerts(config, deployment=deployment, exclude_run=ref.audit_run_id)
    if retry_earlier:
        log.warning("%d earlier alerts of %s are still undelivered", len(retry_earlier), deployment)
    if refused:
        raise _no_retry(refused[0])
    if undelivered:
        raise actions.AlertsUndelivered(f"{deployment}: alerts not delivered (recorded, retried): "
                                        + "; ".join(undelivered))
    return {"deployment": deployment, "level": level, "actions": list(plan)}


def deliver_alerts(config: EmbwardenConfig, audit_run_id: int | None = None, deployment: str | None = None,
                   exclude_run: int | None = None, unknown: bool = False) -> list[str]:
    """Send the alerts not yet delivered (of one run, or of a deployment); the errors of those that
    still fail.

    Each attempt is recorded (`sending`, attempts + 1) before the alert leaves: if the ledger then
    vanishes, a retry finds the alert `sending`, its outcome unknown, and does not send it again;
    `unknown=True` (`embwarden alerts retry`) sends those too, under the same delivery id, so a
    receiver that saw the first copy can drop the second. An undelivered alert is `superseded`, not
    sent, once a newer alert of its deployment went out on the same channel: an old `error` must
    not arrive after the `resolved` that ended it.
    """
    from monitors.notifiers import AlertDeliveryError, deliver

    retried = (*actions.UNSENT, "sending") if unknown else actions.UNSENT
    with session_scope() as session:
        query = sa.select(AlertRecord).where(AlertRecord.status.in_(retried))
        if audit_run_id is not None:
            query = query.where(AlertRecord.audit_run_id == audit_run_id)
        if deployment is not None:
            query = query.join(Deployment, Deployment.id == AlertRecord.deployment_id).where(
                Deployment.name == deployment)
        if exclude_run is not None:
            query = query.where(AlertRecord.audit_run_id != exclude_run)
        pending = [row.id for row in session.scalars(query.order_by(AlertRecord.id))]
        names = {d.id: d.name for d in session.scalars(sa.select(Deployment))}
    errors = []
    for alert_id in pending:
        with session_scope() as session:   # claim it: committed before anything is sent
            row = session.get(AlertRecord, alert_id, with_for_update=True)
            if row.status not in retried:
                continue                    # another worker took it meanwhile
            if actions.superseded(session, row):
                row.status, row.error = "superseded", "a newer alert of this deployment was sent on this channel"
                log.info("alert %d (%s) over %s: superseded", alert_id, row.kind, row.channel)
                continue
            row.status, row.attempts = "sending", row.attempts + 1
            alert, channel_name, dep_id = Alert.from_json(row.payload), row.channel, row.deployment_id
            delivery_id = actions.delivery_id(row)
        error = None
        try:
            if channel_name == actions.LOG_CHANNEL:
                logging.getLogger("embwarden.alerts").warning(alert.summary())
            else:
                channels = {f"{c.kind}:{c.connection}": c for c in config.alert_channels(names[dep_id])}
                if channel_name not in channels:
                    raise AlertDeliveryError(f"{channel_name}: no longer configured for {names[dep_id]}")
                deliver(alert, channels[channel_name], delivery_id)
        except EmbwardenError as exc:  # AlertDeliveryError, or a deployment gone from the configuration
            error = str(exc)
            errors.append(f"{channel_name}: {exc}")
        with session_scope() as session:
            row = session.get(AlertRecord, alert_id)
            row.status, row.error = ("failed", error) if error else ("sent", None)
            row.sent_at = None if error else utcnow()
        log.info("alert %d (%s) over %s: %s", alert_id, alert.kind, channel_name, "failed" if error else "sent")
    return errors


def reaudit_requests(deployments: list[str], dag_id: str, run_id: str) -> list[dict]:
    """The re-audits this run asked for (after a rollback), read from the ledger."""
    requests = []
    with session_scope() as session:
        rows = session.execute(sa.select(Action, Deployment.name).join(
            AuditRun, AuditRun.id == Action.audit_run_id).join(Deployment, Deployment.id == AuditRun.deployment_id)
            .where(AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, Deployment.name.in_(deployments),
                   Action.kind == "reaudit", Action.status == "pending").order_by(Action.id))
        for action, name in rows:
            requests.append({"deployment": name, "version": action.detail.get("version"), "action_id": action.id,
                             "reason": f"re-audit after rollback by audit run {action.audit_run_id}"})
    return requests


def reaudit_requested(request: dict) -> None:
    """Mark a re-audit request done: its Asset event is being emitted by the calling task."""
    with session_scope() as session:
        action = session.get(Action, request["action_id"])
        actions.mark(action, "done", {**action.detail, "requested": True, "asset": REAUDIT_ASSET})


def write_report(deployment: str, dag_id: str, run_id: str) -> str:
    """The run's report, whatever became of it: a failed run's report says why."""
    ref = find_ref(deployment, dag_id, run_id)
    if ref is None:
        raise _skip(f"{deployment}: no audit run was opened; no report")
    with session_scope() as session:
        run = session.get(AuditRun, ref.audit_run_id)
        content = report.build(session, run)
        html_path = report.write(Path(ref.artifact_dir), content)
        run.report_path = str(html_path)
    return str(html_path)


def rerender_report(audit_run_id: int, force: bool = False, config_path: str | None = None) -> str:
    """The path of a run's report.html; rendered (again) when asked or when the file is gone."""
    config = load_config(config_path)
    with session_scope() as session:
        run = session.get(AuditRun, audit_run_id)
        if run is None:
            raise ConfigError(f"audit run {audit_run_id}: no such run in the ledger")
        path = Path(run.report_path) if run.report_path else None
        if force or path is None or not path.is_file():
            folder = _folder(config, run.deployment.name, run.dag_id, run.run_id)
            path = report.write(folder, report.build(session, run))
            run.report_path = str(path)
        return str(path)


def cleanup(deployment: str, dag_id: str, run_id: str) -> int:
    """Delete the run's sample (production data) and prune folders past retention."""
    config = load_config()
    folder = _folder(config, deployment, dag_id, run_id)
    keep_reference(config, deployment, dag_id, run_id, folder)
    deleted = artifacts.delete_sample(folder)
    attacker.delete(folder)   # the production slice and every model fitted on it
    pruned = artifacts.prune(config.resolve(config.artifacts.root), config.artifacts.retention_days)
    log.info("cleanup of %s: sample deleted=%s, %d old run folders pruned", folder.name, deleted, pruned)
    return pruned


def outcome(deployments: list[str], dag_id: str, run_id: str) -> dict[str, str]:
    """Each deployment's verdict in this DAG run. The DAG's last task: it fails (not retried) when an
    audit could not judge (invalid, inconclusive, or no verdict because a step failed), so that the
    DAG run shows failed in Airflow's grid, after the report and the cleanup have run."""
    verdicts, unjudged = {}, []
    with session_scope() as session:
        for name in deployments:
            run = session.scalar(sa.select(AuditRun).join(AuditRun.deployment).where(
                AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, Deployment.name == name))
            verdict = run.verdict if run is not None and run.verdict else "error"
            verdicts[name] = verdict
            if verdict in actions.UNJUDGED:
                why = "no audit run was opened" if run is None else (run.error or "see the report")
                unjudged.append(f"{name}: {verdict} ({why[:300]})")
    log.info("verdicts of %s/%s: %s", dag_id, run_id, verdicts)
    if unjudged:
        raise _no_retry(EmbwardenError("could not judge " + "; ".join(unjudged)))
    return verdicts


def keep_reference(config: EmbwardenConfig, deployment: str, dag_id: str, run_id: str, folder: Path) -> None:
    """A privacy audit that passed leaves its sample's vectors (no ids, no text) as its version's
    drift reference; the next passing audit replaces them, the artifact retention removes them."""
    if dag_id != AUDIT_DAG or not (folder / artifacts.SAMPLE_FILE).is_file():
        return
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun).join(AuditRun.deployment).where(
            AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, Deployment.name == deployment))
        if run is None or run.verdict != "pass":
            return
        version = run.version.name
    drawn = artifacts.read_sample(folder)
    path = artifacts.write_reference(config.resolve(config.artifacts.root), deployment, version, drawn.vectors)
    log.info("%s/%s: %d vectors kept as the drift reference (%s)", deployment, version, len(drawn), path.name)


# -- embedding_drift -----------------------------------------------------------------------------
def has_reference(deployment: str) -> bool:
    """Whether the active version has a reference sample to compare the window with."""
    config = load_config()
    with session_scope() as session:
        dep = sync_deployment(session, deployment, config.deployment(deployment))
        version = dep.active_version.name
    return artifacts.reference_path(config.resolve(config.artifacts.root), deployment, version).is_file()


def drift(deployment: str, dag_id: str, run_id: str) -> dict:
    """The window against the version's reference: evidently's model-based AUC and MMD and a KS test
    on norms, written like a probe's scores (recorded, judged and acted on the same way), plus
    evidently's own HTML report in the run's folder."""
    from monitors.drift import compute

    ref = _live_ref(deployment, dag_id, run_id, "check drift")
    config = load_config()
    folder = Path(ref.artifact_dir)
    with _failing_run(ref.audit_run_id, "check drift"):
        with session_scope() as session:
            version = session.get(AuditRun, ref.audit_run_id).version.name
        reference = artifacts.read_reference(config.resolve(config.artifacts.root), deployment, version)
        if reference is None:
            raise InvalidSample(f"{deployment}/{version}: no reference sample (a passing privacy audit keeps one)")
        window = artifacts.read_sample(folder)
        seed = run_seed(dag_id, run_id, deployment)
        result = compute(window.vectors, reference, seed=seed)
        scores = tuple(result.scores())
        with session_scope() as session:
            thresholds = effective_thresholds(session, session.get(AuditRun, ref.audit_run_id).deployment)
        if any(s.key in thresholds and thresholds[s.key].crossed(thresholds[s.key].judged(s)) != "pass"
               for s in scores):
            # evidently's HTML draws a t-SNE (tens of seconds): only for a window that drifts.
            compute(window.vectors, reference, seed=seed, html_path=str(folder / report.DRIFT_REPORT))
        artifacts.write_probe_result(folder, ProbeResult("drift", "sample", scores))
        log.info("drift run %d: model_auc %.3f, mmd %.4f, norm_ks %.3f (%d vs %d vectors, %.1f s)",
                 ref.audit_run_id, result.model_auc, result.mmd, result.norm_ks, result.n_current,
                 result.n_reference, result.seconds)
    return ref.to_xcom()


# -- privacy_gate --------------------------------------------------------------------------------
def gate_change(deployment: str, action: str, version: str | None, reason: str, actor: str) -> dict:
    """A change by hand from the privacy_gate DAG; bad params fail once, with the field named."""
    from monitors.gates import change

    config = load_config()
    try:
        config.deployment(deployment)
        with session_scope() as session:
            sync(session, config)
            row = change(session, deployment, action, reason, actor, version=version or None)
            detail = dict(row.detail)
    except LedgerUnavailable:
        raise
    except EmbwardenError as exc:
        raise _no_retry(exc) from exc
    log.info("%s: %s by %s (%s)", deployment, action, actor, detail)
    reaudit = ({"deployment": deployment, "version": detail["to"], "reason": f"{action} by hand"}
               if detail.get("reaudit") else None)
    return {"deployment": deployment, "action": action, "detail": detail, "reaudit": reaudit}


def skip_unless(condition, reason: str) -> None:
    if not condition:
        raise _skip(reason)
