"""The steps privacy_audit and embedding_drift share: open the run and draw its sample, validate
it, record the scores, judge them, act, report, clean up, and say the outcome.

sample -> validate -> (probes | drift) -> record -> evaluate -> act -> report, then cleanup and
outcome (always). What differs between the two DAGs is passed in (the results a run expects,
whether coverage must be measured); their own steps live in their modules.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import sqlalchemy as sa

from audits.errors import EmbwardenError, InvalidSample, ProbeError
from audits.results import Sample
from monitors import actions, artifacts, score_metrics, targets, verdicts
from monitors.alerts import AlertsUndelivered, deliver_alerts, prepare_alerts
from monitors.config import EmbwardenConfig, load_config
from monitors.deployments import build_transform, run_seed
from monitors.ledger.database import row, session_scope
from monitors.ledger.models import Action, AuditRun, Deployment, Score, Validation, Version, utcnow
from monitors.ledger.registry import sync_deployment
from monitors.reports import audit_report
from monitors.tasks.common import RunRef, failing_run, find_ref, live_ref, no_retry, run_folder, skip
from monitors.thresholds import effective_thresholds
from monitors.trends import trends_of
from monitors.verdicts import INCONCLUSIVE, UNJUDGED, level_of

log = logging.getLogger("monitors.tasks")

PROBE_TASK = "probe"   # the `task` of every recorded score (probes and the drift check alike)


def open_run(config: EmbwardenConfig, deployment: str, dag_id: str, run_id: str) -> tuple[RunRef, str]:
    """Open (or reopen, on retry) the audit run of the deployment's active version; its reference
    and the version's name."""
    with session_scope() as session:
        dep = sync_deployment(session, deployment, config.deployment(deployment))
        run = session.scalar(sa.select(AuditRun).where(
            AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, AuditRun.deployment_id == dep.id))
        if run is None:
            run = AuditRun(dag_id=dag_id, run_id=run_id, deployment_id=dep.id, version_id=dep.active_version_id)
            session.add(run)
        run.status, run.verdict, run.error, run.finished_at = "running", None, None, None
        session.flush()
        ref = RunRef(deployment, dag_id, run_id, run.id, str(run_folder(config, deployment, dag_id, run_id)))
        return ref, row(session, Version, run.version_id).name


def draw_sample(ref: RunRef, version: str, pipeline, source, size: int, since: float | None = None) -> Sample:
    """Draw the run's sample (seeded by the run, so a retry draws the same rows) into its folder."""
    started = time.perf_counter()
    drawn = source.draw(version, size, run_seed(ref.dag_id, ref.run_id, ref.deployment), pipeline.dimension,
                        since=since)
    artifacts.write_sample(ref.folder, drawn)
    with session_scope() as session:
        row(session, AuditRun, ref.audit_run_id).sample_size = len(drawn)
    log.info("audit run %d: sampled %d vectors of %s/%s in %.1f s", ref.audit_run_id, len(drawn),
             ref.deployment, version, time.perf_counter() - started)
    return drawn


def validate(deployment: str, dag_id: str, run_id: str) -> dict:
    """Check the run's sample with Great Expectations and record the result; a sample that fails
    is deleted and makes the run `invalid` (it alerts; its probes never run)."""
    from monitors import validation  # Great Expectations: imported by the task that uses it

    ref = live_ref(deployment, dag_id, run_id, "validate")
    config = load_config()
    vcfg = config.deployment(deployment).validation
    folder = ref.folder
    with failing_run(ref.audit_run_id, "validate"):
        with session_scope() as session:
            run = row(session, AuditRun, ref.audit_run_id)
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
        stored = session.scalar(sa.select(Validation).where(Validation.audit_run_id == audit_run_id,
                                                         Validation.kind == kind))
        if stored is None:
            stored = Validation(audit_run_id=audit_run_id, kind=kind)
            session.add(stored)
        stored.success, stored.row_count, stored.results, stored.created_at = (report.success, report.row_count,
                                                                   report.to_json(), utcnow())


