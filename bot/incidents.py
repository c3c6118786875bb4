"""Use cases over the database: start, note, set, close and look up incidents.

Plain functions that take a session and never commit it: the caller owns the session and
commits once per command. Nothing here knows about Slack.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot import bidi
from bot.models import (
    Action,
    DeletedChannel,
    EntryKind,
    EntryRevision,
    Field,
    FieldChange,
    HandledRequest,
    Incident,
    IncidentStatus,
    Postmortem,
    Publication,
    RoleAssignment,
    TimelineEntry,
    Workspace,
)

MAX_TEXT_LENGTH = 4000


class IncidentError(bidi.QuotingError):
    """A request the incident cannot honour; the message is fit to show the person."""


class IncidentAlreadyOpenError(IncidentError):
    def __init__(self, incident: Incident) -> None:
        self.incident = incident
        super().__init__(f"{incident.reference} is already open in this channel: {incident.title}")


class NoOpenIncidentError(IncidentError):
    def __init__(self) -> None:
        super().__init__("There is no open incident in this channel.")


class RepeatedRequestError(IncidentError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"This {what} request was already received and answered; "
            "receiving it again changed nothing."
        )


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


# What shows nothing on screen: control and format characters (zero-width spaces and
# joiners, direction marks) and separators. `str.strip` removes only whitespace.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def has_visible_text(text: str) -> bool:
    """Whether `text` shows anything: one character that is not blank, control or format."""
    return any(unicodedata.category(char) not in _INVISIBLE_CATEGORIES for char in text)


def check_text(text: str, *, what: str = "text") -> str:
    """Return `text` stripped, or refuse it when it is empty or over the limit."""
    text = text.strip()
    if not has_visible_text(text):
        raise EmptyTextError(f"The {what} is empty.")
    if len(text) > MAX_TEXT_LENGTH:
        raise TextTooLongError(len(text))
    if "\x00" in text:
        raise IncidentError(f"The {what} contains a NUL character, which cannot be stored.")
    return text


def record_request(
    session: Session,
    *,
    request_id: str,
    team_id: str,
    command: str,
    now: datetime,
    what: str | None = None,
) -> None:
    """Remember a request as the first thing its transaction does; `RepeatedRequestError`
    if it was answered before (on PostgreSQL, once the first delivery's transaction ends).
    `what` names the request to the person (by default, the `/incident` command)."""
    session.add(
        HandledRequest(request_id=request_id, team_id=team_id, command=command, handled_at=now)
    )
    try:
        session.flush()
    except IntegrityError:
        session.rollback()  # the transaction held nothing else yet
        raise RepeatedRequestError(what or f"`/incident {command}`") from None


# Slack signs every request with the time it was sent and Bolt refuses one signed more than
# 5 minutes before it arrives, so a request handled longer ago than that cannot come again.
# A day leaves room for a server clock that is hours off.
REQUESTS_KEPT = timedelta(days=1)


def forget_handled_requests(session: Session, *, now: datetime, limit: int) -> int:
    """Forget up to `limit` of the requests handled more than `REQUESTS_KEPT` before `now`,
    oldest first; how many. Rows another transaction is forgetting are left to it."""
    oldest = (
        select(HandledRequest.request_id)
        .where(HandledRequest.handled_at < now - REQUESTS_KEPT)
        .order_by(HandledRequest.handled_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time
    )
    forgotten = session.scalars(
        delete(HandledRequest)
        .where(HandledRequest.request_id.in_(oldest.scalar_subquery()))
        .returning(HandledRequest.request_id)
        .execution_options(synchronize_session=False)
    )
    return len(forgotten.all())


def find_open_incident(
    session: Session, *, team_id: str, channel_id: str, for_update: bool = False
) -> Incident | None:
    """The open incident bound to a channel of a workspace, if any; `for_update` locks it
    until the transaction ends."""
    query = select(Incident).where(
        Incident.team_id == team_id,
        Incident.channel_id == channel_id,
        Incident.status == IncidentStatus.OPEN.value,
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


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
    """Open an incident in a channel; refuse if one is open there already, or if it would
    start more than `START_AGO_LIMIT` ago."""
    title = check_text(title, what="title")
    check_start_time(started_at, zone=ZoneInfo(timezone), now=now)
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
        number=next_entry_number(session, incident=incident),
        occurred_at=occurred_at,
        recorded_at=now,
        author_id=author_id,
        kind=kind.value,
        text=check_text(text),
    )
    session.add(entry)
    return entry


def next_entry_number(session: Session, *, incident: Incident) -> int:
    """The next short number on an incident's timeline (1, 2, 3, ... as recorded)."""
    number = session.execute(
        update(Incident)
        .where(Incident.id == incident.id)
        .values(last_entry_number=Incident.last_entry_number + 1)
        .returning(Incident.last_entry_number)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    # The database already holds the new value: show it on the object without marking it
    # changed, or the flush would write it a second time (BENCHMARKS.md, cause 2).
    set_committed_value(incident, "last_entry_number", number)
    return number


def add_event(
    session: Session, *, incident: Incident, text: str, user_id: str, at: datetime, now: datetime
) -> TimelineEntry:
    """Record a change the bot made (severity, roles, status, key moments) on the timeline."""
    return add_entry(
        session,
        incident=incident,
        text=text,
        occurred_at=at,
        author_id=user_id,
        now=now,
        kind=EntryKind.EVENT,
    )


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
    publish_to: PublishTo | None = None,
) -> Incident:
    """Close an incident, the optional text becoming its last timeline entry, and record its
    postmortem's publication as pending (`publish_to`, or the incident's channel), claimed
    for `PUBLICATION_LEASE` by whoever closes it (`publication(...).claim`)."""
    # Two closes at once (PostgreSQL): the second waits here for the first to commit, then
    # finds the incident closed, instead of closing it again and publishing a second time.
    if not is_open_locked(session, incident=incident):
        raise IncidentError(f"{incident.reference} is already closed.")
    if text is not None and text.strip():
        text = check_text(text)
    check_typed_time(incident, closed_at)
    start = impact_start(session, incident=incident)
    if _before(closed_at, start):
        zone = ZoneInfo(incident.timezone)
        raise CloseBeforeStartError(
            f"{incident.reference} started at {_local(start, zone)}; it cannot close before "
            f"that ({_local(closed_at, zone)}). Nothing was recorded."
        )
    # A reopen said the impact was not over then: the close that ends it comes after.
    reopened = latest_reopen(session, incident=incident)
    if reopened is not None and _before(closed_at, reopened):
        zone = ZoneInfo(incident.timezone)
        raise CloseBeforeStartError(
            f"{incident.reference} was reopened at {_local(reopened, zone)}; it cannot close "
            f"before that ({_local(closed_at, zone)}). Nothing was recorded."
        )
    # Resolved comes after mitigated. Not necessarily after detected: an impact may end by
    # itself before anyone notices it.
    mitigated = incident.mitigated_at
    if mitigated is not None and _before(closed_at, mitigated):
        zone = ZoneInfo(incident.timezone)
        raise CloseBeforeStartError(
            f"{incident.reference}'s impact was mitigated at {_local(mitigated, zone)}; "
            f"it cannot close before that ({_local(closed_at, zone)}). Nothing was recorded."
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
    _publication_pending(
        session,
        incident=incident,
        to=publish_to or PublishTo(channel_id=incident.channel_id),
        now=now,
    )
    session.flush()
    return incident


def latest_reopen(session: Session, *, incident: Incident) -> datetime | None:
    """When the incident was last reopened, if it ever was."""
    return session.scalar(
        select(func.max(FieldChange.changed_at)).where(
            FieldChange.incident_id == incident.id,
            FieldChange.field == "status",
            FieldChange.value == "reopened",
        )
    )


# A typed time further before the incident's start than this is more likely a slip (the
# year: 2016 for 2026) than meant, and it would stretch the impact window to match. A week,
# as for a time counted back (`ago`) or a date without a year typed ahead.
BEFORE_START_LIMIT = timedelta(days=7)


def check_typed_time(incident: Incident, at: datetime) -> None:
    """Refuse a time typed for an entry, a mark or a close more than `BEFORE_START_LIMIT`
    before the incident's start (`start` has its own limit: `check_start_time`)."""
    if at >= incident.started_at - BEFORE_START_LIMIT:
        return
    zone = ZoneInfo(incident.timezone)
    raise IncidentError(
        f"{incident.reference} began at {_local(incident.started_at, zone)}; {_local(at, zone)} "
        "is more than 7 days before that, which is more likely a slip (the year?) than meant. "
        "Give the time again; if it is right, write it into the text of an entry stamped now "
        "(`/incident note <text>`)."
    )


# An incident is often recorded after the fact (the weekend's, on Monday), seldom a month
# later: a start further back than this is more likely a slip (2016 for 2026, 10 for 11) than
# meant, and its impact window would stretch to match.
START_AGO_LIMIT = timedelta(days=30)


def check_start_time(started_at: datetime, *, zone: ZoneInfo, now: datetime) -> None:
    """Refuse a start more than `START_AGO_LIMIT` before `now`, showing the time as read."""
    if started_at >= now - START_AGO_LIMIT:
        return
    read = _local(started_at, zone)
    raise IncidentError(
        f"{read} is more than 30 days ago, which is more likely a slip (the year?) than "
        "meant. Give the time again; if it is right, start the incident now and write when "
        f"it began into its title (`/incident start <title> (began {read})`)."
    )


def is_open_locked(session: Session, *, incident: Incident) -> bool:
    """Whether the incident is open in the database (not as this session last saw it), its
    row locked until the transaction ends."""
    status = session.execute(
        select(Incident.status).where(Incident.id == incident.id).with_for_update()
    ).scalar_one()
    return bool(status == IncidentStatus.OPEN.value)


def whole_minute(moment: datetime) -> datetime:
    """`moment` without its seconds: times are typed, and postmortems count, in minutes."""
    return moment.replace(second=0, microsecond=0)


def _before(moment: datetime, limit: datetime) -> bool:
    """Whether `moment` is in an earlier minute than `limit`: people type times to the
    minute, and a moment stamped "now" has seconds (7:30 AM is not before 7:30:45)."""
    return whole_minute(moment) < whole_minute(limit)


def _local(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {zone_abbreviation(local)}"


def zone_abbreviation(moment: datetime) -> str:
    """`EAT`, `PDT`; `UTC+0545` for a zone that has no letter abbreviation."""
    name = moment.tzname() or "UTC"
    if name[0] in "+-":  # zones without a letter abbreviation report "+0530" or "-03"
        return f"UTC{name}"
    return name


def impact_start(session: Session, *, incident: Incident) -> datetime:
    """When the impact began: the start, or an earlier back-dated entry."""
    earliest = session.scalar(
        select(func.min(TimelineEntry.occurred_at)).where(
            TimelineEntry.incident_id == incident.id, TimelineEntry.deleted_at.is_(None)
        )
    )
    if earliest is None:
        return incident.started_at
    return min(incident.started_at, earliest)


@dataclass(frozen=True)
class EntryRow:
    """A live timeline entry, read without loading ORM objects (incidents can be long)."""

    occurred_at: datetime
    text: str
    author_id: str
    kind: str
    number: int = 0
    author_name: str | None = None
    permalink: str | None = None
    files: str | None = None  # JSON list of {"name", "permalink"}, see bot.timeline


def timeline(session: Session, *, incident: Incident, last: int | None = None) -> list[EntryRow]:
    """The incident's live entries in time order (ties as recorded); or only the `last` few."""
    columns = (
        TimelineEntry.occurred_at,
        TimelineEntry.text,
        TimelineEntry.author_id,
        TimelineEntry.kind,
        TimelineEntry.number,
        TimelineEntry.author_name,
        TimelineEntry.permalink,
        TimelineEntry.files,
    )
    query = select(*columns).where(
        TimelineEntry.incident_id == incident.id, TimelineEntry.deleted_at.is_(None)
    )
    if last is None:
        rows = list(session.execute(query.order_by(TimelineEntry.occurred_at, TimelineEntry.id)))
    else:
        newest_first = session.execute(
            query.order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc()).limit(last)
        )
        rows = list(reversed(list(newest_first)))
    return [EntryRow(*row) for row in rows]


def count_entries(session: Session, *, incident: Incident) -> int:
    """How many live entries the incident's timeline has."""
    return (
        session.scalar(
            select(func.count())
            .select_from(TimelineEntry)
            .where(TimelineEntry.incident_id == incident.id, TimelineEntry.deleted_at.is_(None))
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


def find_incident(session: Session, *, team_id: str, number: int) -> Incident | None:
    """A workspace's incident by number, open or closed, if there is one."""
    return session.scalars(
        select(Incident).where(Incident.team_id == team_id, Incident.number == number)
    ).first()


def get_incident(session: Session, *, team_id: str | None, number: int) -> Incident:
    """An incident by number; `team_id` may be left out while the database holds one workspace.

    With several, a number is refused without it even when one workspace alone has it: the
    person may be asking for another workspace's, which has none.
    """
    query = select(Incident).where(Incident.number == number)
    if team_id is not None:
        query = query.where(Incident.team_id == team_id)
    found = list(session.scalars(query.limit(2)))
    if not found:
        where = f" in workspace {team_id}" if team_id else ""
        raise IncidentNotFoundError(f"There is no INC-{number}{where}.")
    if team_id is None and session.scalar(select(func.count(Incident.team_id.distinct()))) != 1:
        teams = sorted(session.scalars(select(Incident.team_id).where(Incident.number == number)))
        if len(teams) == 1:
            raise IncidentNotFoundError(
                f"The database holds several workspaces and INC-{number} is in {teams[0]}'s: "
                f"if that is the one, name it with --team {teams[0]}."
            )
        raise IncidentNotFoundError(
            f"INC-{number} exists in several workspaces ({', '.join(teams)}); name one with --team."
        )
    return found[0]


def record_postmortem(
    session: Session, *, publication: Publication, markdown: str, now: datetime
) -> Postmortem:
    """Keep the postmortem as this attempt at publishing it rendered it: in the row an
    earlier attempt after the same close stored, replaced, or in a new one."""
    kept = (
        session.get(Postmortem, publication.postmortem_id)
        if publication.postmortem_id is not None
        else None
    )
    if kept is None:
        kept = Postmortem(incident_id=publication.incident_id, rendered_at=now, markdown=markdown)
        session.add(kept)
        session.flush()
        publication.postmortem_id = kept.id
    else:
        kept.rendered_at, kept.markdown = now, markdown
    return kept


# --- publication of the postmortem ----------------------------------------------------------

# How long whoever publishes a postmortem holds it before another worker may take it over
# (renewed before each call to Slack, see `hold_publication`).
PUBLICATION_LEASE = timedelta(minutes=5)
# Attempts at publishing a postmortem before it is given up (the close's follow-up is the first).
PUBLICATION_ATTEMPTS = 8
# The wait after the first failed attempt; it doubles after each one, up to the longest.
PUBLICATION_RETRY_FIRST = timedelta(minutes=1)
PUBLICATION_RETRY_LONGEST = timedelta(hours=1)


@dataclass(frozen=True)
class PublishTo:
    """Where a closed incident's postmortem goes: the channel the close was typed in, and
    the installation (an org-wide one's organization) whose token posts it."""

    channel_id: str
    enterprise_id: str | None = None
    is_enterprise_install: bool = False


def _publication_pending(
    session: Session, *, incident: Incident, to: PublishTo, now: datetime
) -> Publication:
    found = session.get(Publication, incident.id)
    if found is None:
        found = Publication(incident_id=incident.id)
        session.add(found)
    found.pending = True
    found.channel_id = to.channel_id
    found.enterprise_id = to.enterprise_id
    found.is_enterprise_install = to.is_enterprise_install
    found.claim = uuid.uuid4().hex
    found.claimed_until = now + PUBLICATION_LEASE
    found.attempts = 1
    found.summary_posted = False
    found.postmortem_id = None  # this close's postmortem is kept in a row of its own
    return found


def publication(session: Session, *, incident_id: int) -> Publication | None:
    """The incident's publication (None: closed before publications were recorded)."""
    return session.get(Publication, incident_id)


def publication_retry_after(attempts: int) -> timedelta:
    """How long after the `attempts`-th failed attempt the next may be made."""
    doublings = min(max(0, attempts - 1), 16)  # an hour is reached long before
    return min(PUBLICATION_RETRY_FIRST * (1 << doublings), PUBLICATION_RETRY_LONGEST)


def hold_publication(
    session: Session, *, incident_id: int, claim: str, now: datetime
) -> Publication | None:
    """The publication, its claim renewed for `PUBLICATION_LEASE`, if `claim` still holds it
    and it is pending; None if it is no longer this claim's to publish (reopened, taken over,
    done).

    The incident's row is taken first (shared: FOR KEY SHARE, which the postmortem's foreign
    key takes anyway), then the publication's: the order in which a close or a reopen takes
    them. In the other order a reopen during a publication deadlocked (PostgreSQL)."""
    session.execute(
        select(Incident.id).where(Incident.id == incident_id).with_for_update(key_share=True)
    )
    found = session.scalars(
        select(Publication)
        .where(Publication.incident_id == incident_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if found is None or not found.pending or found.claim != claim:
        return None
    found.claimed_until = now + PUBLICATION_LEASE
    return found


def finish_publication(
    session: Session, *, incident_id: int, claim: str, failed: bool, now: datetime
) -> Publication | None:
    """End `claim`'s attempt: published (or refused for good), or `failed` with what a later
    attempt could get past, to be tried again after `publication_retry_after`, or given up
    (no longer pending) once it has had `PUBLICATION_ATTEMPTS`. None if the claim no longer
    held it."""
    found = hold_publication(session, incident_id=incident_id, claim=claim, now=now)
    if found is None:
        return None
    found.claim = None
    if not failed or found.attempts >= PUBLICATION_ATTEMPTS:
        found.pending = False
        found.claimed_until = None
    else:
        found.claimed_until = now + publication_retry_after(found.attempts)
    return found


@dataclass(frozen=True)
class ClaimedPublication:
    """A pending publication taken by `claim_publication`: to publish, or `given_up`."""

    publication: Publication
    incident: Incident
    given_up: bool


def claim_publication(session: Session, *, now: datetime) -> ClaimedPublication | None:
    """Take the pending publication that has waited longest and that no one holds (its claim
    expired, or its wait after a failure is over), claimed for `PUBLICATION_LEASE`; one that
    has had its attempts (its last claimant died with it) is given up instead. None when
    there is none. Rows another transaction is taking are left to it (PostgreSQL; SQLite
    has one writer at a time)."""
    found = session.scalars(
        select(Publication)
        .where(
            Publication.pending.is_(True),
            (Publication.claimed_until.is_(None)) | (Publication.claimed_until <= now),
        )
        .order_by(Publication.claimed_until, Publication.incident_id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).first()
    if found is None:
        return None
    incident = session.get_one(Incident, found.incident_id)
    if found.attempts >= PUBLICATION_ATTEMPTS:
        found.pending, found.claim, found.claimed_until = False, None, None
        return ClaimedPublication(publication=found, incident=incident, given_up=True)
    found.attempts += 1
    found.claim = uuid.uuid4().hex
    found.claimed_until = now + PUBLICATION_LEASE
    return ClaimedPublication(publication=found, incident=incident, given_up=False)


# --- severity, roles, key moments, status ----------------------------------------------------


class Moment(StrEnum):
    """Key moments of an incident; `resolved` is set by closing it."""

    DETECTED = "detected"
    MITIGATED = "mitigated"


def set_severity(
    session: Session,
    *,
    incident: Incident,
    severity: str,
    allowed: Sequence[str],
    user_id: str,
    now: datetime,
) -> str:
    """Set the severity (one of `allowed`); the change goes on the timeline.

    Case, spaces and dashes do not count (`sev 1`, `SEV-1`), and a number alone is the one
    level that ends in it (`1` is SEV1, or P1), as people say them aloud.
    """
    typed = _severity_key(severity)
    matches = [level for level in allowed if _severity_key(level) == typed]
    if not matches and severity.strip().isdigit():
        matches = [level for level in allowed if re.fullmatch(rf"\D*{typed}", _severity_key(level))]
    if len(matches) != 1:
        raise IncidentError(
            f"{bidi.quoted(severity.strip())} is not a severity here; "
            f"use one of {', '.join(allowed)}."
        )
    level, previous = matches[0], incident.severity
    if level == previous:
        raise IncidentError(f"{incident.reference} is already {level}.")
    change = (
        f"Severity changed from {previous} to {level}" if previous else f"Severity set to {level}"
    )
    entry = add_event(session, incident=incident, text=change, user_id=user_id, at=now, now=now)
    session.flush()  # the entry's id, which the change keeps
    session.add(
        FieldChange(
            incident_id=incident.id,
            field="severity",
            value=level,
            changed_by=user_id,
            changed_at=now,
            entry_id=entry.id,
        )
    )
    incident.severity = level
    return level


def current_severity(session: Session, *, incident: Incident) -> str | None:
    """The severity the timeline gives: the latest change whose entry is still on it."""
    return session.scalar(
        select(FieldChange.value)
        .outerjoin(TimelineEntry, TimelineEntry.id == FieldChange.entry_id)
        .where(
            FieldChange.incident_id == incident.id,
            FieldChange.field == "severity",
            TimelineEntry.deleted_at.is_(None),  # also true of a change with no entry
        )
        .order_by(FieldChange.id.desc())
        .limit(1)
    )


def _severity_key(level: str) -> str:
    return re.sub(r"[\s_-]+", "", level).lower()


def assign_role(
    session: Session,
    *,
    incident: Incident,
    role: str,
    user_id: str,
    user_name: str,
    assigned_by: str,
    now: datetime,
) -> RoleAssignment:
    """Give a role (commander, ...) to a person; the change goes on the timeline."""
    holder = current_roles(session, incident=incident).get(role)
    if holder is not None and holder.user_id == user_id:
        raise IncidentError(
            f"{bidi.marked(holder.user_name)} is already the {role} of {incident.reference}."
        )
    entry = add_event(
        session,
        incident=incident,
        text=f"{bidi.contained(user_name)} is now the {role}",
        user_id=assigned_by,
        at=now,
        now=now,
    )
    session.flush()  # the entry's id, which the assignment keeps
    assignment = RoleAssignment(
        incident_id=incident.id,
        role=role,
        user_id=user_id,
        user_name=user_name,
        assigned_by=assigned_by,
        assigned_at=now,
        entry_id=entry.id,
    )
    session.add(assignment)
    return assignment


def take_role_away(
    session: Session, *, incident: Incident, role: str, taken_by: str, now: datetime
) -> Holder:
    """Leave a role with nobody; the change goes on the timeline. Who held it."""
    holder = current_roles(session, incident=incident).get(role)
    if holder is None:
        raise IncidentError(
            f"Nobody is the {role} of {incident.reference}; there is no one to take the role from."
        )
    entry = add_event(
        session,
        incident=incident,
        text=f"{bidi.contained(holder.user_name)} is no longer the {role}",
        user_id=taken_by,
        at=now,
        now=now,
    )
    session.flush()  # the entry's id, which the change keeps
    session.add(
        RoleAssignment(
            incident_id=incident.id,
            role=role,
            user_id=None,
            user_name=None,
            assigned_by=taken_by,
            assigned_at=now,
            entry_id=entry.id,
        )
    )
    return holder


@dataclass(frozen=True)
class Holder:
    """The person who holds a role."""

    user_id: str
    user_name: str


def current_roles(session: Session, *, incident: Incident) -> dict[str, Holder]:
    """Who holds each role now: the latest assignment of each whose entry is still on the
    timeline, unless that took the role away."""
    latest: dict[str, RoleAssignment] = {}
    for assignment in session.scalars(
        select(RoleAssignment)
        .outerjoin(TimelineEntry, TimelineEntry.id == RoleAssignment.entry_id)
        .where(
            RoleAssignment.incident_id == incident.id,
            TimelineEntry.deleted_at.is_(None),  # also true of one with no entry
        )
        .order_by(RoleAssignment.id)
    ):
        latest[assignment.role] = assignment
    return {
        role: Holder(user_id=held.user_id, user_name=held.user_name or f"@{held.user_id}")
        for role, held in latest.items()
        if held.user_id is not None
    }


@dataclass(frozen=True)
class Undone:
    """What deleting an entry changed besides the timeline: the severity, or who holds a role
    (None when nobody does now)."""

    severity: bool = False
    role: str | None = None
    holder: Holder | None = None


def follow_timeline(
    session: Session,
    *,
    incident: Incident,
    severity: str | None,
    roles: dict[str, Holder],
) -> list[Undone]:
    """Bring the severity and the role holders in line with the timeline that is left, after
    an entry was deleted; `severity` and `roles` are what they were before. What changed."""
    session.flush()
    changed: list[Undone] = []
    incident.severity = current_severity(session, incident=incident)
    if incident.severity != severity:
        changed.append(Undone(severity=True))
    holders = current_roles(session, incident=incident)
    for role in sorted(set(roles) | set(holders)):
        before, after = roles.get(role), holders.get(role)
        if (before and before.user_id) != (after and after.user_id):
            changed.append(Undone(role=role, holder=after))
    return changed


def mark_moment(
    session: Session,
    *,
    incident: Incident,
    moment: Moment,
    at: datetime,
    user_id: str,
    now: datetime,
) -> TimelineEntry | None:
    """Record when the impact was detected or mitigated; the moment goes on the timeline.

    Marking it again moves it: the earlier mark leaves the timeline, and is returned.
    """
    check_moment(session, incident=incident, moment=moment, at=at)
    earlier = _moment_entry(session, incident=incident, moment=moment)
    if earlier is not None:
        take_off_timeline(session, earlier, user_id=user_id, now=now)
    set_moment(session, incident=incident, moment=moment, at=at, user_id=user_id, now=now)
    label = MOMENT_LABELS[moment]
    add_event(session, incident=incident, text=label, user_id=user_id, at=at, now=now)
    return earlier


MOMENT_LABELS = {Moment.DETECTED: "Impact detected", Moment.MITIGATED: "Impact mitigated"}


def check_moment(session: Session, *, incident: Incident, moment: Moment, at: datetime) -> None:
    """Refuse a moment before the impact began, or a detection after the mitigation."""
    check_typed_time(incident, at)
    start = impact_start(session, incident=incident)
    zone = ZoneInfo(incident.timezone)
    if _before(at, start):
        raise IncidentError(
            f"{incident.reference}'s impact began at {_local(start, zone)}; it cannot have been "
            f"{moment.value} before that ({_local(at, zone)})."
        )
    detected, mitigated = incident.detected_at, incident.mitigated_at
    if moment is Moment.MITIGATED and detected is not None and _before(at, detected):
        raise IncidentError(
            f"{incident.reference}'s impact was detected at {_local(detected, zone)}; it cannot "
            f"have been mitigated before that ({_local(at, zone)})."
        )
    if moment is Moment.DETECTED and mitigated is not None and _before(mitigated, at):
        raise IncidentError(
            f"{incident.reference}'s impact was mitigated at {_local(mitigated, zone)}; it "
            f"cannot have been detected after that ({_local(at, zone)})."
        )


def set_moment(
    session: Session,
    *,
    incident: Incident,
    moment: Moment,
    at: datetime | None,
    user_id: str,
    now: datetime,
) -> None:
    """Set (or, with None, clear) the incident's moment, keeping the earlier values."""
    setattr(incident, f"{moment.value}_at", at)
    session.add(
        FieldChange(
            incident_id=incident.id,
            field=f"{moment.value}_at",
            value=at.isoformat() if at is not None else "",
            changed_by=user_id,
            changed_at=now,
        )
    )


def moment_of(incident: Incident, entry: TimelineEntry) -> Moment | None:
    """The key moment `entry` marks on the incident, if it is the mark the incident holds."""
    if entry.kind != EntryKind.EVENT.value or entry.deleted_at is not None:
        return None
    for moment, label in MOMENT_LABELS.items():
        if entry.text == label and getattr(incident, f"{moment.value}_at") == entry.occurred_at:
            return moment
    return None


def _moment_entry(session: Session, *, incident: Incident, moment: Moment) -> TimelineEntry | None:
    marked = getattr(incident, f"{moment.value}_at")
    if marked is None:
        return None
    return session.scalars(
        select(TimelineEntry).where(
            TimelineEntry.incident_id == incident.id,
            TimelineEntry.kind == EntryKind.EVENT.value,
            TimelineEntry.text == MOMENT_LABELS[moment],
            TimelineEntry.occurred_at == marked,
            TimelineEntry.deleted_at.is_(None),
        )
    ).first()


def reopen_incident(
    session: Session, *, team_id: str, channel_id: str, reason: str, user_id: str, now: datetime
) -> Incident:
    """Reopen the channel's latest incident (the one the replies name); the reason goes on the
    timeline. Latest by number: a close time can be typed, and back-dated."""
    reason = check_text(reason, what="reason")
    if find_open_incident(session, team_id=team_id, channel_id=channel_id) is not None:
        raise IncidentError(
            "An incident is open in this channel already; there is nothing to reopen."
        )
    incident = latest_incident(session, team_id=team_id, channel_id=channel_id)
    if incident is None:
        raise NoOpenIncidentError()
    # Two reopens at once (PostgreSQL): the second waits for the first, then finds it open.
    if is_open_locked(session, incident=incident):
        raise IncidentError(f"{incident.reference} is open already; there is nothing to reopen.")
    # The close is undone, not forgotten: the timeline keeps when it was (a close without a
    # text left no entry, and closed_at is cleared), so the postmortem shows both closes.
    closed_at, closed_by = incident.closed_at, incident.closed_by
    try:
        with session.begin_nested():
            incident.status = IncidentStatus.OPEN.value
            incident.closed_at = None
            incident.closed_by = None
            # A postmortem not yet published is not published now: the next close's is.
            pending = session.get(Publication, incident.id)
            if pending is not None and pending.pending:
                pending.pending, pending.claim = False, None
            session.flush()
    except IntegrityError:
        raise IncidentError("Another incident opened in this channel meanwhile.") from None
    session.add(
        FieldChange(
            incident_id=incident.id,
            field="status",
            value="reopened",
            changed_by=user_id,
            changed_at=now,
        )
    )
    if closed_at is not None:
        add_event(
            session,
            incident=incident,
            text="Closed",
            user_id=closed_by or user_id,
            at=closed_at,
            now=now,
        )
    add_event(
        session, incident=incident, text=f"Reopened: {reason}", user_id=user_id, at=now, now=now
    )
    return incident


def open_incidents(session: Session, *, team_id: str) -> list[Incident]:
    """The workspace's open incidents, newest first."""
    return list(
        session.scalars(
            select(Incident)
            .where(Incident.team_id == team_id, Incident.status == IncidentStatus.OPEN.value)
            .order_by(Incident.number.desc())
        )
    )


def move_channel(
    session: Session, *, team_id: str, old_channel_id: str, new_channel_id: str
) -> int:
    """Move a workspace's incidents, and the messages captured on their timelines, from a
    channel's old id to its new one (Slack changes a private channel's id for good when it
    is shared with Slack Connect); how many incidents moved."""
    moved = session.execute(
        update(Incident)
        .where(Incident.team_id == team_id, Incident.channel_id == old_channel_id)
        .values(channel_id=new_channel_id)
        .returning(Incident.id)
        .execution_options(synchronize_session=False)
    )
    count = len(moved.all())
    session.execute(
        update(TimelineEntry)
        .where(
            TimelineEntry.incident_id.in_(select(Incident.id).where(Incident.team_id == team_id)),
            TimelineEntry.source_channel == old_channel_id,
        )
        .values(source_channel=new_channel_id)
        .execution_options(synchronize_session=False)
    )
    return count


def mark_channel_deleted(session: Session, *, team_id: str, channel_id: str, private: bool) -> int:
    """Note on a workspace's incidents in `channel_id`, open and closed, that Slack deleted
    the channel, and whether it was private; how many incidents it concerned. A private
    channel stays private: a later word that it was public changes nothing."""
    kind = DeletedChannel.PRIVATE if private else DeletedChannel.PUBLIC
    query = update(Incident).where(Incident.team_id == team_id, Incident.channel_id == channel_id)
    if not private:
        query = query.where(Incident.channel_deleted.is_(None))
    marked = session.execute(
        query.values(channel_deleted=kind.value)
        .returning(Incident.id)
        .execution_options(synchronize_session=False)
    )
    return len(marked.all())


def latest_incident(session: Session, *, team_id: str, channel_id: str) -> Incident | None:
    """The channel's most recent incident, open or closed."""
    return session.scalars(
        select(Incident)
        .where(Incident.team_id == team_id, Incident.channel_id == channel_id)
        .order_by(Incident.number.desc())
        .limit(1)
    ).first()


def record_revision(
    session: Session,
    entry: TimelineEntry,
    *,
    action: str,
    user_id: str,
    now: datetime,
    new_text: str | None = None,
    new_occurred_at: datetime | None = None,
) -> None:
    """Keep what `entry` was before an edit, deletion, restoration or refresh."""
    session.add(
        EntryRevision(
            entry_id=entry.id,
            action=action,
            old_text=entry.text,
            old_occurred_at=entry.occurred_at,
            new_text=new_text,
            new_occurred_at=new_occurred_at,
            changed_by=user_id,
            changed_at=now,
        )
    )


def take_off_timeline(
    session: Session, entry: TimelineEntry, *, user_id: str, now: datetime
) -> None:
    """Delete `entry` softly: what it was, who took it off and when are kept."""
    record_revision(session, entry, action="delete", user_id=user_id, now=now)
    entry.deleted_at = now
    entry.deleted_by = user_id
