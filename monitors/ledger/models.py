"""The ledger's tables (SQLAlchemy 2). Schema changes go through Alembic (monitors/ledger/migrations).

Every write a DAG task makes is keyed by the DAG run, so a retried task overwrites its own rows
instead of adding new ones: audit_runs by (dag_id, run_id, deployment), scores by
(audit run, task, probe, metric), actions by (audit run, kind), alerts by (audit run, channel).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Values of the status-like columns, in one place.
RUN_STATUSES = ("running", "succeeded", "failed", "invalid")
SCORE_TARGETS = ("sample", "canaries")
VERDICTS = ("pass", "warn", "inconclusive", "gate", "rollback", "invalid")
GATE_STATES = ("open", "closed")
ACTION_KINDS = ("alert", "close_gate", "reopen_gate", "rollback", "reaudit", "activate")
ACTION_STATUSES = ("pending", "done", "failed")
INCIDENT_STATUSES = ("open", "resolved")
ALERT_STATUSES = ("pending", "sending", "sent", "failed", "superseded")
# Which bound of a score a threshold judges: the point value, or the 95% interval's low or high end.
THRESHOLD_BASES = ("value", "ci_low", "ci_high")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


Timestamp = sa.DateTime(timezone=True)


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    active_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("versions.id", use_alter=True, name="fk_deployments_active_version_id_versions"))
    # The active_version the configuration file named at the last sync: a change there is a
    # deliberate deployment; an unchanged file does not undo a rollback.
    config_active_version: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    active_version: Mapped[Version | None] = relationship(foreign_keys=[active_version_id], post_update=True)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (sa.UniqueConstraint("deployment_id", "name", name="uq_versions_deployment_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id"))
    name: Mapped[str] = mapped_column(sa.String(64))
    encoder: Mapped[dict] = mapped_column(sa.JSON)
    transform: Mapped[dict] = mapped_column(sa.JSON)
    guarantee: Mapped[str] = mapped_column(sa.String(200), default="none")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    deployment: Mapped[Deployment] = relationship(foreign_keys=[deployment_id])


class AuditRun(Base):
    __tablename__ = "audit_runs"
    __table_args__ = (sa.UniqueConstraint("dag_id", "run_id", "deployment_id", name="uq_audit_runs_dag_run"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dag_id: Mapped[str] = mapped_column(sa.String(250))
    run_id: Mapped[str] = mapped_column(sa.String(250))
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id"), index=True)
    version_id: Mapped[int] = mapped_column(sa.ForeignKey("versions.id"))
    status: Mapped[str] = mapped_column(sa.String(16), default="running")
    verdict: Mapped[str | None] = mapped_column(sa.String(16))
    sample_size: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    # The effective thresholds the verdict was computed with, so any past run can be explained.
    thresholds: Mapped[dict | None] = mapped_column(sa.JSON)
    # Metrics rising over the last runs though below their thresholds: {metric: {tau, p, values, level}}.
    trends: Mapped[dict | None] = mapped_column(sa.JSON)
    report_path: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)

    deployment: Mapped[Deployment] = relationship()
    version: Mapped[Version] = relationship()
    scores: Mapped[list[Score]] = relationship(back_populates="audit_run", order_by="Score.id")


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (
        sa.UniqueConstraint("audit_run_id", "task", "probe", "metric", name="uq_scores_run_task_probe_metric"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_run_id: Mapped[int] = mapped_column(sa.ForeignKey("audit_runs.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(sa.String(250))
    probe: Mapped[str] = mapped_column(sa.String(64))
    metric: Mapped[str] = mapped_column(sa.String(64))
    # What the probe was scored on: the production "sample" or synthetic "canaries".
    target: Mapped[str] = mapped_column(sa.String(16), default="sample", server_default="sample")
    value: Mapped[float]
    ci_low: Mapped[float]
    ci_high: Mapped[float]
    n: Mapped[int]
    recorded_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    audit_run: Mapped[AuditRun] = relationship(back_populates="scores")

    @property
    def key(self) -> str:
        return f"{self.probe}.{self.metric}"


class Threshold(Base):
    """One version of the levels of one metric of one deployment; the highest version wins."""

    __tablename__ = "thresholds"
    __table_args__ = (
        sa.UniqueConstraint("deployment_id", "metric", "version", name="uq_thresholds_deployment_metric_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id"))
    metric: Mapped[str] = mapped_column(sa.String(130))
    version: Mapped[int]
    warn: Mapped[float | None]
    gate: Mapped[float | None]
    rollback: Mapped[float | None]
    higher_is_worse: Mapped[bool] = mapped_column(default=True)
    basis: Mapped[str] = mapped_column(sa.String(8), default="value", server_default="value")
    author: Mapped[str] = mapped_column(sa.String(250))
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    def levels(self) -> dict:
        return {"warn": self.warn, "gate": self.gate, "rollback": self.rollback,
                "higher_is_worse": self.higher_is_worse, "basis": self.basis, "version": self.version}


class GateEvent(Base):
    """The gate's history; the newest event of a deployment is its current state."""

    __tablename__ = "gate_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id"), index=True)
    state: Mapped[str] = mapped_column(sa.String(8))
    reason: Mapped[str] = mapped_column(sa.Text)
    actor: Mapped[str] = mapped_column(sa.String(250))
    audit_run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("audit_runs.id"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Action(Base):
    """A side effect decided by a run: written `pending` before it is attempted, `done` after."""

    __tablename__ = "actions"
    __table_args__ = (sa.UniqueConstraint("audit_run_id", "kind", name="uq_actions_run_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id"), index=True)
    # NULL for actions taken by hand (CLI, privacy_gate DAG), which are not keyed by a run.
    audit_run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("audit_runs.id"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    actor: Mapped[str] = mapped_column(sa.String(250))
    reason: Mapped[str] = mapped_column(sa.Text)
    detail: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Incident(Base):
    """A deployment's trouble from the run that first found it until a run that passes.

    One open incident gets one alert; a run that finds it worse (escalation) or ends it
    (resolution) sends another. `alerted_levels` lists the levels already alerted.
    """

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id"), index=True)
    level: Mapped[str] = mapped_column(sa.String(16))
    alerted_levels: Mapped[list] = mapped_column(sa.JSON, default=list)
    status: Mapped[str] = mapped_column(sa.String(16), default="open")
    opened_run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("audit_runs.id"))
    last_run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("audit_runs.id"))
    resolved_run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("audit_runs.id"))
    opened_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(Timestamp)


