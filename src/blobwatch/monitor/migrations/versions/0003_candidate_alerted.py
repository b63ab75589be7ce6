"""Record on each candidate whether the monitor alerted on it (``candidates.alerted``).

A review changes a candidate's status, so the status no longer tells whether its image raised an
alert (a rejected candidate may have been silent, ``linked`` to an earlier one).  Existing rows
are filled from what they still show: alerted unless linked or on a known blob when found.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column and fill it for existing candidates.

    A plain ``ADD COLUMN``, not a batch (copy) of the table: on SQLite with foreign keys on,
    dropping the old copy would set every ``linked_to`` to NULL.
    """
    op.add_column("candidates", sa.Column("alerted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE candidates SET alerted = (linked_to IS NULL AND status IN ('new', 'confirmed', 'rejected'))"
    )


def downgrade() -> None:
    """Drop it again."""
    op.drop_column("candidates", "alerted")
