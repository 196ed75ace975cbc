"""Read-only, set-based queries behind the plugin's pages and API: a few queries per page, none per row.

Nothing here returns sampled text: deployments, versions, runs, scores, thresholds, gates and actions
are names, numbers, times and the reasons people typed.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from monitors import thresholds
from monitors.assets import AUDIT_DAG, DRIFT_DAG
from monitors.coverage import coverage_explanation
from monitors.ledger.models import Action, AuditRun, Deployment, GateEvent, Score, Version
from monitors.ledger.registry import get_deployment
from monitors.reports import plain_words
from monitors.thresholds import Levels, is_coverage
from monitors.verdicts import INCONCLUSIVE, SEVERITY


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


NOT_JUDGED = "not judged"   # a score without thresholds: the UI, the report and the API say so alike


def _judge(score_row, levels: dict | None) -> dict:
    """One score against its levels: the level it crosses and how close it is to the gate level."""
    out = {"metric": f"{score_row.probe}.{score_row.metric}", "value": score_row.value, "ci_low": score_row.ci_low,
           "ci_high": score_row.ci_high, "level": NOT_JUDGED, "levels": levels}
    if not levels:   # no level to judge it by: never shown as a pass; flagged when it shows strong leakage
        strong = plain_words.STRONG.get(out["metric"])
        out["strong"] = strong is not None and score_row.value >= strong
        out["closeness"] = score_row.value / strong if out["strong"] else 0.0
        return out
    lv = Levels.from_mapping(levels)
    judged = lv.judged(score_row)
    out["judged"] = judged
    out["level"] = lv.crossed(judged)
    if is_coverage(out["metric"]):   # judges the attacker, not the pipeline: never a leakage level
        out["level"], out["closeness"] = ("covered" if out["level"] == "pass" else "not covered"), 0.0
        return out
    ref = next((getattr(lv, k) for k in ("gate", "warn", "rollback") if getattr(lv, k) is not None), None)
    if ref is None or ref == 0:
        out["closeness"] = 0.0
    else:
        out["closeness"] = judged / ref if lv.higher_is_worse else (ref / judged if judged else float("inf"))
    return out


def worst(findings: list[dict]) -> dict | None:
    """The finding with the most severe level; among passes, an unjudged score that shows strong leakage;
    then the one nearest (or furthest past) its gate level."""
    if not findings:
        return None
    return max(findings, key=lambda f: (SEVERITY.get(f["level"], 0), f.get("strong", False), f["closeness"]))


def overview(session: Session) -> list[dict]:
    """Every deployment: gate, active version, last finished run and its worst metric. Two queries."""
    last_gate = (sa.select(GateEvent.deployment_id, sa.func.max(GateEvent.id).label("gid"))
                 .group_by(GateEvent.deployment_id).subquery())
    last_run = (sa.select(AuditRun.deployment_id, sa.func.max(AuditRun.id).label("rid"))
                .where(AuditRun.finished_at.is_not(None), AuditRun.dag_id.in_((AUDIT_DAG, DRIFT_DAG)))
                .group_by(AuditRun.deployment_id).subquery())   # not a candidate judged before deploy
    active = aliased(Version)
    run_version = aliased(Version)
    rows = session.execute(
        sa.select(Deployment.name, active.name.label("active_version"), GateEvent.state, GateEvent.reason,
                  GateEvent.actor, GateEvent.created_at.label("gate_since"), AuditRun.id.label("run_id"),
                  AuditRun.verdict, AuditRun.status, AuditRun.finished_at, AuditRun.thresholds,
                  run_version.name.label("run_version"))
        .select_from(Deployment)
        .outerjoin(active, active.id == Deployment.active_version_id)
        .outerjoin(last_gate, last_gate.c.deployment_id == Deployment.id)
        .outerjoin(GateEvent, GateEvent.id == last_gate.c.gid)
        .outerjoin(last_run, last_run.c.deployment_id == Deployment.id)
        .outerjoin(AuditRun, AuditRun.id == last_run.c.rid)
        .outerjoin(run_version, run_version.id == AuditRun.version_id)
        .order_by(Deployment.name)).all()
    run_ids = [r.run_id for r in rows if r.run_id is not None]
    scores: dict[int, list] = {}
    if run_ids:
        for s in session.execute(sa.select(Score.audit_run_id, Score.probe, Score.metric, Score.value, Score.ci_low,
                                           Score.ci_high).where(Score.audit_run_id.in_(run_ids))):
            scores.setdefault(s.audit_run_id, []).append(s)
    out = []
    for r in rows:
        levels = r.thresholds or {}
        findings = [_judge(s, levels.get(f"{s.probe}.{s.metric}")) for s in scores.get(r.run_id, [])]
        out.append({"name": r.name, "gate": {"state": r.state or "open", "reason": r.reason or "", "actor": r.actor,
                                             "since": _iso(r.gate_since)},
                    "active_version": r.active_version,
                    "last_run": None if r.run_id is None else {
                        "id": r.run_id, "verdict": r.verdict, "status": r.status, "version": r.run_version,
                        "finished_at": _iso(r.finished_at)},
                    "worst": worst(findings)})
    return out


def runs(session: Session, deployment: str, limit: int = 50) -> list[dict]:
    dep = get_deployment(session, deployment)
    rows = session.execute(
        sa.select(AuditRun.id, AuditRun.dag_id, AuditRun.run_id, AuditRun.status, AuditRun.verdict,
                  AuditRun.sample_size, AuditRun.started_at, AuditRun.finished_at, AuditRun.error,
                  AuditRun.report_path.is_not(None).label("has_report"), Version.name.label("version"))
        .join(Version, Version.id == AuditRun.version_id)
        .where(AuditRun.deployment_id == dep.id).order_by(AuditRun.id.desc()).limit(limit)).all()
    return [{"id": r.id, "dag_id": r.dag_id, "run_id": r.run_id, "status": r.status, "verdict": r.verdict,
             "version": r.version, "sample_size": r.sample_size, "started_at": _iso(r.started_at),
             "finished_at": _iso(r.finished_at), "error": r.error, "has_report": bool(r.has_report)} for r in rows]


def scores(session: Session, deployment: str, metric: str | None = None, limit: int = 400) -> list[dict]:
    """Scores of the deployment's finished runs, oldest first (the newest `limit` runs)."""
    dep = get_deployment(session, deployment)
    recent = (sa.select(AuditRun.id).where(AuditRun.deployment_id == dep.id, AuditRun.finished_at.is_not(None))
              .order_by(AuditRun.id.desc()).limit(limit).subquery())
    query = (sa.select(Score.audit_run_id, Score.probe, Score.metric, Score.target, Score.value, Score.ci_low,
                       Score.ci_high, Score.n, AuditRun.finished_at, Version.name.label("version"))
             .join(AuditRun, AuditRun.id == Score.audit_run_id).join(Version, Version.id == AuditRun.version_id)
             .where(Score.audit_run_id.in_(sa.select(recent.c.id))))
    if metric:
        probe, _, name = metric.partition(".")
        query = query.where(Score.probe == probe, Score.metric == name)
    rows = session.execute(query.order_by(AuditRun.finished_at, Score.id)).all()
    return [{"audit_run_id": r.audit_run_id, "metric": f"{r.probe}.{r.metric}", "target": r.target,
             "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n,
             "finished_at": _iso(r.finished_at), "version": r.version} for r in rows]


