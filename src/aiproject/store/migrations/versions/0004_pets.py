"""Pet profiles, analysis sessions and results (spec 04).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "pet_profiles",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("species", sa.String(16), nullable=False),
        sa.Column("breed", sa.String(64), nullable=False),
        sa.Column("age_years", sa.Float(), nullable=True),
        sa.Column("weight_kg", sa.Float(), nullable=True),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pet_profiles_owner", "pet_profiles", ["owner"])
    op.create_table(
        "pet_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pet_sessions_owner", "pet_sessions", ["owner"])
    op.create_table(
        "pet_analyses",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("pet_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "pet_profile_id",
            sa.Integer(),
            sa.ForeignKey("pet_profiles.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("module", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("urgency", sa.String(16), nullable=False),
        sa.Column("image_url", sa.String(512), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_pet_analyses_session_id", "pet_analyses", ["session_id"])
    op.create_index("ix_pet_analyses_pet_profile_id", "pet_analyses", ["pet_profile_id"])
    op.create_index("ix_pet_analyses_created_at", "pet_analyses", ["created_at"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("pet_analyses")
    op.drop_table("pet_sessions")
    op.drop_table("pet_profiles")
