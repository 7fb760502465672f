"""Pet analyses keep a perceptual hash of their photo (repeat episodes count distinct photos).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add pet_analyses.image_phash (empty for analyses stored before)."""
    with op.batch_alter_table("pet_analyses") as batch:
        batch.add_column(sa.Column("image_phash", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("pet_analyses") as batch:
        batch.drop_column("image_phash")