def validated(audit_run_id: int) -> bool:
    with session_scope() as session:
        return bool(session.scalar(sa.select(Validation.success).where(Validation.audit_run_id == audit_run_id,
                                                                       Validation.kind == "sample")))


def record(deployment: str, dag_id: str, run_id: str, expected: list[str]) -> dict:
    """Write every result's scores to the ledger (overwriting this run's earlier attempt) and note on
    the run the `expected` results (probes, coverage, drift) that failed or are missing. Runs
    whatever became of the tasks that wrote them."""
    ref = live_ref(deployment, dag_id, run_id, "record")
    results = artifacts.read_probe_results(ref.folder)
    errors = [f"{name}: {results[name].error}" if name in results else f"{name}: no result (task failed, see its log)"
              for name in expected if name not in results or results[name].error]
    with failing_run(ref.audit_run_id, "record"), session_scope() as session:
        run = row(session, AuditRun, ref.audit_run_id)
        existing = {(s.task, s.probe, s.metric): s for s in run.scores}
        recorded = 0
        for result in results.values():
            for s in result.scores:
                stored = existing.get((PROBE_TASK, s.probe, s.metric))
                if stored is None:
                    stored = Score(audit_run_id=run.id, task=PROBE_TASK, probe=s.probe, metric=s.metric)
                    session.add(stored)
                stored.value, stored.ci_low, stored.ci_high, stored.n = s.value, s.ci_low, s.ci_high, s.n
                stored.target = result.target
                stored.recorded_at = utcnow()
                recorded += 1
        run.error = "; ".join(errors) or None
        if not recorded:
            raise ProbeError(f"audit run {run.id}: no probe produced scores ({run.error})")
    # Also to Airflow's metrics (StatsD / OpenTelemetry, as its config says), for users' own dashboards.
    score_metrics.emit_scores(deployment, [s for result in results.values() for s in result.scores])
    return ref.to_xcom()


def evaluate(deployment: str, dag_id: str, run_id: str, coverage_required: bool) -> dict:
    """Set the run's scores against the effective thresholds and store the verdict. With
    `coverage_required` (leakage audits), a run whose coverage or a probe failed cannot pass."""
    ref = live_ref(deployment, dag_id, run_id, "evaluate")
    with failing_run(ref.audit_run_id, "evaluate"), session_scope() as session:
        run = row(session, AuditRun, ref.audit_run_id)
        thresholds = effective_thresholds(session, run.deployment)
        result = verdicts.evaluate(run.scores, thresholds)
        run.thresholds = {metric: {**asdict(levels)} for metric, levels in thresholds.items()}
        rising = trends_of(session, run, thresholds, {f.metric: f.level for f in result.findings})
        run.trends = {t.metric: t.to_json() for t in rising} or None
        run.verdict = "warn" if rising and result.verdict == "pass" else result.verdict
        if result.covered is False:
            log.warning("audit run %d: the attacker does not cover the sample (%s)", run.id,
                        ", ".join(f"{f.metric} {f.value:.3f}" for f in result.uncovered))
        elif (result.covered is None or run.error) and coverage_required and run.verdict in ("pass", "warn"):
            # The coverage task or a probe failed: what it would have found is unknown, so no pass.
            run.verdict = INCONCLUSIVE
            log.warning("audit run %d: %s; the verdict is inconclusive", run.id,
                        run.error or "coverage was not measured")
        run.status = "succeeded"  # `error` keeps the failed probes, if any
        run.finished_at = utcnow()
        # Known now, written after the actions, so alerts can link it.
        run.report_path = str(ref.folder / "report.html")
        log.info("audit run %d: verdict %s", run.id, run.verdict)
    return ref.to_xcom()


def policy_for(config: EmbwardenConfig, ref: RunRef) -> actions.Policy:
    dep_cfg = config.deployment(ref.deployment)
    return actions.Policy(on_audit_error=dep_cfg.on_audit_error, reopen=dep_cfg.reopen,
                          channels=tuple(config.alert_channels(ref.deployment)), targets=tuple(dep_cfg.targets),
                          report_url=audit_report.report_url(config, ref.folder))


