"""Acting on a verdict: alert, close the gate, roll back to the last version that passed.

Each action is written to the ledger as `pending` before its side effect and marked `done`
after, keyed by (audit run, kind): a retried task skips what already completed.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import EmbwardenError
from monitors.alerts import Alert, send
from monitors.ledger import Action, AuditRun, Deployment, GateEvent, Version, utcnow
from monitors.policy import SEVERITY, Levels
from monitors.registry import gate_state

log = logging.getLogger(__name__)

PLANS = {
    "pass": (),
    "warn": ("alert",),
    "gate": ("alert", "close_gate"),
    "rollback": ("alert", "close_gate", "rollback"),
    "invalid": ("alert",),
}
AUDIT_ACTOR = "privacy_audit"


def planned(verdict: str) -> tuple[str, ...]:
    return PLANS[verdict]


def last_passing_version(session: Session, run: AuditRun) -> Version | None:
    """The version, other than the audited one, whose most recent audit passed most recently."""
    latest = (sa.select(AuditRun.version_id, sa.func.max(AuditRun.id).label("last_id"))
              .where(AuditRun.deployment_id == run.deployment_id, AuditRun.verdict.is_not(None),
                     AuditRun.id != run.id)
              .group_by(AuditRun.version_id).subquery())
    row = session.execute(
        sa.select(AuditRun).join(latest, AuditRun.id == latest.c.last_id)
        .where(AuditRun.verdict == "pass", AuditRun.version_id != run.version_id)
        .order_by(AuditRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    return row.version if row else None


def begin(session: Session, run: AuditRun, kind: str, reason: str) -> Action | None:
    """The pending action of this kind for this run, or None when it already completed."""
    action = session.scalar(sa.select(Action).where(Action.audit_run_id == run.id, Action.kind == kind))
    if action is None:
        action = Action(deployment_id=run.deployment_id, audit_run_id=run.id, kind=kind, status="pending",
                        actor=AUDIT_ACTOR, reason=reason, detail={})
        session.add(action)
        session.flush()
    return None if action.status == "done" else action


def close_gate(session: Session, run: AuditRun, reason: str) -> dict:
    dep = session.get(Deployment, run.deployment_id)
    current = gate_state(session, dep)
    if current is not None and current.state == "closed" and current.audit_run_id == run.id:
        return {"gate": "closed", "already": True}
    session.add(GateEvent(deployment_id=dep.id, state="closed", reason=reason, actor=AUDIT_ACTOR,
                          audit_run_id=run.id))
    return {"gate": "closed"}


def rollback(session: Session, run: AuditRun) -> dict:
    dep = session.get(Deployment, run.deployment_id)
    if dep.active_version_id != run.version_id:
        # Someone deployed another version while this audit ran: do not undo their change.
        return {"skipped": "the audited version is no longer active", "active": dep.active_version.name}
    target = last_passing_version(session, run)
    if target is None:
        raise EmbwardenError(
            f"rollback of {dep.name}: no other version has passed an audit; the gate stays closed "
            f"and version {run.version.name} stays recorded as active"
        )
    dep.active_version_id = target.id
    log.info("%s rolled back from %s to %s", dep.name, run.version.name, target.name)
    return {"from": run.version.name, "to": target.name}


def worst_crossing(run: AuditRun) -> tuple[str | None, float | None, float | None]:
    """The metric, value and limit behind the verdict, for the alert."""
    if run.verdict not in SEVERITY or run.verdict == "pass":
        return None, None, None
    for score in run.scores:
        levels = (run.thresholds or {}).get(score.key)
        if levels and Levels.from_mapping(levels).crossed(score.value) == run.verdict:
            return score.key, score.value, levels[run.verdict]
    return None, None, None


def alert_for(run: AuditRun, actions: tuple[str, ...]) -> Alert:
    metric, value, limit = worst_crossing(run)
    return Alert(deployment=run.deployment.name, version=run.version.name, verdict=run.verdict, metric=metric,
                 value=value, threshold=limit, actions=actions, report=run.report_path)


def reason_for(run: AuditRun) -> str:
    """Why the run acted, in the words an operator needs: metric, value, limit, run."""
    metric, value, limit = worst_crossing(run)
    crossed = f"{metric} = {value:.3f} crossed {run.verdict} threshold {limit}" if metric else f"verdict {run.verdict}"
    return f"{crossed} (version {run.version.name}, audit run {run.id}, {run.dag_id}/{run.run_id})"


def perform(session: Session, run: AuditRun, kind: str) -> dict:
    reason = reason_for(run)
    if kind == "alert":
        alert = alert_for(run, planned(run.verdict))
        send(alert)
        return {"summary": alert.summary()}
    if kind == "close_gate":
        return close_gate(session, run, reason)
    if kind == "rollback":
        return rollback(session, run)
    raise EmbwardenError(f"unknown action kind {kind!r}")


def mark(action: Action, status: str, detail: dict | None = None, error: str | None = None) -> None:
    action.status = status
    action.detail = detail or {}
    action.error = error
    action.done_at = utcnow() if status == "done" else None
