"""The tables: workspaces, incidents, their timeline, field history, measures and postmortems."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bot.db import Base, UTCDateTime

SLACK_ID = String(64)
# Slack's trigger_ids are about 40 characters; a longer one is not kept (bot/slack/commands.py).
REQUEST_ID_LENGTH = 255


class IncidentStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class EntryKind(StrEnum):
    NOTE = "note"  # /incident note
    CLOSE = "close"  # the text of /incident close
    CAPTURE = "capture"  # a Slack message pinned to the timeline
    EVENT = "event"  # a change the bot recorded: severity, roles, status, key moments


class DeletedChannel(StrEnum):
    """What Slack said of an incident's channel when it deleted it (its event's type)."""

    PUBLIC = "public"  # channel_deleted
    PRIVATE = "private"  # group_deleted


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


def incident_reference(number: int) -> str:
    """How people name an incident: `INC-7`."""
    return f"INC-{number}"


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
    severity: Mapped[str | None] = mapped_column(String(32), default=None)
    detected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    mitigated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The counter behind the timeline's short numbers (#1, #2, ...).
    last_entry_number: Mapped[int] = mapped_column(default=0, server_default="0")
    # Set once Slack says the channel was deleted (DeletedChannel): no command can be typed
    # there again, and Slack no longer shows it, so `close INC-<n>` is typed elsewhere.
    channel_deleted: Mapped[str | None] = mapped_column(String(16), default=None)

    entries: Mapped[list[TimelineEntry]] = relationship(
        back_populates="incident", order_by="(TimelineEntry.occurred_at, TimelineEntry.id)"
    )
    actions: Mapped[list[Action]] = relationship(order_by="Action.id")

    @property
    def reference(self) -> str:
        return incident_reference(self.number)

    @property
    def is_open(self) -> bool:
        return self.status == IncidentStatus.OPEN

    @property
    def private_channel_deleted(self) -> bool:
        return self.channel_deleted == DeletedChannel.PRIVATE

    def posts_in(self, closed_in: str) -> str | None:
        """Where a close typed in `closed_in` posts the summary and the postmortem: there,
        or nowhere when the incident's private channel was deleted and the close was typed
        elsewhere (only its members saw its timeline, and they cannot any more)."""
        if self.private_channel_deleted and self.channel_id != closed_in:
            return None
        return closed_in


class TimelineEntry(Base):
    __tablename__ = "timeline_entries"
    __table_args__ = (
        Index("ix_timeline_entries_incident_time", "incident_id", "occurred_at", "id"),
        UniqueConstraint("incident_id", "number", name="uq_timeline_entries_number"),
        # A Slack message is on an incident's timeline at most once, however often it is
        # pinned or Slack retries the event.
        UniqueConstraint(
            "incident_id", "source_channel", "source_ts", name="uq_timeline_entries_source"
        ),
        # A request that reaches us twice (a replay, a proxy's retry) adds one entry.
        Index("uq_timeline_entries_request", "request_id", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    author_id: Mapped[str] = mapped_column(SLACK_ID)
    kind: Mapped[str] = mapped_column(String(16), default=EntryKind.NOTE.value)
    text: Mapped[str] = mapped_column(Text)
    number: Mapped[int] = mapped_column(default=0, server_default="0")
    author_name: Mapped[str | None] = mapped_column(String(255), default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deleted_by: Mapped[str | None] = mapped_column(SLACK_ID, default=None)
    # Where a captured message came from, its link, and the files that came with it (JSON).
    source_channel: Mapped[str | None] = mapped_column(SLACK_ID, default=None)
    source_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    permalink: Mapped[str | None] = mapped_column(Text, default=None)
    files: Mapped[str | None] = mapped_column(Text, default=None)
    captured_by: Mapped[str | None] = mapped_column(SLACK_ID, default=None)
    # The `edited.ts` of the version of the message the entry holds (None: never edited).
    source_edited_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    # The request that added it (Slack's trigger_id, one per invocation of a command).
    request_id: Mapped[str | None] = mapped_column(String(REQUEST_ID_LENGTH), default=None)

    incident: Mapped[Incident] = relationship(back_populates="entries")


class HandledRequest(Base):
    """A command request that was answered, by Slack's trigger_id (one per invocation): the
    same request delivered again (a replay, a proxy's retry) changes nothing the second time.
    Notes keep theirs on their entry instead (`TimelineEntry.request_id`)."""

    __tablename__ = "handled_requests"
    # The oldest are forgotten first (bot.incidents.forget_handled_requests).
    __table_args__ = (Index("ix_handled_requests_handled_at", "handled_at"),)

    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), primary_key=True)
    team_id: Mapped[str] = mapped_column(SLACK_ID)
    command: Mapped[str] = mapped_column(String(32))
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EntryRevision(Base):
    """What a timeline entry was before each edit, deletion, restoration or refresh."""

    __tablename__ = "entry_revisions"
    __table_args__ = (Index("ix_entry_revisions_entry", "entry_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("timeline_entries.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    old_text: Mapped[str] = mapped_column(Text)
    old_occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    new_text: Mapped[str | None] = mapped_column(Text, default=None)
    new_occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    changed_by: Mapped[str] = mapped_column(SLACK_ID)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RoleAssignment(Base):
    """A person given a role (commander, ...) on an incident; the latest per role holds it."""

    __tablename__ = "role_assignments"
    __table_args__ = (Index("ix_role_assignments_incident", "incident_id", "role", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(64))
    # None: the role was taken away (`/incident role commander none`).
    user_id: Mapped[str | None] = mapped_column(SLACK_ID)
    user_name: Mapped[str | None] = mapped_column(String(255))
    assigned_by: Mapped[str] = mapped_column(SLACK_ID)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The timeline entry that records it: deleting the entry undoes the assignment.
    entry_id: Mapped[int | None] = mapped_column(default=None)


class FieldChange(Base):
    """Every value ever given to an incident's impact, cause, resolution, summary, severity,
    key moments or status."""

    __tablename__ = "field_changes"
    __table_args__ = (Index("ix_field_changes_incident", "incident_id", "field", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    field: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(SLACK_ID)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A severity's timeline entry: deleting the entry undoes the change.
    entry_id: Mapped[int | None] = mapped_column(default=None)


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


class Publication(Base):
    """Whether a closed incident's postmortem still has to reach its channel.

    Recorded pending in the close's own transaction, so that a worker stopped (or Slack out of
    reach) between the acknowledgement and the upload loses nothing: a sweeper in every worker
    publishes what is pending and claimed by no one (bot/slack/publish.py).
    """

    __tablename__ = "publications"
    __table_args__ = (Index("ix_publications_pending", "pending", "claimed_until"),)

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    pending: Mapped[bool]
    # Where the close was typed: the summary and the file go there.
    channel_id: Mapped[str] = mapped_column(SLACK_ID)
    # Whose installation's token posts it, with SLACK_CLIENT_ID (an org-wide install's).
    enterprise_id: Mapped[str | None] = mapped_column(SLACK_ID, default=None)
    is_enterprise_install: Mapped[bool] = mapped_column(default=False)
    # Who is publishing it (a random id per attempt), and until when no one else may; after a
    # failure, when it may be tried again.
    claim: Mapped[str | None] = mapped_column(String(36), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    # The summary is in the channel: a later attempt uploads the file alone.
    summary_posted: Mapped[bool] = mapped_column(default=False)
    # The postmortems row this close's attempts keep, each replacing it with what it sends:
    # one row per close, however many attempts it takes (none yet: the first adds it).
    postmortem_id: Mapped[int | None] = mapped_column(default=None)


# slack_sdk's OAuth stores (multi-workspace installs) keep their own tables; declaring them on
# our metadata puts them under the same migrations as everything else.
SLACK_INSTALLATIONS = SQLAlchemyInstallationStore.build_installations_table(
    Base.metadata, SQLAlchemyInstallationStore.default_installations_table_name
)
SLACK_BOTS = SQLAlchemyInstallationStore.build_bots_table(
    Base.metadata, SQLAlchemyInstallationStore.default_bots_table_name
)
SLACK_OAUTH_STATES = SQLAlchemyOAuthStateStore.build_oauth_states_table(
    Base.metadata, SQLAlchemyOAuthStateStore.default_table_name
)
