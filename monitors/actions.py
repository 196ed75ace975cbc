"""Acting on an audit run: close the gate, roll back, reopen, alert, ask for a re-audit.

What a run does follows from its level (the verdict, or `error` when the audit could not run)
and the deployment's policy:

    pass      reopen_gate (reopen: auto, gate closed by an audit), alert if an incident ends
    warn      alert
    inconclusive  alert (+ close_gate when on_audit_error: fail_closed): the attacker did not cover
              the sample, so the audit could not judge the pipeline
    gate      close_gate, alert
    rollback  close_gate, rollback, reaudit, alert
    invalid   alert (+ close_gate when on_audit_error: fail_closed)
    error     alert (+ close_gate when on_audit_error: fail_closed)

The gate closes before anything is sent, so a dead mail server never keeps a leaking
deployment serving. Each action is written `pending` before its side effect and `done` after,
keyed by (audit run, kind): a retried task skips what completed. Alerts go per channel, each a
row of its own (`pending`, `sent`, `failed`); one open incident gets one alert, an escalation
or a resolution another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import EmbwardenError
from monitors import plain_words
from monitors.alerts import Alert
from monitors.gates import last_passing_version, set_gate
from monitors.ledger import Action, AlertRecord, AuditRun, Incident, utcnow
from monitors.policy import INCONCLUSIVE, SEVERITY, Levels, is_coverage
from monitors.registry import gate_state

log = logging.getLogger("embwarden.actions")

PLANS = {
    "pass": (),
    "warn": ("alert",),
    "gate": ("close_gate", "alert"),
    "rollback": ("close_gate", "rollback", "reaudit", "alert"),
    "inconclusive": ("alert",),
    "invalid": ("alert",),
    "error": ("alert",),
}
# Levels at which the audit could not judge the pipeline: the policy (on_audit_error) decides the gate.
UNJUDGED = ("inconclusive", "invalid", "error")
ORDER = ("close_gate", "rollback", "reopen_gate", "reaudit", "alert")
# How bad an incident is, for deciding whether a run escalates it; a broken audit is its own news.
INCIDENT_SEVERITY = {**SEVERITY, "inconclusive": 1, "invalid": 1, "error": 1}
LOG_CHANNEL = "log"


@dataclass(frozen=True)
class Policy:
    """The deployment's settings that shape actions (from embwarden.yaml)."""

    on_audit_error: str = "fail_open"   # or fail_closed
    reopen: str = "auto"                # or manual
    channels: tuple = ()                # EmailChannelConfig / WebhookChannelConfig
    report_url: str | None = None       # where the run's report is, for the alert


class AlertsUndelivered(EmbwardenError):
    """Some alerts could not be sent; they are recorded `failed` and retried."""


def level_of(run: AuditRun) -> str:
    if run.verdict is not None:
        return run.verdict
    return "error"


def planned(session: Session, run: AuditRun, policy: Policy) -> tuple[str, ...]:
    """The actions of this run, in the order they are carried out; stable across retries."""
    level = level_of(run)
    kinds = set(PLANS[level])
    if level in UNJUDGED and policy.on_audit_error == "fail_closed":
        kinds.add("close_gate")
    if level == "pass":
        dep = run.deployment
        if open_incident(session, run) is not None:
            kinds.add("alert")
        gate = gate_state(session, dep)
        if (policy.reopen == "auto" and gate is not None and gate.state == "closed" and gate.audit_run_id is not None
                and run.version_id == dep.active_version_id and _closed_by_same_check(session, gate, run)):
            kinds.add("reopen_gate")
    # What an earlier attempt started stays planned (its incident may have changed since).
    kinds |= set(session.scalars(sa.select(Action.kind).where(Action.audit_run_id == run.id)))
    return tuple(k for k in ORDER if k in kinds)


def _closed_by_same_check(session: Session, gate, run: AuditRun) -> bool:
    """A passing drift check does not reopen a gate a leakage audit closed, nor the other way round;
    a gate closed by a person (no audit run) is reopened by a person."""
    closer = session.get(AuditRun, gate.audit_run_id)
    return closer is not None and closer.dag_id == run.dag_id


def begin(session: Session, run: AuditRun, kind: str, reason: str) -> Action | None:
    """The pending action of this kind for this run, or None when it already completed."""
    action = session.scalar(sa.select(Action).where(Action.audit_run_id == run.id, Action.kind == kind))
    if action is None:
        action = Action(deployment_id=run.deployment_id, audit_run_id=run.id, kind=kind, status="pending",
                        actor=run.dag_id, reason=reason, detail={})
        session.add(action)
        session.flush()
    return None if action.status == "done" else action


