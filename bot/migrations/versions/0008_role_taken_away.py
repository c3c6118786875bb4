"""A role can be taken away: an assignment to nobody.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 15:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("role_assignments", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column("user_name", existing_type=sa.String(length=255), nullable=True)


def downgrade() -> None:
    # An assignment to nobody cannot be kept without a person: the role's holder before it
    # would come back, so it goes with its entry's meaning kept in the timeline's text.
    op.execute("DELETE FROM role_assignments WHERE user_id IS NULL")
    with op.batch_alter_table("role_assignments", schema=None) as batch_op:
        batch_op.alter_column("user_name", existing_type=sa.String(length=255), nullable=False)
        batch_op.alter_column("user_id", existing_type=sa.String(length=64), nullable=False)
