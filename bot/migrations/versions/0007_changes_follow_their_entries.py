"""The timeline entry that records each severity and role change, so that deleting the entry
undoes the change.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 15:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Changes made before have none and stand whatever happens to their entries, as they did.
    # Plain columns: SQLite adds them without copying the table.
    with op.batch_alter_table("role_assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entry_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("field_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entry_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("field_changes", schema=None) as batch_op:
        batch_op.drop_column("entry_id")
    with op.batch_alter_table("role_assignments", schema=None) as batch_op:
        batch_op.drop_column("entry_id")
