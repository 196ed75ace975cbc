"""Targets: where a deployment's active version and gate also live outside the ledger.

The ledger decides; targets follow. After a change (an audit run's close_gate / rollback /
reopen_gate, or a change by hand: activate, rollback, close, reopen) each target of the
deployment is told, as one `Change`: what happened and the state after it.

    mlflow   the registry alias (`champion`) moves to the active version's model version, and
             the version the change is about is tagged `embwarden.gate` = open | closed
    webhook  the change is POSTed as JSON, signed (monitors.targets.webhook), for a CD system

A push is an action like any other (`sync_targets`): written `pending` with its Change before
anything is sent, `done` when every target took it, `failed` with each target's error otherwise.
A retry sends the same Change (same `event_id`) to the targets that did not take it. While the
newest push of a deployment is not done, its targets are *out of sync*: `out_of_sync` says so for
the report, the UI and `embwarden status`, and the next audit run or `embwarden targets sync`
pushes it again. Pushes are idempotent: an alias set twice, a tag written twice, an event id a
receiver has seen.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import EmbwardenError
from monitors.config import EmbwardenConfig
from monitors.gates import status_of
from monitors.ledger.database import row, session_scope
from monitors.ledger.models import Action, AuditRun, Deployment, utcnow
from monitors.ledger.registry import get_deployment

log = logging.getLogger("embwarden.targets")

SYNC = "sync_targets"
# The changes a target hears of, strongest first: a run that rolled back also closed the gate.
EVENTS = ("rollback", "close_gate", "reopen_gate", "activate", "sync")


class TargetUnavailable(EmbwardenError):
    """A target did not take a change (down, refused, misconfigured); retried, never silent."""


@dataclass(frozen=True)
class Change:
    """What a target is told: the event and the deployment's state after it. Names and numbers only."""

    event_id: str                  # the same on every retry of this push
    event: str                     # one of EVENTS
    deployment: str
    active_version: str | None     # after the change
    previous_version: str | None   # before it (rollback, activate)
    version: str | None            # the version the event is about (the audited one for a gate change)
    gate: str                      # open | closed, after the change
    gate_reason: str
    actor: str
    reason: str
    audit_run_id: int | None
    occurred_at: str               # ISO 8601, UTC

    def to_json(self) -> dict:
        return asdict(self)


class Target(Protocol):
    name: str

    def push(self, change: Change) -> None:
        """Make the target agree with `change`; raise TargetUnavailable when it did not."""


def make_target(cfg) -> Target:
    if cfg.kind == "mlflow":
        from monitors.targets.mlflow import MlflowTarget

        return MlflowTarget(cfg)
    from monitors.targets.webhook import WebhookTarget

    return WebhookTarget(cfg)


@dataclass(frozen=True)
class SyncStatus:
    """The newest push of a deployment: in sync, or which targets did not take it and why."""

    in_sync: bool
    event: str | None
    failed: dict[str, str]          # target name -> error
    action_id: int | None = None

    def summary(self) -> str:
        if self.in_sync:
            return "targets in sync"
        return "target out of sync: " + "; ".join(f"{name}: {error}" for name, error in self.failed.items())


def out_of_sync(session: Session, dep: Deployment, before: int | None = None) -> SyncStatus | None:
    """None when the deployment has never pushed to a target; else the newest push's status (the newest
    before action `before`, when given)."""
    query = sa.select(Action).where(Action.deployment_id == dep.id, Action.kind == SYNC)
    if before is not None:
        query = query.where(Action.id < before)
    action = session.scalar(query.order_by(Action.id.desc()).limit(1))
    if action is None:
        return None
    done = action.status == "done"
    failed = {name: result for name, result in (action.detail or {}).get("targets", {}).items() if result != "done"}
    if not done and not failed:
        failed = {"all": action.error or "the push did not finish (the task stopped before it)"}
    return SyncStatus(done, (action.detail or {}).get("change", {}).get("event"), failed, action.id)


# -- building a Change ---------------------------------------------------------------------------
def change_of_run(session: Session, run: AuditRun, event_id: str) -> Change | None:
    """The Change an audit run made (its strongest done action), or None when it changed nothing."""
    done = {a.kind: a for a in session.scalars(sa.select(Action).where(
        Action.audit_run_id == run.id, Action.status == "done")) if not (a.detail or {}).get("skipped")}
    event = next((e for e in EVENTS if e in done), None)
    if event is None:
        return None
    detail = done[event].detail or {}
    return _change(session, run.deployment, event_id, event, actor=run.dag_id, reason=_reason(session, run, event),
                   version=run.version.name, previous=detail.get("from"), audit_run_id=run.id)


def change_by_hand(session: Session, action: Action, event_id: str) -> Change:
    dep = row(session, Deployment, action.deployment_id)
    detail = action.detail or {}
    version = detail.get("to") or (dep.active_version.name if dep.active_version else None)
    return _change(session, dep, event_id, action.kind, actor=action.actor, reason=action.reason,
                   version=version, previous=detail.get("from"), audit_run_id=None)


def _change(session: Session, dep: Deployment, event_id: str, event: str, *, actor: str, reason: str,
            version: str | None, previous: str | None, audit_run_id: int | None) -> Change:
    gate = status_of(session, dep)
    return Change(event_id=event_id, event=event, deployment=dep.name, active_version=gate.active_version,
                  previous_version=previous, version=version, gate=gate.state, gate_reason=gate.reason,
                  actor=actor, reason=reason, audit_run_id=audit_run_id, occurred_at=utcnow().isoformat())