def mark(action: Action, status: str, detail: dict | None = None, error: str | None = None) -> None:
    action.status = status
    action.detail = detail or action.detail or {}
    action.error = error
    action.done_at = utcnow() if status == "done" else None


# -- the ledger-side effects ---------------------------------------------------------------------
def close_gate(session: Session, run: AuditRun, reason: str) -> dict:
    dep = run.deployment
    current = gate_state(session, dep)
    if current is not None and current.state == "closed" and current.audit_run_id == run.id:
        return {"gate": "closed", "already": True}
    set_gate(session, dep, "closed", reason, run.dag_id, run.id)
    return {"gate": "closed"}


def reopen_gate(session: Session, run: AuditRun) -> dict:
    dep = run.deployment
    current = gate_state(session, dep)
    if current is not None and current.state == "open":
        return {"gate": "open", "already": True}
    set_gate(session, dep, "open", f"audit run {run.id} of {run.version.name} passed; reopened automatically",
             run.dag_id, run.id)
    return {"gate": "open", "closed_because": current.reason if current else None}


def rollback(session: Session, run: AuditRun) -> dict:
    dep = run.deployment
    if dep.active_version_id != run.version_id:
        # Someone deployed another version while this audit ran: do not undo their change.
        return {"skipped": "the audited version is no longer active", "active": dep.active_version.name}
    target = last_passing_version(session, dep, other_than=run.version_id)
    if target is None:
        raise EmbwardenError(
            f"rollback of {dep.name}: no other version has passed an audit; the gate stays closed "
            f"and version {run.version.name} stays recorded as active"
        )
    dep.active_version_id = target.id
    log.info("%s rolled back from %s to %s", dep.name, run.version.name, target.name)
    return {"from": run.version.name, "to": target.name}


def perform(session: Session, run: AuditRun, kind: str, policy: Policy) -> dict:
    """Carry out a ledger-side action. `alert` and `reaudit` are prepared here and sent later."""
    if kind == "close_gate":
        return close_gate(session, run, reason_for(run))
    if kind == "rollback":
        return rollback(session, run)
    if kind == "reopen_gate":
        return reopen_gate(session, run)
    if kind == "reaudit":
        return {"version": run.deployment.active_version.name, "requested": False}
    if kind == "alert":
        return prepare_alerts(session, run, policy)
    raise EmbwardenError(f"unknown action kind {kind!r}")


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


def prepare_alerts(session: Session, run: AuditRun, policy: Policy) -> dict:
    """Decide this run's alert and write one `pending` row per channel (once: retries reuse them)."""
    rows = session.scalars(sa.select(AlertRecord).where(AlertRecord.audit_run_id == run.id)).all()
    if rows:
        return {"alerts": len(rows)}
    kind, incident = incident_news(session, run)
    if kind is None:
        opened = incident.opened_run_id if incident else None
        return {"suppressed": f"incident {incident.id} (opened by audit run {opened}) was already alerted "
                              f"at level {incident.level}" if incident else "nothing to report"}
    alert = alert_for(session, run, kind, policy)
    channels = [_channel_name(c) for c in policy.channels] or [LOG_CHANNEL]
    for channel in channels:
        session.add(AlertRecord(deployment_id=run.deployment_id, incident_id=incident.id, audit_run_id=run.id,
                                kind=kind, channel=channel, status="pending", payload=alert.as_json()))
    session.flush()
    return {"alert": kind, "incident": incident.id, "channels": channels}


def _channel_name(channel) -> str:
    return f"{channel.kind}:{channel.connection}"


def worst_crossing(run: AuditRun) -> tuple[str | None, float | None, float | None]:
    """The metric, value and limit behind the verdict, for the alert and the gate's reason."""
    if run.verdict == INCONCLUSIVE:
        for score in run.scores:
            levels = (run.thresholds or {}).get(score.key)
            if is_coverage(score.key) and levels and levels.get("warn") is not None:
                judged = Levels.from_mapping(levels)
                if judged.crossed(judged.judged(score)) != "pass":
                    return score.key, judged.judged(score), levels["warn"]
        return None, None, None
    if run.verdict not in SEVERITY or run.verdict == "pass":
        return None, None, None
    for score in run.scores:
        levels = (run.thresholds or {}).get(score.key)
        if levels:
            judged = Levels.from_mapping(levels)
            if judged.crossed(judged.judged(score)) == run.verdict:
                return score.key, judged.judged(score), levels[run.verdict]
    return None, None, None


