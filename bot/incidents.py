"""Use cases over the database: start, note, set, close and look up incidents.

Plain functions that take a session and never commit it: the caller owns the session and
commits once per command. Nothing here knows about Slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import (
    Action,
    EntryKind,
    Field,
    FieldChange,
    Incident,
    IncidentStatus,
    Postmortem,
    TimelineEntry,
    Workspace,
)

MAX_TEXT_LENGTH = 4000


class IncidentError(Exception):
    """A request the incident cannot honour; the message is fit to show the person."""


class IncidentAlreadyOpenError(IncidentError):
    def __init__(self, incident: Incident) -> None:
        self.incident = incident
        super().__init__(f"{incident.reference} is already open in this channel: {incident.title}")


class NoOpenIncidentError(IncidentError):
    def __init__(self) -> None:
        super().__init__("There is no open incident in this channel.")


class IncidentNotFoundError(IncidentError):
    pass


class CloseBeforeStartError(IncidentError):
    pass


class TextTooLongError(IncidentError):
    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(
            f"That text is {length:,} characters long; the limit is {MAX_TEXT_LENGTH:,}. "
            "Nothing was recorded."
        )


class EmptyTextError(IncidentError):
    pass


def check_text(text: str, *, what: str = "text") -> str:
    """Return `text` stripped, or refuse it when it is empty or over the limit."""
    text = text.strip()
    if not text:
        raise EmptyTextError(f"The {what} is empty.")
    if len(text) > MAX_TEXT_LENGTH:
        raise TextTooLongError(len(text))
    if "\x00" in text:
        raise IncidentError(f"The {what} contains a NUL character, which cannot be stored.")
    return text


def find_open_incident(session: Session, *, team_id: str, channel_id: str) -> Incident | None:
    """The open incident bound to a channel of a workspace, if any."""
    return session.scalars(
        select(Incident).where(
            Incident.team_id == team_id,
            Incident.channel_id == channel_id,
            Incident.status == IncidentStatus.OPEN.value,
        )
    ).first()


def require_open_incident(session: Session, *, team_id: str, channel_id: str) -> Incident:
    """The open incident of a channel, or `NoOpenIncidentError`."""
    incident = find_open_incident(session, team_id=team_id, channel_id=channel_id)
    if incident is None:
        raise NoOpenIncidentError()
    return incident


def start_incident(
    session: Session,
    *,
    team_id: str,
    channel_id: str,
    user_id: str,
    title: str,
    started_at: datetime,
    timezone: str,
    now: datetime,
) -> Incident:
    """Open an incident in a channel; refuse if one is open there already."""
    title = check_text(title, what="title")
    existing = find_open_incident(session, team_id=team_id, channel_id=channel_id)
    if existing is not None:
        raise IncidentAlreadyOpenError(existing)
    try:
        with session.begin_nested():
            incident = Incident(
                team_id=team_id,
                number=_next_number(session, team_id=team_id),
                channel_id=channel_id,
                title=title,
                status=IncidentStatus.OPEN.value,
                timezone=timezone,
                started_at=started_at,
                opened_by=user_id,
                opened_at=now,
            )
            session.add(incident)
            session.flush()
    except IntegrityError:
        # Another worker opened one in this channel between our check and our insert.
        existing = find_open_incident(session, team_id=team_id, channel_id=channel_id)
        if existing is None:
            raise
        raise IncidentAlreadyOpenError(existing) from None
    return incident


def _next_number(session: Session, *, team_id: str) -> int:
    bump = (
        update(Workspace)
        .where(Workspace.team_id == team_id)
        .values(last_incident_number=Workspace.last_incident_number + 1)
        .returning(Workspace.last_incident_number)
        .execution_options(synchronize_session=False)
    )
    number = session.scalar(bump)
    if number is not None:
        return number
    try:
        with session.begin_nested():
            session.add(Workspace(team_id=team_id, last_incident_number=1))
        return 1
    except IntegrityError:
        # The workspace's first two incidents raced; the other one created the row.
        return session.execute(bump).scalar_one()


def add_entry(
    session: Session,
    *,
    incident: Incident,
    text: str,
    occurred_at: datetime,
    author_id: str,
    now: datetime,
    kind: EntryKind = EntryKind.NOTE,
) -> TimelineEntry:
    """Append an entry to an open incident's timeline."""
    entry = TimelineEntry(
        incident_id=incident.id,
        occurred_at=occurred_at,
        recorded_at=now,
        author_id=author_id,
        kind=kind.value,
        text=check_text(text),
    )
    session.add(entry)
    return entry


