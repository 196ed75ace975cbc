"""The bodies of the embedding_drift tasks (dags/embedding_drift.py): the recent window of the
active version against its reference sample; recorded, judged and acted on by monitors.tasks.steps.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from audits import storage
from audits.audit import ProbeResult
from audits.errors import InvalidSample
from monitors import artifacts
from monitors.config import load_config
from monitors.deployments import build_pipeline, build_source, run_seed
from monitors.ledger.database import row, session_scope
from monitors.ledger.models import AuditRun
from monitors.ledger.registry import sync_deployment
from monitors.reports.audit_report import DRIFT_REPORT
from monitors.tasks import steps
from monitors.tasks.common import failing_run, list_deployments, live_ref, skip
from monitors.tasks.steps import act, cleanup, outcome, validate, write_report
from monitors.thresholds import effective_thresholds

# The DAG's task bodies, in the order they run (shared steps included: the DAG imports only this module).
__all__ = [
    "list_deployments", "has_reference", "window", "validate", "drift", "record", "evaluate", "act",
    "write_report", "cleanup", "outcome",
]

log = logging.getLogger("monitors.tasks")


def window(deployment: str, dag_id: str, run_id: str, window_end: float) -> dict:
    """Open the run and draw the window: the active version's rows created in the configured
    `drift.window_hours` before `window_end` (UTC epoch seconds, fixed by the DAG run so that a
    retry draws the same rows), up to `drift.sample_size`."""
    config = load_config()
    dep_cfg = config.deployment(deployment)
    if dep_cfg.drift is None:
        raise skip(f"{deployment}: drift checks are off (drift: null)")
    ref, version = steps.open_run(config, deployment, dag_id, run_id)
    with failing_run(ref.audit_run_id, "sample"):
        steps.draw_sample(ref, version, build_pipeline(config, deployment, version), build_source(config, deployment),
                          dep_cfg.drift.sample_size, since=window_end - dep_cfg.drift.window_hours * 3600)
    return ref.to_xcom()


def has_reference(deployment: str) -> bool:
    """Whether the active version has a reference sample to compare the window with."""
    config = load_config()
    with session_scope() as session:
        dep = sync_deployment(session, deployment, config.deployment(deployment))
        version = dep.active_version.name
    return artifacts.has_reference(config.artifacts_root, deployment, version)


def drift(deployment: str, dag_id: str, run_id: str) -> dict:
    """The window against the version's reference: evidently's model-based AUC and MMD and a KS test
    on norms, written like a probe's scores (recorded, judged and acted on the same way), plus
    evidently's own HTML report in the run's folder."""
    from monitors.drift import compute  # evidently: imported by the task that uses it

    ref = live_ref(deployment, dag_id, run_id, "check drift")
    config = load_config()
    folder = ref.folder
    with failing_run(ref.audit_run_id, "check drift"):
        with session_scope() as session:
            version = row(session, AuditRun, ref.audit_run_id).version.name
        reference = artifacts.read_reference(config.artifacts_root, deployment, version)
        if reference is None:
            raise InvalidSample(f"{deployment}/{version}: no reference sample (a passing privacy audit keeps one)")
        window = artifacts.read_sample(folder)
        seed = run_seed(dag_id, run_id, deployment)
        result = compute(window.vectors, reference, seed=seed)
        scores = tuple(result.scores())
        with session_scope() as session:
            thresholds = effective_thresholds(session, row(session, AuditRun, ref.audit_run_id).deployment)
        if any(s.key in thresholds and thresholds[s.key].crossed(thresholds[s.key].judged(s)) != "pass"
               for s in scores):
            # evidently's HTML draws a t-SNE (tens of seconds): only for a window that drifts.
            with tempfile.TemporaryDirectory() as scratch:   # evidently writes a local file; it may go remote
                html = Path(scratch) / DRIFT_REPORT
                compute(window.vectors, reference, seed=seed, html_path=str(html))
                storage.write_bytes(folder / DRIFT_REPORT, html.read_bytes())
        artifacts.write_probe_result(folder, ProbeResult("drift", "sample", scores))
        log.info("drift run %d: model_auc %.3f, mmd %.4f, norm_ks %.3f (%d vs %d vectors, %.1f s)",
                 ref.audit_run_id, result.model_auc, result.mmd, result.norm_ks, result.n_current,
                 result.n_reference, result.seconds)
    return ref.to_xcom()


def record(deployment: str, dag_id: str, run_id: str) -> dict:
    return steps.record(deployment, dag_id, run_id, ["drift"])


def evaluate(deployment: str, dag_id: str, run_id: str) -> dict:
    """The drift verdict; coverage is a leakage audit's matter."""
    return steps.evaluate(deployment, dag_id, run_id, coverage_required=False)