def reason_for(run: AuditRun) -> str:
    """Why the run acted, in the words an operator needs: metric, value, limit, run."""
    metric, value, limit = worst_crossing(run)
    if metric and run.verdict == INCONCLUSIVE:
        crossed = (f"inconclusive: the attacker does not cover the sample ({metric} = {value:.3f}, "
                   f"below {limit})")
    elif metric:
        crossed = f"{metric} = {value:.3f} crossed {run.verdict} threshold {limit}"
    elif run.verdict is None or run.verdict == "invalid":
        crossed = f"audit could not run ({(run.error or 'unknown error')[:300]})"
    else:
        crossed = f"verdict {run.verdict}"
    return f"{crossed} (version {run.version.name}, audit run {run.id}, {run.dag_id}/{run.run_id})"


def alert_for(session: Session, run: AuditRun, kind: str, policy: Policy) -> Alert:
    metric, value, limit = worst_crossing(run)
    rows = {a.kind: a for a in session.scalars(sa.select(Action).where(Action.audit_run_id == run.id))}
    done = {k: a for k, a in rows.items() if a.status == "done" or k == "reaudit"}
    taken = tuple(k for k in ORDER if k in done and k != "alert")
    detail = None
    if "rollback" in rows and rows["rollback"].status == "failed":
        detail = f"ROLLBACK FAILED: {rows['rollback'].error}"
    elif "rollback" in done and done["rollback"].detail.get("to"):
        detail = f"rolled back to {done['rollback'].detail['to']}; re-audit requested"
    elif metric is None and run.trends:
        first = next(iter(run.trends.values()))
        metric, value = first["metric"], first["values"][-1]
        detail = "; ".join(f"{m} rising over the last {len(t['values'])} audits (Kendall tau {t['tau']:.2f}, "
                           f"p {t['p']:.3f}), still below its thresholds" for m, t in run.trends.items())
    elif level_of(run) == INCONCLUSIVE:
        detail = coverage_explanation(run)
    elif level_of(run) in ("invalid", "error"):
        detail = f"audit could not run: {(run.error or 'unknown error')[:300]}"
    elif kind == "resolved":
        gate = gate_state(session, run.deployment)
        detail = ("gate reopened" if "reopen_gate" in done else
                  f"gate is {gate.state if gate else 'open'}" + (" (reopen it by hand)" if gate and
                                                                gate.state == "closed" else ""))
    return Alert(deployment=run.deployment.name, version=run.version.name, kind=kind, verdict=level_of(run),
                 metric=metric, value=value, threshold=limit, actions=taken, report=policy.report_url,
                 audit_run_id=run.id, run=f"{run.dag_id}/{run.run_id}", detail=detail,
                 plain=" ".join(plain_words.of_run(run)) or None)


UNSENT = ("pending", "failed")


def unsent_alerts(session: Session, audit_run_id: int | None = None) -> list[int]:
    """Ids of alerts not yet delivered: of one run, or (None) of every run."""
    query = sa.select(AlertRecord.id).where(AlertRecord.status.in_(UNSENT))
    if audit_run_id is not None:
        query = query.where(AlertRecord.audit_run_id == audit_run_id)
    return list(session.scalars(query.order_by(AlertRecord.id)))


def superseded(session: Session, row: AlertRecord) -> bool:
    """Whether a newer alert of the same deployment already went out on the same channel."""
    return session.scalar(sa.select(sa.func.count()).select_from(AlertRecord).where(
        AlertRecord.deployment_id == row.deployment_id, AlertRecord.channel == row.channel,
        AlertRecord.id > row.id, AlertRecord.status == "sent")) > 0


def delivery_id(row: AlertRecord) -> str:
    """The same for every attempt at one alert, different for every alert of any ledger: a receiver
    that sees it twice (mail Message-ID, webhook Idempotency-Key) can drop the copy."""
    return f"embwarden-alert-{row.id}-{int(row.created_at.timestamp())}"


def coverage_explanation(run: AuditRun) -> str:
    """Why an inconclusive run could not judge the pipeline, in plain words, with what to configure:
    the attacker did not cover the sample, or a probe (coverage included) failed."""
    from monitors.coverage import explain
    from monitors.policy import evaluate

    thresholds = {k: Levels.from_mapping(v) for k, v in (run.thresholds or {}).items() if is_coverage(k)}
    coverage = evaluate([s for s in run.scores if is_coverage(s.key)], thresholds)
    if coverage.uncovered or coverage.covered is None:
        return explain(coverage.uncovered)
    failed = [part.split(":", 1)[0] for part in (run.error or "").split("; ") if ":" in part]
    return (f"The probe{'s' if len(failed) > 1 else ''} {', '.join(failed) or '(unknown)'} failed "
            f"({(run.error or '')[:300]}), so what {'they' if len(failed) > 1 else 'it'} would have found is "
            "unknown and the audit cannot pass. Read the failed task's log in Airflow, fix the cause, and run "
            "the audit again; or remove the probe from the deployment's `probes:` if it does not belong there.")