def set_field(
    session: Session, *, incident: Incident, field: Field, value: str, user_id: str, now: datetime
) -> FieldChange:
    """Set the incident's impact, cause, resolution or summary, keeping the earlier values."""
    value = check_text(value, what=field.value)
    setattr(incident, field.value, value)
    change = FieldChange(
        incident_id=incident.id, field=field.value, value=value, changed_by=user_id, changed_at=now
    )
    session.add(change)
    return change


def add_action(
    session: Session, *, incident: Incident, text: str, user_id: str, now: datetime
) -> Action:
    """Add a corrective or preventative measure."""
    action = Action(
        incident_id=incident.id, text=check_text(text), author_id=user_id, created_at=now
    )
    session.add(action)
    return action


def close_incident(
    session: Session,
    *,
    incident: Incident,
    closed_at: datetime,
    user_id: str,
    text: str | None,
    now: datetime,
) -> Incident:
    """Close an incident, the optional text becoming its last timeline entry."""
    if not incident.is_open:
        raise IncidentError(f"{incident.reference} is already closed.")
    if text is not None and text.strip():
        text = check_text(text)
    start = impact_start(session, incident=incident)
    if closed_at < start:
        zone = ZoneInfo(incident.timezone)
        raise CloseBeforeStartError(
            f"{incident.reference} started at {_local(start, zone)}; it cannot close before "
            f"that ({_local(closed_at, zone)}). Nothing was recorded."
        )
    if text:
        add_entry(
            session,
            incident=incident,
            text=text,
            occurred_at=closed_at,
            author_id=user_id,
            now=now,
            kind=EntryKind.CLOSE,
        )
    incident.status = IncidentStatus.CLOSED.value
    incident.closed_at = closed_at
    incident.closed_by = user_id
    session.flush()
    return incident


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def impact_start(session: Session, *, incident: Incident) -> datetime:
    """When the impact began: the start, or an earlier back-dated entry."""
    earliest = session.scalar(
        select(func.min(TimelineEntry.occurred_at)).where(TimelineEntry.incident_id == incident.id)
    )
    if earliest is None:
        return incident.started_at
    return min(incident.started_at, earliest)


@dataclass(frozen=True)
class EntryRow:
    occurred_at: datetime
    text: str
    author_id: str
    kind: str


def timeline(session: Session, *, incident: Incident, last: int | None = None) -> list[EntryRow]:
    """The incident's entries in time order (ties in the order recorded); or only the `last` few."""
    columns = (
        TimelineEntry.occurred_at,
        TimelineEntry.text,
        TimelineEntry.author_id,
        TimelineEntry.kind,
    )
    query = select(*columns).where(TimelineEntry.incident_id == incident.id)
    if last is None:
        rows = list(session.execute(query.order_by(TimelineEntry.occurred_at, TimelineEntry.id)))
    else:
        newest_first = session.execute(
            query.order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc()).limit(last)
        )
        rows = list(reversed(list(newest_first)))
    return [
        EntryRow(occurred_at=row[0], text=row[1], author_id=row[2], kind=row[3]) for row in rows
    ]


def count_entries(session: Session, *, incident: Incident) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(TimelineEntry)
            .where(TimelineEntry.incident_id == incident.id)
        )
        or 0
    )


def actions(session: Session, *, incident: Incident) -> list[str]:
    """The incident's measures in the order they were added."""
    return list(
        session.scalars(
            select(Action.text).where(Action.incident_id == incident.id).order_by(Action.id)
        )
    )


def get_incident(session: Session, *, team_id: str | None, number: int) -> Incident:
    """An incident by number; `team_id` may be left out while the database holds one workspace."""
    query = select(Incident).where(Incident.number == number)
    if team_id is not None:
        query = query.where(Incident.team_id == team_id)
    found = list(session.scalars(query.limit(2)))
    if not found:
        where = f" in workspace {team_id}" if team_id else ""
        raise IncidentNotFoundError(f"There is no INC-{number}{where}.")
    if len(found) > 1:
        teams = sorted(session.scalars(select(Incident.team_id).where(Incident.number == number)))
        raise IncidentNotFoundError(
            f"INC-{number} exists in several workspaces ({', '.join(teams)}); name one with --team."
        )
    return found[0]


def record_postmortem(
    session: Session, *, incident: Incident, markdown: str, now: datetime
) -> Postmortem:
    """Keep the postmortem as it was rendered at close."""
    postmortem = Postmortem(incident_id=incident.id, rendered_at=now, markdown=markdown)
    session.add(postmortem)
    return postmortem