def _reason(session: Session, run: AuditRun, event: str) -> str:
    from monitors.actions import reason_for

    return reason_for(run) if event != "reopen_gate" else f"audit run {run.id} of {run.version.name} passed"


# -- pushing -------------------------------------------------------------------------------------
def sync_run(config: EmbwardenConfig, audit_run_id: int, action_id: int) -> list[str]:
    """Push the run's change to its targets under action `action_id` (when the run changed nothing, the
    deployment's state now, as event `sync`: an earlier push failed); returns the errors (empty: in sync)."""
    with session_scope() as session:
        action = row(session, Action, action_id)
        change = (action.detail or {}).get("change")
        if change is None:   # the first attempt: fix the Change, so a retry sends the same one
            run = row(session, AuditRun, audit_run_id)
            made = change_of_run(session, run, _event_id(run.deployment.name, action_id))
            if made is None:
                made = _resent(session, run.deployment, action_id)
            action.detail = {**(action.detail or {}), "change": made.to_json(), "targets": {}}
    return _push(config, action_id)


def sync_change(config: EmbwardenConfig, changed_action_id: int) -> list[str]:
    """After a change by hand (committed): push it to the deployment's targets; returns the errors.
    Recorded as its own `sync_targets` action, so a failure shows as out of sync."""
    with session_scope() as session:
        changed = row(session, Action, changed_action_id)
        dep = row(session, Deployment, changed.deployment_id)
        if not config.deployment(dep.name).targets:
            return []
        earlier = next((a for a in session.scalars(sa.select(Action).where(
            Action.deployment_id == dep.id, Action.kind == SYNC, Action.id > changed.id).order_by(Action.id))
            if (a.detail or {}).get("cause") == changed.id), None)
        if earlier is not None:   # a retry: push what the first attempt left undone
            action_id = earlier.id
        else:
            action_id = _begin_push(session, dep, changed)
    return _push(config, action_id)


def _begin_push(session: Session, dep: Deployment, changed: Action) -> int:
    action = Action(deployment_id=dep.id, kind=SYNC, status="pending", actor=changed.actor,
                    reason=f"push {changed.kind} (action {changed.id}) to targets", detail={})
    session.add(action)
    session.flush()
    action.detail = {"change": change_by_hand(session, changed, _event_id(dep.name, action.id)).to_json(),
                     "targets": {}, "cause": changed.id}
    return action.id


def resync(config: EmbwardenConfig, deployment: str) -> list[str] | None:
    """Push the deployment's newest unfinished push again (`embwarden targets sync`, the
    privacy_gate DAG); None when it is in sync."""
    with session_scope() as session:
        status = out_of_sync(session, get_deployment(session, deployment))
    if status is None or status.in_sync or status.action_id is None:
        return None
    return _push(config, status.action_id)


def _resent(session: Session, dep: Deployment, action_id: int) -> Change:
    """A run that changed nothing re-pushes the state: the newest failed push, as event `sync`."""
    status = out_of_sync(session, dep, before=action_id)
    reason = "re-push after " + (status.summary() if status else "no earlier push")
    return _change(session, dep, _event_id(dep.name, action_id), "sync", actor="embwarden", reason=reason,
                   version=dep.active_version.name if dep.active_version else None, previous=None,
                   audit_run_id=None)


def _event_id(deployment: str, action_id: int) -> str:
    return f"{deployment}-{action_id}"


def _push(config: EmbwardenConfig, action_id: int) -> list[str]:
    """Send the action's Change to each target that has not taken it, recording each result as it
    comes. A push that a newer one has replaced is not sent (its state is old): it is `superseded`."""
    with session_scope() as session:
        action = row(session, Action, action_id)
        newer = session.scalar(sa.select(Action.id).where(Action.deployment_id == action.deployment_id,
                                                          Action.kind == SYNC, Action.id > action_id).limit(1))
        if newer is not None:
            action.status, action.error = "superseded", f"replaced by push {newer}"
            return []
        detail = dict(action.detail or {})
        change = Change(**detail["change"])
        action.status = "pending"
    results = dict(detail.get("targets") or {})
    for cfg in config.deployment(change.deployment).targets:
        name = cfg.name
        if results.get(name) == "done":
            continue
        try:
            make_target(cfg).push(change)
            results[name] = "done"
            log.info("%s: %s pushed to %s (event %s)", change.deployment, change.event, name, change.event_id)
        except Exception as exc:   # any failure of a target is recorded, never lets the act step stop
            results[name] = (str(exc) if isinstance(exc, EmbwardenError) else f"{type(exc).__name__}: {exc}")[:1000]
            log.error("%s: %s not pushed to %s: %s", change.deployment, change.event, name, results[name])
        with session_scope() as session:   # each result as it comes: a stopped worker loses none
            row(session, Action, action_id).detail = {**detail, "targets": dict(results)}
    errors = [f"{name}: {error}" for name, error in results.items() if error != "done"]
    with session_scope() as session:
        action = row(session, Action, action_id)
        action.detail = {**detail, "targets": results}
        action.status = "failed" if errors else "done"
        action.error = "; ".join(errors) or None
        action.done_at = None if errors else utcnow()
    return errors
