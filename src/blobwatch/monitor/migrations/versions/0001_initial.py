"""Initial blobwatch monitor schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of schema version 0001."""
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("mjd", sa.Float(), nullable=True),
        sa.Column("obs_date", _TS, nullable=True),
        sa.Column("filter", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", _TS, nullable=True),
        sa.Column("registered_at", _TS, nullable=False),
        sa.Column("processed_at", _TS, nullable=True),
        sa.UniqueConstraint("sha256"),
    )
    op.create_index("ix_images_mjd", "images", ["mjd"])
    op.create_index("ix_images_status", "images", ["status"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_path", sa.Text(), nullable=True),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("model_metadata", sa.JSON(), nullable=False),
        sa.Column("blobwatch_version", sa.String(32), nullable=False),
        sa.Column("torch_version", sa.String(32), nullable=True),
        sa.Column("numpy_version", sa.String(32), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("max_probability", sa.Float(), nullable=True),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
    )
    op.create_index("ix_runs_image_id", "runs", ["image_id"])

    op.create_table(
        "subframe_predictions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("x0", sa.Integer(), nullable=False),
        sa.Column("y0", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("saliency_path", sa.Text(), nullable=True),
        sa.UniqueConstraint("run_id", "index", name="uq_subframe_run_index"),
    )
    op.create_index("ix_subframe_predictions_run_id", "subframe_predictions", ["run_id"])

    op.create_table(
        "blobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("radius", sa.Float(), nullable=False),
        sa.Column("depth", sa.Float(), nullable=True),
        sa.Column("first_seen_mjd", sa.Float(), nullable=True),
        sa.Column("first_seen", _TS, nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("candidate_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_blobs_candidate_id", "blobs", ["candidate_id"])

    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("significance", sa.Float(), nullable=True),
        sa.Column("radius", sa.Float(), nullable=True),
        sa.Column("subframe", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column(
            "linked_to", sa.Integer(), sa.ForeignKey("candidates.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column(
            "known_blob_id", sa.Integer(), sa.ForeignKey("blobs.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sa.String(128), nullable=True),
        sa.Column("reviewed_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_candidates_run_id", "candidates", ["run_id"])
    op.create_index("ix_candidates_image_id", "candidates", ["image_id"])
    op.create_index("ix_candidates_status", "candidates", ["status"])

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("url_hash", sa.String(64), nullable=False),
        sa.Column("url_redacted", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_attempt_at", _TS, nullable=True),
        sa.Column("sent_at", _TS, nullable=True),
        sa.UniqueConstraint("image_id", "url_hash", name="uq_notification_image_url"),
    )
    op.create_index("ix_notifications_image_id", "notifications", ["image_id"])
    op.create_index("ix_notifications_status", "notifications", ["status"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("notifications", "candidates", "blobs", "subframe_predictions", "runs", "images"):
        op.drop_table(table)
