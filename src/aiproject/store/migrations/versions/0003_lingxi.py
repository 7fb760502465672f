"""Lingxi devices, sessions and histories (spec 03).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "lingxi_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_lingxi_messages_conversation", "lingxi_messages", ["device_id", "session_id", "id"]
    )
    op.create_table(
        "lingxi_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("battery_level", sa.Integer(), nullable=True),
        sa.Column("volume_level", sa.Integer(), nullable=True),
        sa.Column("device_ts", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lingxi_reports_device_id", "lingxi_reports", ["device_id"])
    op.create_table(
        "lingxi_devices",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("battery_level", sa.Integer(), nullable=True),
        sa.Column("battery_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("volume_level", sa.Integer(), nullable=True),
        sa.Column("volume_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "lingxi_counters",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("lingxi_counters")
    op.drop_table("lingxi_devices")
    op.drop_table("lingxi_reports")
    op.drop_index("ix_lingxi_messages_conversation", table_name="lingxi_messages")
    op.drop_table("lingxi_messages")
