"""Acting on an audit run: close the gate, roll back, reopen, alert, ask for a re-audit.

What a run does follows from its level (the verdict, or `error` when the audit could not run)
and the deployment's policy:

    pass      reopen_gate (reopen: auto, gate closed by an audit), alert if an incident ends
    warn      alert
    inconclusive  alert (+ close_gate when on_audit_error: fail_closed): the attacker did not cover
              the sample, so the audit could not judge the pipeline
    gate      close_gate, alert
    rollback  close_gate, rollback, reaudit, alert
    + sync_targets after the ledger's changes, when the deployment has targets (monitors.targets)
      and the run changed the gate or the version, or an earlier push did not go through
    invalid   alert (+ close_gate when on_audit_error: fail_closed)
    error     alert (+ close_gate when on_audit_error: fail_closed)

The gate closes before anything is sent, so a dead mail server never keeps a leaking
deployment serving. Each action is written `pending` before its side effect and `done` after,
keyed by (audit run, kind): a retried task skips what completed. Alerts: monitors.alerts;
incidents: monitors.incidents.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import EmbwardenError
from monitors.gates import gate_state, last_passing_version, set_gate
from monitors.incidents import open_incident
from monitors.ledger.models import Action, AuditRun, utcnow
from monitors.targets import SYNC, out_of_sync
from monitors.verdicts import INCONCLUSIVE, UNJUDGED, level_of, worst_crossing

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
ORDER = ("close_gate", "rollback", "reopen_gate", "sync_targets", "reaudit", "alert")
STATE_CHANGES = {"close_gate", "rollback", "reopen_gate"}


@dataclass(frozen=True)
class Policy:
    """The deployment's settings that shape actions (from embwarden.yaml)."""

    on_audit_error: str = "fail_open"   # or fail_closed
    reopen: str = "auto"                # or manual
    channels: tuple = ()                # EmailChannelConfig / WebhookChannelConfig
    targets: tuple = ()                 # MlflowTargetConfig / DeployWebhookTargetConfig (monitors.targets)
    report_url: str | None = None       # where the run's report is, for the alert


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
    if policy.targets:
        earlier = out_of_sync(session, run.deployment)
        if kinds & STATE_CHANGES or (earlier is not None and not earlier.in_sync):
            kinds.add(SYNC)   # tell the targets, or retry what an earlier push left undone
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
    """Carry out a ledger-side action; `reaudit` is prepared here and asked for later (an alert: monitors.alerts)."""
    if kind == "close_gate":
        return close_gate(session, run, reason_for(run))
    if kind == "rollback":
        return rollback(session, run)
    if kind == "reopen_gate":
        return reopen_gate(session, run)
    if kind == "reaudit":
        if run.deployment.active_version_id == run.version_id:
            # The rollback did not happen: re-auditing the version this run just judged would fail the
            # same way and ask for another re-audit, run after run.
            raise EmbwardenError(f"no re-audit asked: the rollback did not happen, {run.version.name} is still "
                                 "active and this run judged it")
        return {"version": run.deployment.active_version.name, "requested": False}
    raise EmbwardenError(f"unknown action kind {kind!r}")


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