def act(deployment: str, dag_id: str, run_id: str) -> dict:
    """Carry out the run's actions (see monitors.actions), each recorded before it happens.

    Runs for every opened audit run, also one that failed or was invalid (the policy decides
    what an audit that could not run does). Ledger-side actions come first, so the gate closes
    even when no alert can be sent; undelivered alerts stay `failed` and make this task fail
    so that Airflow retries them; alerts of earlier runs that are still undelivered are retried.
    """
    ref = find_ref(deployment, dag_id, run_id)
    if ref is None:
        raise skip(f"{deployment}: no audit run was opened; nothing to act on")
    config = load_config()
    policy = policy_for(config, ref)
    with session_scope() as session:
        run = row(session, AuditRun, ref.audit_run_id)
        if run.verdict is None and run.status not in ("failed", "invalid"):
            raise skip(f"{deployment}: audit run {run.id} is {run.status} without a verdict; nothing to act on")
        level = level_of(run)
        plan = actions.planned(session, run, policy)
    refused: list[EmbwardenError] = []
    unsynced: list[str] = []
    for kind in plan:
        with session_scope() as session:  # commit `pending` before the side effect
            pending = actions.begin(session, row(session, AuditRun, ref.audit_run_id), kind, f"level {level}")
            pending_id = pending.id if pending else None
        if pending_id is None:
            log.info("audit run %d: %s already done", ref.audit_run_id, kind)
            continue
        if kind == targets.SYNC:   # outside any transaction: it talks to the targets
            unsynced += targets.sync_run(config, ref.audit_run_id, pending_id)
            continue
        try:
            with session_scope() as session:
                run = row(session, AuditRun, ref.audit_run_id)
                # An alert is prepared here (one row per channel) and sent below.
                detail = prepare_alerts(session, run, policy) if kind == "alert" else actions.perform(
                    session, run, kind, policy)
                # reaudit is done when its asset event is emitted, alert when every channel got it.
                status = "pending" if kind in ("reaudit", "alert") else "done"
                actions.mark(row(session, Action, pending_id), status, detail)
        except EmbwardenError as exc:
            with session_scope() as session:
                actions.mark(row(session, Action, pending_id), "failed", error=str(exc))
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
    if unsynced:   # the ledger acted; the targets are retried with the task (first: a refused action must not
        # stop that retry; it stays `failed` and logged), shown out of sync until then
        raise targets.TargetUnavailable(f"{deployment}: target out of sync (recorded, retried): "
                                        + "; ".join(unsynced))
    if refused:
        raise no_retry(refused[0])
    if undelivered:
        raise AlertsUndelivered(f"{deployment}: alerts not delivered (recorded, retried): "
                                        + "; ".join(undelivered))
    return {"deployment": deployment, "level": level, "actions": list(plan)}


def write_report(deployment: str, dag_id: str, run_id: str) -> str:
    """The run's report, whatever became of it: a failed run's report says why."""
    ref = find_ref(deployment, dag_id, run_id)
    if ref is None:
        raise skip(f"{deployment}: no audit run was opened; no report")
    with session_scope() as session:
        run = row(session, AuditRun, ref.audit_run_id)
        content = audit_report.build(session, run)
        html_path = audit_report.write(ref.folder, content)
        run.report_path = str(html_path)
    return str(html_path)


def cleanup(deployment: str, dag_id: str, run_id: str) -> int:
    """Delete the run's sample (production data) and prune folders past retention."""
    config = load_config()
    folder = run_folder(config, deployment, dag_id, run_id)
    deleted = artifacts.delete_sample(folder)
    pruned = artifacts.prune(config.artifacts_root, config.artifacts.retention_days)
    log.info("cleanup of %s: sample deleted=%s, %d old run folders pruned", run_id, deleted, pruned)
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
            if verdict in UNJUDGED:
                why = "no audit run was opened" if run is None else (run.error or "see the report")
                unjudged.append(f"{name}: {verdict} ({why[:300]})")
    log.info("verdicts of %s/%s: %s", dag_id, run_id, verdicts)
    if unjudged:
        raise no_retry(EmbwardenError("could not judge " + "; ".join(unjudged)))
    return verdicts
