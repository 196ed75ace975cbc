"""Incidents: one open problem of a deployment, opened, escalated and resolved by the runs of one
kind of check (privacy audit or drift check); each change earns one alert.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from monitors.ledger.models import AuditRun, Incident, utcnow
from monitors.verdicts import SEVERITY, UNJUDGED, level_of

# How bad an incident is, for deciding whether a run escalates it; a broken audit is its own news.
INCIDENT_SEVERITY = {**SEVERITY, "inconclusive": 1, "invalid": 1, "error": 1}


# -- incidents and alerts ------------------------------------------------------------------------
def open_incident(session: Session, run: AuditRun) -> Incident | None:
    """The deployment's open incident found by the same kind of check as `run` (audit or drift)."""
    return session.scalar(sa.select(Incident).join(AuditRun, AuditRun.id == Incident.opened_run_id)
                          .where(Incident.deployment_id == run.deployment_id, Incident.status == "open",
                                 AuditRun.dag_id == run.dag_id)
                          .order_by(Incident.id.desc()).limit(1))


def incident_news(session: Session, run: AuditRun) -> tuple[str | None, Incident | None]:
    """Move the deployment's incident on with this run; the alert kind it earns, if any."""
    level = level_of(run)
    incident = open_incident(session, run)
    if level == "pass":
        if incident is None:
            return None, None
        incident.status, incident.resolved_run_id, incident.resolved_at = "resolved", run.id, utcnow()
        return "resolved", incident
    if incident is None:
        incident = Incident(deployment_id=run.deployment_id, level=level, alerted_levels=[level],
                            opened_run_id=run.id, last_run_id=run.id)
        session.add(incident)
        session.flush()
        return "opened", incident
    incident.last_run_id = run.id
    worst = max(INCIDENT_SEVERITY[lvl] for lvl in incident.alerted_levels)
    if INCIDENT_SEVERITY[level] > worst or (level in UNJUDGED and level not in incident.alerted_levels):
        incident.alerted_levels = [*incident.alerted_levels, level]
        if INCIDENT_SEVERITY[level] >= INCIDENT_SEVERITY[incident.level]:
            incident.level = level
        return "escalated", incident
    return None, incident
