"""Releases remember when they are (or were) released, as GitLab's `released_at`.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add releases.released_at (empty: the release's created_at)."""
    # A database from before Alembic made by a forge that had the column already has it
    have = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("releases")}
    if "released_at" not in have:
        op.add_column("releases", sa.Column("released_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    """Drop releases.released_at."""
    op.drop_column("releases", "released_at")
