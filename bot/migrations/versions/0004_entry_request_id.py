"""The request that added a timeline entry, so that the same request delivered twice adds one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 19:50:13.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Entries made before have none: NULLs do not collide in a unique index. An index, not a
    # constraint: SQLite adds both the column and the index without copying the table.
    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=255), nullable=True))
        batch_op.create_index("uq_timeline_entries_request", ["request_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.drop_index("uq_timeline_entries_request")
        batch_op.drop_column("request_id")
