"""The tables: workspaces, incidents, their timeline, field history, measures and postmortems."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bot.db import Base, UTCDateTime

SLACK_ID = String(64)


class IncidentStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class EntryKind(StrEnum):
    NOTE = "note"
    CLOSE = "close"


class Field(StrEnum):
    """The parts of a postmortem that are set as a whole (the latest value wins)."""

    IMPACT = "impact"
    CAUSE = "cause"
    RESOLUTION = "resolution"
    SUMMARY = "summary"


class Workspace(Base):
    """A Slack workspace; holds the counter behind its `INC-<n>` numbers."""

    __tablename__ = "workspaces"

    team_id: Mapped[str] = mapped_column(SLACK_ID, primary_key=True)
    last_incident_number: Mapped[int] = mapped_column(default=0)


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        UniqueConstraint("team_id", "number", name="uq_incidents_team_number"),
        # At most one open incident per channel, enforced by the database so that two
        # workers racing to `start` cannot both win.
        Index(
            "uq_incidents_open_channel",
            "team_id",
            "channel_id",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[str] = mapped_column(SLACK_ID)
    number: Mapped[int]
    channel_id: Mapped[str] = mapped_column(SLACK_ID)
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=IncidentStatus.OPEN.value)
    timezone: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    opened_by: Mapped[str] = mapped_column(SLACK_ID)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    closed_by: Mapped[str | None] = mapped_column(SLACK_ID, default=None)
    impact: Mapped[str | None] = mapped_column(Text, default=None)
    cause: Mapped[str | None] = mapped_column(Text, default=None)
    resolution: Mapped[str | None] = mapped_column(Text, default=None)
    summary: Mapped[str | None] = mapped_column(Text, default=None)

    entries: Mapped[list[TimelineEntry]] = relationship(
        back_populates="incident", order_by="(TimelineEntry.occurred_at, TimelineEntry.id)"
    )
    actions: Mapped[list[Action]] = relationship(order_by="Action.id")

    @property
    def reference(self) -> str:
        return f"INC-{self.number}"

    @property
    def is_open(self) -> bool:
        return self.status == IncidentStatus.OPEN


class TimelineEntry(Base):
    __tablename__ = "timeline_entries"
    __table_args__ = (
        Index("ix_timeline_entries_incident_time", "incident_id", "occurred_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    author_id: Mapped[str] = mapped_column(SLACK_ID)
    kind: Mapped[str] = mapped_column(String(16), default=EntryKind.NOTE.value)
    text: Mapped[str] = mapped_column(Text)

    incident: Mapped[Incident] = relationship(back_populates="entries")


class FieldChange(Base):
    """Every value ever given to an incident's impact, cause, resolution or summary."""

    __tablename__ = "field_changes"
    __table_args__ = (Index("ix_field_changes_incident", "incident_id", "field", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    field: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(SLACK_ID)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Action(Base):
    """A corrective or preventative measure."""

    __tablename__ = "actions"
    __table_args__ = (Index("ix_actions_incident", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    author_id: Mapped[str] = mapped_column(SLACK_ID)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Postmortem(Base):
    """A postmortem as rendered when its incident closed, kept as it was sent."""

    __tablename__ = "postmortems"
    __table_args__ = (Index("ix_postmortems_incident", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    rendered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    markdown: Mapped[str] = mapped_column(Text)
