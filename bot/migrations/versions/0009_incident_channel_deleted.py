"""Incidents note that Slack deleted their channel, and whether it was private.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 15:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for every incident there is: the bot did not listen for deletions before.
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("channel_deleted", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("channel_deleted")
