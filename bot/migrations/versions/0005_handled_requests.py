"""Command requests answered, by trigger_id, so that the same request twice changes nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:58:39.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# bot.db.UTCDateTime stores into this; SQLite keeps it as text in UTC.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "handled_requests",
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("command", sa.String(length=32), nullable=False),
        sa.Column("handled_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )


def downgrade() -> None:
    op.drop_table("handled_requests")
