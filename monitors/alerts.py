"""Alerts: what crossed which threshold, the action taken, and where the report is.

An `Alert` is data; `monitors.notifiers` delivers it over a configured channel (mail, webhook).
An alert never carries sampled text or vectors, only names, numbers and links. Each goes per
channel, a row of its own (`pending`, `sending`, `sent`, `failed`, `superseded`); one open
incident gets one alert, an escalation or a resolution another.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from audits.errors import EmbwardenError
from monitors import notifiers
from monitors.actions import ORDER, Policy
from monitors.config import EmbwardenConfig
from monitors.coverage import coverage_explanation
from monitors.gates import status_of
from monitors.incidents import incident_news
from monitors.ledger.database import row, session_scope
from monitors.ledger.models import Action, AlertRecord, AuditRun, Deployment, utcnow
from monitors.reports import plain_words
from monitors.verdicts import INCONCLUSIVE, level_of, worst_crossing

log = logging.getLogger("embwarden.actions")

# Why an alert is sent: an incident opened, got worse, or ended; or the audit could not run.
ALERT_KINDS = ("opened", "escalated", "resolved")


@dataclass(frozen=True)
class Alert:
    deployment: str
    version: str
    kind: str                    # one of ALERT_KINDS
    verdict: str                 # pass, warn, inconclusive, gate, rollback, invalid, error
    metric: str | None           # the score behind the verdict, when one crossed a threshold
    value: float | None
    threshold: float | None
    actions: tuple[str, ...]     # what the run did: alert, close_gate, rollback, reaudit, reopen_gate
    report: str | None           # link to the run's report (URL or file path)
    audit_run_id: int | None = None
    run: str | None = None       # dag_id/run_id of the Airflow run
    detail: str | None = None    # one line of context: the error, the rollback target, ...
    plain: str | None = None     # what was found and what to do, in plain words (monitors.reports.plain_words)

    def subject(self) -> str:
        head = {"opened": "", "escalated": "escalated: ", "resolved": "resolved: "}.get(self.kind, "")
        return f"[embwarden] {head}{self.deployment} {self.version}: {self.verdict}"

    def summary(self) -> str:
        if self.verdict == "inconclusive" and self.metric is not None and self.value is not None:
            crossed = (f"inconclusive: the attacker does not cover the sample ({self.metric}={self.value:.3f}, "
                       f"below {self.threshold})")
        elif self.metric is not None and self.value is not None:
            crossed = f"{self.metric}={self.value:.3f} crossed {self.verdict} threshold {self.threshold}"
        else:
            crossed = f"verdict {self.verdict}"
        extra = f"; {self.detail}" if self.detail else ""
        return (f"embwarden: {self.deployment} version {self.version}: {crossed}; "
                f"actions: {', '.join(self.actions) or 'none'}{extra}; report: {self.report or 'pending'}")

    @classmethod
    def from_json(cls, data: dict) -> Alert:
        fields = {k: v for k, v in data.items() if k != "summary"}
        return cls(**{**fields, "actions": tuple(fields.get("actions", ()))})

    def as_json(self) -> dict:
        data = asdict(self)
        data["actions"] = list(self.actions)
        data["summary"] = self.summary()
        return data


LOG_CHANNEL = "log"


class AlertsUndelivered(EmbwardenError):
    """Some alerts could not be sent; they are recorded `failed` and retried."""


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
        gate = status_of(session, run.deployment)
        detail = ("gate reopened" if "reopen_gate" in done else
                  f"gate is {gate.state}" + ("" if gate.is_open else " (reopen it by hand)"))
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
    return (session.scalar(sa.select(sa.func.count()).select_from(AlertRecord).where(
        AlertRecord.deployment_id == row.deployment_id, AlertRecord.channel == row.channel,
        AlertRecord.id > row.id, AlertRecord.status == "sent")) or 0) > 0


def delivery_id(row: AlertRecord) -> str:
    """The same for every attempt at one alert, different for every alert of any ledger: a receiver
    that sees it twice (mail Message-ID, webhook Idempotency-Key) can drop the copy."""
    return f"embwarden-alert-{row.id}-{int(row.created_at.timestamp())}"


def deliver_alerts(config: EmbwardenConfig, audit_run_id: int | None = None, deployment: str | None = None,
                   exclude_run: int | None = None, unknown: bool = False) -> list[str]:
    """Send the alerts not yet delivered (of one run, or of a deployment); the errors of those that
    still fail.

    Each attempt is recorded (`sending`, attempts + 1) before the alert leaves: if the ledger then
    vanishes, a retry finds the alert `sending`, its outcome unknown, and does not send it again;
    `unknown=True` (`embwarden alerts retry`) sends those too, under the same delivery id, so a
    receiver that saw the first copy can drop the second. An undelivered alert is `superseded`, not
    sent, once a newer alert of its deployment went out on the same channel: an old `error` must
    not arrive after the `resolved` that ended it.
    """
    retried = (*UNSENT, "sending") if unknown else UNSENT
    with session_scope() as session:
        query = sa.select(AlertRecord).where(AlertRecord.status.in_(retried))
        if audit_run_id is not None:
            query = query.where(AlertRecord.audit_run_id == audit_run_id)
        if deployment is not None:
            query = query.join(Deployment, Deployment.id == AlertRecord.deployment_id).where(
                Deployment.name == deployment)
        if exclude_run is not None:
            query = query.where(AlertRecord.audit_run_id != exclude_run)
        pending = [row.id for row in session.scalars(query.order_by(AlertRecord.id))]
        names = {d.id: d.name for d in session.scalars(sa.select(Deployment))}
    errors = []
    for alert_id in pending:
        with session_scope() as session:   # claim it: committed before anything is sent
            record = row(session, AlertRecord, alert_id, with_for_update=True)
            if record.status not in retried:
                continue                    # another worker took it meanwhile
            if superseded(session, record):
                record.status, record.error = "superseded", "a newer alert of this deployment was sent on this channel"
                log.info("alert %d (%s) over %s: superseded", alert_id, record.kind, record.channel)
                continue
            record.status, record.attempts = "sending", record.attempts + 1
            alert, channel_name, dep_id = Alert.from_json(record.payload), record.channel, record.deployment_id
            key = delivery_id(record)
        error = None
        try:
            if channel_name == LOG_CHANNEL:
                logging.getLogger("embwarden.alerts").warning(alert.summary())
            else:
                channels = {f"{c.kind}:{c.connection}": c for c in config.alert_channels(names[dep_id])}
                if channel_name not in channels:
                    raise notifiers.AlertDeliveryError(f"{channel_name}: no longer configured for {names[dep_id]}")
                notifiers.deliver(alert, channels[channel_name], key)
        except EmbwardenError as exc:  # AlertDeliveryError, or a deployment gone from the configuration
            error = str(exc)
            errors.append(f"{channel_name}: {exc}")
        with session_scope() as session:
            record = row(session, AlertRecord, alert_id)
            record.status, record.error = ("failed", error) if error else ("sent", None)
            record.sent_at = None if error else utcnow()
        log.info("alert %d (%s) over %s: %s", alert_id, alert.kind, channel_name, "failed" if error else "sent")
    return errors
