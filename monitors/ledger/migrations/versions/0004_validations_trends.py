"""Sample validations are recorded; audit runs keep the trend findings they were judged with.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "validations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("audit_run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["audit_run_id"], ["audit_runs.id"], ondelete="CASCADE",
                                name="fk_validations_audit_run_id_audit_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_validations"),
        sa.UniqueConstraint("audit_run_id", "kind", name="uq_validations_run_kind"),
    )
    with op.batch_alter_table("audit_runs") as batch:
        batch.add_column(sa.Column("trends", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch:
        batch.drop_column("trends")
    op.drop_table("validations")
