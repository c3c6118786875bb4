"""Publications name the postmortems row their attempts keep: one row per close.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 16:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # None for a publication pending at the upgrade: its next attempt adds the row it keeps.
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("postmortem_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("postmortem_id")
