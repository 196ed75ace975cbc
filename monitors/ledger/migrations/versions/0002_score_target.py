"""Scores say which targets they were measured on: the production sample or canaries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("target", sa.String(16), nullable=False, server_default="sample"))


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("target")
