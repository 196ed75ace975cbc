"""The bodies of the privacy_audit tasks (dags/privacy_audit.py): sample, probes, coverage, the
leakage verdict, re-audits; the steps it shares with embedding_drift are in monitors.tasks.steps.

Each takes and returns a small RunRef (ids and a folder), never data.
"""

from __future__ import annotations

import logging

import numpy as np
import sqlalchemy as sa

from audits import corpora
from audits.audit import Auditor, ProbeResult, embed_corpus
from audits.coverage import PROBE as COVERAGE
from audits.errors import EmbwardenError, ProbeError, SourceUnavailable
from audits.storage import Location
from monitors import actions, artifacts, auxiliary_corpus
from monitors.assets import REAUDIT_ASSET
from monitors.config import EmbwardenConfig, load_config, uses_production
from monitors.deployments import auditor_seed, build_pipeline, build_source, run_seed
from monitors.ledger.database import LedgerUnavailable, row, session_scope
from monitors.ledger.models import Action, AuditRun, Deployment
from monitors.tasks import steps
from monitors.tasks.common import RunRef, failing_run, find_ref, list_deployments, no_retry, run_folder
from monitors.tasks.steps import act, outcome, validate, write_report

# The DAG's task bodies, in the order they run (shared steps included: the DAG imports only this module).
__all__ = [
    "list_deployments", "sample", "validate", "probe_jobs", "probe", "record", "evaluate", "act",
    "reaudit_requests", "reaudit_requested", "write_report", "cleanup", "outcome",
]

log = logging.getLogger("monitors.tasks")


def sample(deployment: str, dag_id: str, run_id: str) -> dict:
    """Open (or reopen, on retry) the audit run and draw its sample, and the attacker's production
    slice when it uses one, into the run's folder."""
    config = load_config()
    dep_cfg = config.deployment(deployment)
    ref, version = steps.open_run(config, deployment, dag_id, run_id)
    with failing_run(ref.audit_run_id, "sample"):
        pipeline = build_pipeline(config, deployment, version)
        source = build_source(config, deployment)
        # An attacker's corpus that cannot be built fails the run before any drawing.
        auxiliary_corpus.check(config, deployment, source, version)
        drawn = steps.draw_sample(ref, version, pipeline, source, dep_cfg.sample_size)
        if uses_production(dep_cfg.auxiliary_corpus):
            drew = auxiliary_corpus.draw_production(config, deployment, source, version, drawn,
                                                    run_seed(dag_id, run_id, deployment, "attacker"),
                                                    ref.folder)
            log.info("audit run %d: %d production texts drawn for the attacker (disjoint from the sample)",
                     ref.audit_run_id, drew)
    return ref.to_xcom()


def probe_jobs(deployments: list[str], dag_id: str, run_id: str) -> list[dict]:
    """One job per (deployment, probe) whose sample was drawn: the mapped probe tasks' inputs.

    Read from the ledger rather than from the sample tasks' XCom, so one deployment's failed
    sample does not stop the others' probes.
    """
    config = load_config()
    jobs = []
    for deployment in deployments:
        ref = find_ref(deployment, dag_id, run_id)
        if ref is None or not artifacts.has_sample(ref.folder):
            log.warning("%s: no sample for this run; its probes are skipped", deployment)
            continue
        if not steps.validated(ref.audit_run_id):
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
        version = row(session, AuditRun, ref.audit_run_id).version.name
    folder = ref.folder
    try:
        pipeline = build_pipeline(config, ref.deployment, version)
        seed = auditor_seed(config, ref.deployment)
        auditor = Auditor(pipeline, auxiliary_corpus.corpus(config, ref.deployment, folder), seed=seed,
                          cache_dir=auxiliary_corpus.cache_dir(config, ref.deployment, folder))
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
    artifacts.write_probe_result(folder, result)
    if result.error:
        raise no_retry(ProbeError(f"{ref.deployment}/{name}: {result.error}"))
    log.info("audit run %d: %s scored %d metrics on %s", ref.audit_run_id, name, len(result.scores), result.target)
    return {"deployment": ref.deployment, "probe": name, "target": result.target, "scores": len(result.scores)}


def record(deployment: str, dag_id: str, run_id: str) -> dict:
    """Record the probes' and the coverage's scores; a probe that failed is noted on the run."""
    return steps.record(deployment, dag_id, run_id, [*load_config().deployment(deployment).probes, COVERAGE])


def evaluate(deployment: str, dag_id: str, run_id: str) -> dict:
    """The leakage verdict: no pass without coverage measured and every probe scored."""
    return steps.evaluate(deployment, dag_id, run_id, coverage_required=True)


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
        action = row(session, Action, request["action_id"])
        actions.mark(action, "done", {**action.detail, "requested": True, "asset": REAUDIT_ASSET})


def cleanup(deployment: str, dag_id: str, run_id: str) -> int:
    """Keep a passing sample's vectors as the drift reference, then delete the sample, the attacker's
    production slice and every model fitted on it, and prune folders past retention."""
    config = load_config()
    folder = run_folder(config, deployment, dag_id, run_id)
    keep_reference(config, deployment, dag_id, run_id, folder)
    auxiliary_corpus.delete(folder)
    return steps.cleanup(deployment, dag_id, run_id)


def keep_reference(config: EmbwardenConfig, deployment: str, dag_id: str, run_id: str, folder: Location) -> None:
    """A privacy audit that passed leaves its sample's vectors (no ids, no text) as its version's
    drift reference; the next passing audit replaces them, the artifact retention removes them."""
    if not artifacts.has_sample(folder):
        return
    with session_scope() as session:
        run = session.scalar(sa.select(AuditRun).join(AuditRun.deployment).where(
            AuditRun.dag_id == dag_id, AuditRun.run_id == run_id, Deployment.name == deployment))
        if run is None or run.verdict != "pass":
            return
        version = run.version.name
    drawn = artifacts.read_sample(folder)
    path = artifacts.write_reference(config.artifacts_root, deployment, version, drawn.vectors)
    log.info("%s/%s: %d vectors kept as the drift reference (%s)", deployment, version, len(drawn), path.name)
