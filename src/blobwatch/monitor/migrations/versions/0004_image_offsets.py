"""Store each image's blob-pattern offset to a fixed frame (register once).

``images.offset_dy`` / ``offset_dx``: the offset that moves the image's blob pattern onto the
frame image's, measured when the image is first seen (`blobwatch.difference.OffsetFrame`);
``images.offset_frame_id``: the frame image it was measured against (NULL: not measured yet;
set with NULL offsets: it could not be measured, its differences register it directly).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add three nullable columns (plain ``ADD COLUMN``: no copy of the table, see 0003)."""
    op.add_column("images", sa.Column("offset_dy", sa.Float(), nullable=True))
    op.add_column("images", sa.Column("offset_dx", sa.Float(), nullable=True))
    op.add_column("images", sa.Column("offset_frame_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("images") as batch:
        batch.drop_column("offset_frame_id")
        batch.drop_column("offset_dx")
        batch.drop_column("offset_dy")
