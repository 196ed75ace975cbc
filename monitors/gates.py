"""The gate of a deployment, and the changes people make to it by hand.

The gate is the newest `gate_events` row: `open` or `closed`, with a reason. Audits close it
(actor `privacy_audit`); people close, reopen, roll back or forward through the CLI, the
`privacy_gate` DAG or the plugin, each change recorded as an action with who and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import EmbwardenError
from monitors.assets import AUDIT_DAG
from monitors.ledger.models import Action, AuditRun, Deployment, GateEvent, Version, utcnow
from monitors.ledger.registry import get_deployment, get_version

MANUAL_ACTIONS = ("close_gate", "reopen_gate", "rollback", "activate")


OPEN, CLOSED = "open", "closed"
NO_EVENT = "no gate event recorded"


@dataclass(frozen=True)
class GateStatus:
    """What a service needs to know before it serves: may it, and with which version."""

    deployment: str
    state: str
    reason: str
    active_version: str | None
    since: datetime | None
    actor: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state == OPEN

    def to_json(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "state": self.state, "reason": self.reason,
                "active_version": self.active_version, "since": self.since.isoformat() if self.since else None}


def gate_state(session: Session, dep: Deployment) -> GateEvent | None:
    """The newest gate event of `dep`, or None when there is none (read as open: `status_of`)."""
    return session.scalar(sa.select(GateEvent).where(GateEvent.deployment_id == dep.id)
                          .order_by(GateEvent.id.desc()).limit(1))


def status_of(session: Session, dep: Deployment) -> GateStatus:
    """The gate of `dep`. No event at all reads as open (syncing a deployment always writes one);
    this is the one place that says so."""
    gate = gate_state(session, dep)
    if gate is None:
        return GateStatus(dep.name, OPEN, NO_EVENT, dep.active_version.name if dep.active_version else None,
                          dep.created_at)
    return GateStatus(dep.name, gate.state, gate.reason, dep.active_version.name if dep.active_version else None,
                      gate.created_at, gate.actor)


def status(session: Session, deployment: str) -> GateStatus:
    return status_of(session, get_deployment(session, deployment))


def set_gate(session: Session, dep: Deployment, state: str, reason: str, actor: str,
             audit_run_id: int | None = None) -> GateEvent:
    event = GateEvent(deployment_id=dep.id, state=state, reason=reason, actor=actor, audit_run_id=audit_run_id)
    session.add(event)
    session.flush()
    return event


def last_passing_version(session: Session, dep: Deployment, other_than: int | None) -> Version | None:
    """The version (other than `other_than`) whose most recent privacy audit passed most recently."""
    latest = (sa.select(AuditRun.version_id, sa.func.max(AuditRun.id).label("last_id"))
              .where(AuditRun.deployment_id == dep.id, AuditRun.verdict.is_not(None), AuditRun.dag_id == AUDIT_DAG)
              .group_by(AuditRun.version_id).subquery())
    query = (sa.select(AuditRun).join(latest, AuditRun.id == latest.c.last_id)
             .where(AuditRun.verdict == "pass").order_by(AuditRun.id.desc()).limit(1))
    if other_than is not None:
        query = query.where(AuditRun.version_id != other_than)
    row = session.execute(query).scalar_one_or_none()
    return row.version if row else None


def change(session: Session, deployment: str, action: str, reason: str, actor: str,
           version: str | None = None) -> Action:
    """A gate or version change made by a person, recorded as a done action with who and why.

    close_gate / reopen_gate: set the gate. rollback: activate `version`, or else the last
    version that passed an audit. activate: roll back or forward to the named `version`. Both
    leave the gate as it is and ask for a re-audit of the version now active.
    """
    if action not in MANUAL_ACTIONS:
        raise EmbwardenError(f"action: expected one of {', '.join(MANUAL_ACTIONS)}, found {action!r}")
    if not reason or len(reason.strip()) < 3:
        raise EmbwardenError("reason: say why (at least a few words); it is recorded with the change")
    if not actor or not actor.strip():
        raise EmbwardenError("actor: who makes the change must be given")
    dep = get_deployment(session, deployment)
    if action == "activate" and not version:
        raise EmbwardenError("version: activate needs the version to roll back or forward to")
    previous = dep.active_version.name if dep.active_version else None
    detail: dict = {}
    if action in ("close_gate", "reopen_gate"):
        if version:
            raise EmbwardenError(f"version: {action} takes no version (found {version!r})")
        state = CLOSED if action == "close_gate" else OPEN
        set_gate(session, dep, state, reason, actor)
        detail = {"gate": state}
    else:
        target = get_version(session, dep, version) if version else last_passing_version(session, dep,
                                                                                        dep.active_version_id)
        if target is None:
            raise EmbwardenError(f"rollback of {deployment}: no other version has passed an audit; name a version")
        dep.active_version_id = target.id
        detail = {"from": previous, "to": target.name, "reaudit": True}
    row = Action(deployment_id=dep.id, kind=action, status="done", actor=actor, reason=reason, detail=detail,
                 done_at=utcnow())
    session.add(row)
    session.flush()
    return row