def versions(session: Session, deployment: str) -> list[dict]:
    """Each version with its number of runs, its verdict counts and its last verdict. Two queries."""
    dep = get_deployment(session, deployment)
    counts = session.execute(
        sa.select(AuditRun.version_id, AuditRun.verdict, sa.func.count(), sa.func.max(AuditRun.id))
        .where(AuditRun.deployment_id == dep.id).group_by(AuditRun.version_id, AuditRun.verdict)).all()
    by_version: dict[int, dict] = {}
    for version_id, verdict, n, last_id in counts:
        entry = by_version.setdefault(version_id, {"runs": 0, "verdicts": {}, "last_id": 0, "last_verdict": None})
        entry["runs"] += n
        entry["verdicts"][verdict or "unjudged"] = n
        if last_id > entry["last_id"]:
            entry["last_id"], entry["last_verdict"] = last_id, verdict
    rows = session.execute(sa.select(Version.id, Version.name, Version.guarantee, Version.created_at)
                           .where(Version.deployment_id == dep.id).order_by(Version.name)).all()
    out = []
    for v in rows:
        entry = by_version.get(v.id, {"runs": 0, "verdicts": {}, "last_id": None, "last_verdict": None})
        out.append({"name": v.name, "guarantee": v.guarantee, "created_at": _iso(v.created_at),
                    "active": v.id == dep.active_version_id, "runs": entry["runs"], "verdicts": entry["verdicts"],
                    "last_run_id": entry["last_id"] or None, "last_verdict": entry["last_verdict"]})
    return out


