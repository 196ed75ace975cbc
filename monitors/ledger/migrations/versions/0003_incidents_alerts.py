"""Thresholds say which bound of a score they judge; incidents and alerts are recorded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("thresholds") as batch:
        batch.add_column(sa.Column("basis", sa.String(8), nullable=False, server_default="value"))
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("alerted_levels", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_run_id", sa.Integer(), nullable=True),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("resolved_run_id", sa.Integer(), nullable=True),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name="fk_incidents_deployment_id_deployments"),
        sa.ForeignKeyConstraint(["opened_run_id"], ["audit_runs.id"], name="fk_incidents_opened_run_id_audit_runs"),
        sa.ForeignKeyConstraint(["last_run_id"], ["audit_runs.id"], name="fk_incidents_last_run_id_audit_runs"),
        sa.ForeignKeyConstraint(["resolved_run_id"], ["audit_runs.id"],
                                name="fk_incidents_resolved_run_id_audit_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_deployment_id", "incidents", ["deployment_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("audit_run_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name="fk_alerts_deployment_id_deployments"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], name="fk_alerts_incident_id_incidents"),
        sa.ForeignKeyConstraint(["audit_run_id"], ["audit_runs.id"], name="fk_alerts_audit_run_id_audit_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("audit_run_id", "channel", name="uq_alerts_run_channel"),
    )
    op.create_index("ix_alerts_status", "alerts", ["status"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("incidents")
    with op.batch_alter_table("thresholds") as batch:
        batch.drop_column("basis")
