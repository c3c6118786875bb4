"""An index on when each request was handled, so that the oldest can be forgotten cheaply.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:12:41.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every row has its `handled_at` already (0005 made it NOT NULL): only the index is new.
    op.create_index("ix_handled_requests_handled_at", "handled_requests", ["handled_at"])


def downgrade() -> None:
    op.drop_index("ix_handled_requests_handled_at", table_name="handled_requests")