class AlertRecord(Base):
    """One alert over one channel: written `pending`; `sending` while an attempt is under way (left so
    when its outcome is unknown); then `sent`, `failed` (retried later) or `superseded` (a newer alert
    of the deployment went out on the channel first)."""

    __tablename__ = "alerts"
    __table_args__ = (sa.UniqueConstraint("audit_run_id", "channel", name="uq_alerts_run_channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id"))
    incident_id: Mapped[int | None] = mapped_column(sa.ForeignKey("incidents.id"))
    audit_run_id: Mapped[int | None] = mapped_column(sa.ForeignKey("audit_runs.id"))
    kind: Mapped[str] = mapped_column(sa.String(16))          # opened, escalated, resolved
    channel: Mapped[str] = mapped_column(sa.String(200))      # e.g. email:embwarden_smtp, webhook:hooks, log
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    payload: Mapped[dict] = mapped_column(sa.JSON)            # the Alert's fields: names and numbers only
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Validation(Base):
    """The checks of a run's sample (Great Expectations): one row per (run, kind), overwritten on retry.

    `results` lists each expectation: its name, column, success, what was observed, how many rows
    failed it and a few of their ids (ids only, never vectors or text).
    """

    __tablename__ = "validations"
    __table_args__ = (sa.UniqueConstraint("audit_run_id", "kind", name="uq_validations_run_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_run_id: Mapped[int] = mapped_column(sa.ForeignKey("audit_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(32))          # "sample" (audits) or "window" (drift)
    success: Mapped[bool]
    row_count: Mapped[int]
    results: Mapped[list] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
