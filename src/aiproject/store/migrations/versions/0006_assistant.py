"""The assistant (spec 01): citizens' required and basic info, and flow sessions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "assistant_required_info",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(64), nullable=True),
        sa.Column("gender", sa.String(8), nullable=True),
        sa.Column("nationality", sa.String(16), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("id_card", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "assistant_basic_info",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("native_place", sa.String(128), nullable=True),
        sa.Column("birth", sa.String(32), nullable=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("career", sa.String(64), nullable=True),
        sa.Column("address", sa.String(256), nullable=True),
        sa.Column("hukou", sa.String(256), nullable=True),
        sa.Column("political_status", sa.String(32), nullable=True),
        sa.Column("marital_status", sa.Boolean(), nullable=True),
        sa.Column("religion", sa.String(64), nullable=True),
        sa.Column("education", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "assistant_sessions",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("classify", sa.String(512), nullable=False),
        sa.Column("flow", sa.Text(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("extras", sa.JSON(), nullable=False),
        sa.Column("interview", sa.JSON(), nullable=False),
        sa.Column("lease_kind", sa.String(16), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_assistant_sessions_user_id", "assistant_sessions", ["user_id"])
    op.create_index("ix_assistant_sessions_expires_at", "assistant_sessions", ["expires_at"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_index("ix_assistant_sessions_expires_at", table_name="assistant_sessions")
    op.drop_index("ix_assistant_sessions_user_id", table_name="assistant_sessions")
    op.drop_table("assistant_sessions")
    op.drop_table("assistant_basic_info")
    op.drop_table("assistant_required_info")