def gate_history(session: Session, deployment: str, limit: int = 30) -> dict:
    dep = get_deployment(session, deployment)
    events = session.execute(sa.select(GateEvent.state, GateEvent.reason, GateEvent.actor, GateEvent.audit_run_id,
                                       GateEvent.created_at).where(GateEvent.deployment_id == dep.id)
                             .order_by(GateEvent.id.desc()).limit(limit)).all()
    actions = session.execute(sa.select(Action.kind, Action.status, Action.actor, Action.reason, Action.detail,
                                        Action.audit_run_id, Action.created_at).where(Action.deployment_id == dep.id)
                              .order_by(Action.id.desc()).limit(limit)).all()
    return {"events": [{"state": e.state, "reason": e.reason, "actor": e.actor, "audit_run_id": e.audit_run_id,
                        "created_at": _iso(e.created_at)} for e in events],
            "actions": [{"kind": a.kind, "status": a.status, "actor": a.actor, "reason": a.reason,
                         "detail": a.detail, "audit_run_id": a.audit_run_id, "created_at": _iso(a.created_at)}
                        for a in actions]}


def threshold_view(session: Session, deployment: str) -> dict:
    history = [{"metric": c.metric, "version": c.version, "old": c.old, "new": c.new, "author": c.author,
                "reason": c.reason, "created_at": _iso(c.created_at)}
               for c in thresholds.history(session, deployment)]
    return {"deployment": deployment, "effective": thresholds.effective(session, deployment),
            "history": list(reversed(history))}


def run_detail(session: Session, run_id: int) -> dict | None:
    row = session.execute(
        sa.select(AuditRun, Deployment.name.label("deployment"), Version.name.label("version"))
        .join(Deployment, Deployment.id == AuditRun.deployment_id).join(Version, Version.id == AuditRun.version_id)
        .where(AuditRun.id == run_id)).first()
    if row is None:
        return None
    run = row.AuditRun
    levels = run.thresholds or {}
    found = session.execute(sa.select(Score.probe, Score.metric, Score.target, Score.value, Score.ci_low,
                                      Score.ci_high, Score.n).where(Score.audit_run_id == run_id)
                            .order_by(Score.id)).all()
    findings = []
    for s in found:
        f = _judge(s, levels.get(f"{s.probe}.{s.metric}"))
        f.update(target=s.target, n=s.n)
        findings.append(f)
    return {"id": run.id, "deployment": row.deployment, "version": row.version, "dag_id": run.dag_id,
            "run_id": run.run_id, "status": run.status, "verdict": run.verdict, "sample_size": run.sample_size,
            "error": run.error, "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
            "report_path": run.report_path, "scores": findings, "trends": run.trends or {},
            "coverage_explanation": coverage_explanation(run) if run.verdict == INCONCLUSIVE else None,
            "plain": plain_words.of_run(run)}
