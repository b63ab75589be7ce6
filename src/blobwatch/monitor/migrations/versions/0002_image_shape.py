"""Add the image shape (rows, cols) to ``images``, so wrongly shaped files can be recognised.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add two nullable integer columns."""
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("rows", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cols", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("images") as batch:
        batch.drop_column("cols")
        batch.drop_column("rows")
