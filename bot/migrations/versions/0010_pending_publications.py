"""Publications: a closed incident's postmortem is pending until it has reached Slack.

Incidents closed before this revision were published (or given up on) by the bot of their
time, so each is recorded as published: an upgrade posts no old postmortem again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 15:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# bot.db.UTCDateTime stores into this; SQLite keeps it as text in UTC.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("enterprise_id", sa.String(length=64), nullable=True),
        sa.Column("is_enterprise_install", sa.Boolean(), nullable=False),
        sa.Column("claim", sa.String(length=36), nullable=True),
        sa.Column("claimed_until", UTC_DATETIME, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("summary_posted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("incident_id"),
    )
    op.create_index("ix_publications_pending", "publications", ["pending", "claimed_until"])
    incidents = sa.table("incidents", sa.column("id"), sa.column("channel_id"), sa.column("status"))
    publications = sa.table(
        "publications",
        *(
            sa.column(name)
            for name in (
                "incident_id",
                "pending",
                "channel_id",
                "is_enterprise_install",
                "attempts",
                "summary_posted",
            )
        ),
    )
    published = sa.select(
        incidents.c.id, sa.false(), incidents.c.channel_id, sa.false(), sa.literal(0), sa.true()
    ).where(incidents.c.status == "closed")
    op.execute(publications.insert().from_select(list(publications.c.keys()), published))


def downgrade() -> None:
    op.drop_index("ix_publications_pending", table_name="publications")
    op.drop_table("publications")
