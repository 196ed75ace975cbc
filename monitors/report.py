"""The audit report of one run: report.json (data) and report.html (rendered from it).

Computing and rendering are kept apart: `build` gathers numbers from the ledger, `write`
renders them. The report holds names and numbers only, never sampled text or vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session

from monitors.ledger import Action, AlertRecord, AuditRun, GateEvent
from monitors.policy import Levels
from monitors.registry import gate_state


def build(session: Session, run: AuditRun) -> dict:
    dep = run.deployment
    gate = gate_state(session, dep)
    thresholds = run.thresholds or {}
    scores = []
    for s in run.scores:
        levels = thresholds.get(s.key)
        scores.append({
            "metric": s.key, "target": s.target, "value": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n,
            "thresholds": levels,
            "level": _level(levels, s) if levels else "no threshold",
        })
    run_actions = session.scalars(sa.select(Action).where(Action.audit_run_id == run.id).order_by(Action.id))
    gate_events = session.scalars(sa.select(GateEvent).where(GateEvent.audit_run_id == run.id))
    alerts = session.scalars(sa.select(AlertRecord).where(AlertRecord.audit_run_id == run.id).order_by(AlertRecord.id))
    return {
        "deployment": dep.name,
        "version": run.version.name,
        "verdict": run.verdict,
        "status": run.status,
        "error": run.error,
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "audit_run_id": run.id,
        "sample_size": run.sample_size,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "actions": [{"kind": a.kind, "status": a.status, "detail": a.detail, "error": a.error} for a in run_actions],
        "gate": {"state": gate.state if gate else "open", "reason": gate.reason if gate else None},
        "gate_events": [{"state": g.state, "reason": g.reason} for g in gate_events],
        "alerts": [{"kind": a.kind, "channel": a.channel, "status": a.status, "attempts": a.attempts,
                    "error": a.error} for a in alerts],
        "active_version": dep.active_version.name if dep.active_version else None,
        "scores": scores,
    }


def _level(levels: dict, score) -> str:
    judged = Levels.from_mapping(levels)
    return judged.crossed(judged.judged(score))


_env = Environment(loader=PackageLoader("monitors", "templates"), autoescape=select_autoescape(["html"]))


def write(folder: Path, content: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(content, indent=2, default=str))
    html_path = folder / "report.html"
    html_path.write_text(_env.get_template("report.html").render(r=content))
    return html_path
