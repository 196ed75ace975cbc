"""The ledger's first schema: deployments, versions, audit runs, scores, thresholds, gates, actions.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("active_version_id", sa.Integer(), nullable=True),
        sa.Column("config_active_version", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("name", name="uq_deployments_name"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("encoder", sa.JSON(), nullable=False),
        sa.Column("transform", sa.JSON(), nullable=False),
        sa.Column("guarantee", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name="fk_versions_deployment_id_deployments"),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.UniqueConstraint("deployment_id", "name", name="uq_versions_deployment_name"),
    )
    with op.batch_alter_table("deployments") as batch:
        batch.create_foreign_key("fk_deployments_active_version_id_versions", "versions",
                                 ["active_version_id"], ["id"])
    op.create_table(
        "audit_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("sample_size", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("thresholds", sa.JSON(), nullable=True),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name="fk_audit_runs_deployment_id_deployments"),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"], name="fk_audit_runs_version_id_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_runs"),
        sa.UniqueConstraint("dag_id", "run_id", "deployment_id", name="uq_audit_runs_dag_run"),
    )
    op.create_index("ix_audit_runs_deployment_id", "audit_runs", ["deployment_id"])
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("audit_run_id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(250), nullable=False),
        sa.Column("probe", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("ci_low", sa.Double(), nullable=False),
        sa.Column("ci_high", sa.Double(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["audit_run_id"], ["audit_runs.id"], ondelete="CASCADE",
                                name="fk_scores_audit_run_id_audit_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_scores"),
        sa.UniqueConstraint("audit_run_id", "task", "probe", "metric", name="uq_scores_run_task_probe_metric"),
    )
    op.create_table(
        "thresholds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(130), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("warn", sa.Double(), nullable=True),
        sa.Column("gate", sa.Double(), nullable=True),
        sa.Column("rollback", sa.Double(), nullable=True),
        sa.Column("higher_is_worse", sa.Boolean(), nullable=False),
        sa.Column("author", sa.String(250), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name="fk_thresholds_deployment_id_deployments"),
        sa.PrimaryKeyConstraint("id", name="pk_thresholds"),
        sa.UniqueConstraint("deployment_id", "metric", "version", name="uq_thresholds_deployment_metric_version"),
    )
    op.create_table(
        "gate_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(250), nullable=False),
        sa.Column("audit_run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name="fk_gate_events_deployment_id_deployments"),
        sa.ForeignKeyConstraint(["audit_run_id"], ["audit_runs.id"], name="fk_gate_events_audit_run_id_audit_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_gate_events"),
    )
    op.create_index("ix_gate_events_deployment_id", "gate_events", ["deployment_id"])
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("audit_run_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(250), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], name="fk_actions_deployment_id_deployments"),
        sa.ForeignKeyConstraint(["audit_run_id"], ["audit_runs.id"], name="fk_actions_audit_run_id_audit_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
        sa.UniqueConstraint("audit_run_id", "kind", name="uq_actions_run_kind"),
    )
    op.create_index("ix_actions_deployment_id", "actions", ["deployment_id"])


def downgrade() -> None:
    op.drop_table("actions")
    op.drop_table("gate_events")
    op.drop_table("thresholds")
    op.drop_table("scores")
    op.drop_table("audit_runs")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_constraint("fk_deployments_active_version_id_versions", type_="foreignkey")
    op.drop_table("versions")
    op.drop_table("deployments")
