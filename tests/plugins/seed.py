"""A ledger filled with synthetic audit runs (direct ORM inserts) for the plugin's tests and benchmark."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitors.config import EmbwardenConfig
from monitors.ledger.database import session_scope
from monitors.ledger.models import AuditRun, Score
from monitors.ledger.registry import get_deployment, get_version, sync
from monitors.thresholds import _levels_dict, effective_thresholds

METRICS = ("bow_inversion.token_f1", "bow_inversion.token_recall", "bow_inversion.token_precision",
           "bow_inversion.secret_recovery", "candidate_inversion.top1", "candidate_inversion.top5",
           "candidate_inversion.exposure_bits", "attribute_inference.auc", "attribute_inference.advantage",
           "generative_inversion.token_f1")


def seed(url: str, config: EmbwardenConfig, runs: int = 8, metrics: tuple[str, ...] = METRICS[:2],
         report_dir: Path | None = None) -> list[int]:
    """`runs` finished runs per deployment of `config` (v1, the last one v2 crossing the gate), oldest first.

    The last run's report.html is written under `report_dir` when given. Returns the audit run ids.
    """
    ids = []
    start = datetime.now(UTC) - timedelta(days=runs)
    with session_scope(url) as session:
        sync(session, config)
        session.flush()
        for name in config.deployments:
            dep = get_deployment(session, name)
            levels = {m: _levels_dict(lv) for m, lv in effective_thresholds(session, dep).items()}
            objs = []
            for i in range(runs):
                last = i == runs - 1
                version = get_version(session, dep, "v2" if last else "v1")
                at = start + timedelta(days=i)
                run = AuditRun(dag_id="privacy_audit", run_id=f"scheduled__{at:%Y-%m-%dT%H}", deployment_id=dep.id,
                               version_id=version.id, status="succeeded", verdict="gate" if last else "pass",
                               sample_size=120, thresholds=levels, started_at=at, finished_at=at + timedelta(minutes=3))
                session.add(run)
                objs.append(run)
            session.flush()
            rows = []
            for i, run in enumerate(objs):
                for j, metric in enumerate(metrics):
                    probe, m = metric.split(".", 1)
                    value = 0.52 if (i == runs - 1 and metric == "bow_inversion.token_f1") else \
                        0.30 + 0.05 * math.sin(i / 3 + j) + 0.002 * i
                    rows.append(Score(audit_run_id=run.id, task=f"probe_{probe}", probe=probe, metric=m,
                                      target="sample", value=value, ci_low=value - 0.04, ci_high=value + 0.04, n=120))
            session.add_all(rows)
            if report_dir is not None:
                path = report_dir / name / f"run-{objs[-1].id}" / "report.html"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("<!doctype html><html><body><h1>embwarden audit report</h1>"
                                "<p id='verdict'>gate</p></body></html>")
                objs[-1].report_path = str(path)
            ids += [r.id for r in objs]
    return ids
