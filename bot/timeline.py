"""An incident's timeline: short numbers, captured Slack messages, edits and deletions.

Entries are never removed from the database: a deletion marks the entry and records who
did it, and every edit keeps the previous time and text as an `EntryRevision`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import incidents
from bot.incidents import MAX_TEXT_LENGTH, IncidentError, check_text, next_entry_number
from bot.models import (
    REQUEST_ID_LENGTH,
    EntryKind,
    EntryRevision,
    HandledRequest,
    Incident,
    TimelineEntry,
)

# Ends the text of a captured message that was longer than the timeline keeps.
CUT_MARK = " … (cut: the whole message is in Slack)"
# What a removed pin is kept as, among the handled requests (a day): Slack does not promise
# to deliver events in order, and a pin delivered after its own removal must record nothing.
UNPINNED = "unpinned"


class EntryNotFoundError(IncidentError):
    pass


class PinRemovedError(IncidentError):
    pass


@dataclass(frozen=True)
class Attachment:
    """A file that came with a captured message."""

    name: str
    permalink: str | None


@dataclass(frozen=True)
class Message:
    """A Slack message as the timeline keeps it."""

    channel_id: str
    ts: str
    author_id: str
    author_name: str | None
    text: str
    occurred_at: datetime
    permalink: str | None = None
    files: Sequence[Attachment] = ()
    # Slack's `edited.ts`: which edit of the message this is (None: never edited).
    edited_ts: str | None = None


def encode_files(files: Sequence[Attachment]) -> str | None:
    if not files:
        return None
    return json.dumps([{"name": f.name, "permalink": f.permalink} for f in files])


def decode_files(stored: str | None) -> list[Attachment]:
    if not stored:
        return []
    return [Attachment(name=f["name"], permalink=f.get("permalink")) for f in json.loads(stored)]


def find_captured(
    session: Session, *, incident: Incident, channel_id: str, ts: str, for_update: bool = False
) -> TimelineEntry | None:
    query = select(TimelineEntry).where(
        TimelineEntry.incident_id == incident.id,
        TimelineEntry.source_channel == channel_id,
        TimelineEntry.source_ts == ts,
    )
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).first()


def capture_message(
    session: Session,
    *,
    incident: Incident,
    message: Message,
    captured_by: str,
    now: datetime,
    pinned_ts: str | None = None,
) -> tuple[TimelineEntry, bool]:
    """Add a Slack message to the timeline once; returns the entry and whether it is new.

    Pinning a message already on the timeline changes nothing; pinning one whose entry
    was removed brings that entry back. A pin reaction's capture (`pinned_ts`, when Slack
    says it was added) raises `PinRemovedError` if every pin was taken off the message after.
    """
    text = captured_text(message)
    # The incident was found before Slack was asked for the message, and a close may have
    # committed since: the entry would miss the postmortem that close publishes.
    if not incidents.is_open_locked(session, incident=incident):
        raise IncidentError(f"{incident.reference} is closed.")
    # Checked under the incident's lock, which the removal takes to record itself.
    if pinned_ts is not None and _unpinned_after(
        session, incident=incident, channel_id=message.channel_id, ts=message.ts, moment=pinned_ts
    ):
        raise PinRemovedError("every pin was taken off the message after this one was added.")
    existing = find_captured(
        session, incident=incident, channel_id=message.channel_id, ts=message.ts
    )
    if existing is not None:
        if existing.deleted_at is None:
            return existing, False
        incidents.record_revision(session, existing, action="restore", user_id=captured_by, now=now)
        existing.deleted_at = None
        existing.deleted_by = None
        return existing, True
    try:
        with session.begin_nested():
            entry = TimelineEntry(
                incident_id=incident.id,
                number=next_entry_number(session, incident=incident),
                occurred_at=message.occurred_at,
                recorded_at=now,
                author_id=message.author_id,
                author_name=message.author_name,
                kind=EntryKind.CAPTURE.value,
                text=text,
                source_channel=message.channel_id,
                source_ts=message.ts,
                source_edited_ts=message.edited_ts,
                permalink=message.permalink,
                files=encode_files(message.files),
                captured_by=captured_by,
            )
            session.add(entry)
            session.flush()
    except IntegrityError:
        # The same message captured at the same moment elsewhere (a Slack retry, two pins).
        existing = find_captured(
            session, incident=incident, channel_id=message.channel_id, ts=message.ts
        )
        if existing is None:
            raise
        return existing, False
    return entry, True


def captured_text(message: Message) -> str:
    """A captured message's text for the timeline. Slack allows 40,000 characters, the
    timeline 4,000: a longer message is cut, marked so, and its permalink has the rest."""
    shown = message.text if incidents.has_visible_text(message.text) else ""
    text = (shown or _files_only(message.files)).strip()
    if len(text) > MAX_TEXT_LENGTH:
        text = text[: MAX_TEXT_LENGTH - len(CUT_MARK)].rstrip() + CUT_MARK
    return check_text(text)


def _files_only(files: Sequence[Attachment]) -> str:
    return "Shared " + ", ".join(f.name for f in files) if files else ""


def uncapture_message(
    session: Session,
    *,
    incident: Incident,
    channel_id: str,
    ts: str,
    user_id: str,
    now: datetime,
    unpinned_ts: str | None = None,
) -> TimelineEntry | None:
    """Take a captured message off the timeline (the record of it stays). With `unpinned_ts`
    (when Slack says the last pin was taken off), a pin added before then and delivered
    later records nothing."""
    if not incidents.is_open_locked(session, incident=incident):
        return None  # closed since it was found: its postmortem is written
    if unpinned_ts is not None:
        _record_unpinned(
            session, incident=incident, channel_id=channel_id, ts=ts, moment=unpinned_ts, now=now
        )
    entry = find_captured(session, incident=incident, channel_id=channel_id, ts=ts)
    if entry is None or entry.deleted_at is not None:
        return None
    incidents.take_off_timeline(session, entry, user_id=user_id, now=now)
    return entry


def _unpinned_key(incident: Incident, channel_id: str, ts: str) -> str:
    # A channel shared with another workspace has the same id there, and its own events.
    return f"{UNPINNED} {incident.team_id} {channel_id} {ts} "


def _record_unpinned(
    session: Session, *, incident: Incident, channel_id: str, ts: str, moment: str, now: datetime
) -> None:
    key = _unpinned_key(incident, channel_id, ts) + moment
    if len(key) > REQUEST_ID_LENGTH or _slack_ts(moment) < (0, 0):
        return  # not a Slack ts: nothing to compare a pin's with
    if session.get(HandledRequest, key) is None:  # the same removal sent again
        session.add(
            HandledRequest(
                request_id=key, team_id=incident.team_id, command=UNPINNED, handled_at=now
            )
        )


def _unpinned_after(
    session: Session, *, incident: Incident, channel_id: str, ts: str, moment: str
) -> bool:
    """Whether every pin was taken off the message after `moment` (a Slack ts)."""
    prefix = _unpinned_key(incident, channel_id, ts)
    removals = session.scalars(
        select(HandledRequest.request_id).where(
            HandledRequest.team_id == incident.team_id,
            HandledRequest.command == UNPINNED,
            HandledRequest.request_id.startswith(prefix, autoescape=True),
        )
    )
    return any(_slack_ts(key.removeprefix(prefix)) > _slack_ts(moment) for key in removals)


def refresh_message(
    session: Session, *, incident: Incident, message: Message, now: datetime
) -> TimelineEntry | None:
    """Bring a captured entry up to date with its message after an edit in Slack.

    Slack does not promise to deliver events in order: an edit older than the one the
    entry holds changes nothing.
    """
    entry = find_captured(
        session, incident=incident, channel_id=message.channel_id, ts=message.ts, for_update=True
    )
    if entry is None:
        return None
    # A version with no `edited` (Slack's own change, an unfurl) is older than any edit.
    version, held = _slack_ts(message.edited_ts), _slack_ts(entry.source_edited_ts)
    if version < held:
        return entry
    # Slack announces changes that are no edit (language detection, an unfurl): the version
    # the entry was read from does not undo a correction made with `/incident edit` since.
    if version == held and _corrected_since_read(session, entry):
        return entry
    if message.edited_ts is not None:
        entry.source_edited_ts = message.edited_ts
    text = captured_text(message)
    files = encode_files(message.files)
    if text == entry.text and files == entry.files:
        return entry
    incidents.record_revision(
        session, entry, action="refresh", user_id=message.author_id, now=now, new_text=text
    )
    entry.text = text
    entry.files = files
    return entry


def _corrected_since_read(session: Session, entry: TimelineEntry) -> bool:
    """Whether `/incident edit` changed the entry's text after it was last read from Slack."""
    changes = session.scalars(
        select(EntryRevision)
        .where(EntryRevision.entry_id == entry.id, EntryRevision.action.in_(("edit", "refresh")))
        .order_by(EntryRevision.id.desc())
    )
    for change in changes:
        if change.action == "refresh":
            return False
        if change.new_text != change.old_text:  # not a new time alone
            return True
    return False


def _slack_ts(ts: str | None) -> tuple[int, int]:
    """A Slack timestamp ("1795154500.000100") in an order that compares; None first."""
    seconds, _, micros = (ts or "").partition(".")
    try:
        return (int(seconds), int(micros.ljust(6, "0")[:6]))
    except ValueError:
        return (-1, -1)


def entry_by_number(session: Session, *, incident: Incident, number: int) -> TimelineEntry:
    """A live entry by its short number, or `EntryNotFoundError`."""
    entry = session.scalars(
        select(TimelineEntry).where(
            TimelineEntry.incident_id == incident.id, TimelineEntry.number == number
        )
    ).first()
    if entry is None or entry.deleted_at is not None:
        raise EntryNotFoundError(
            f"{incident.reference} has no timeline entry #{number}; "
            "`/incident timeline` lists them with their numbers."
        )
    return entry


def edit_entry(
    session: Session,
    *,
    incident: Incident,
    number: int,
    text: str | None,
    occurred_at: datetime | None,
    user_id: str,
    now: datetime,
) -> TimelineEntry:
    """Change an entry's time, text or both; the previous values are kept."""
    entry = entry_by_number(session, incident=incident, number=number)
    new_text = check_text(text) if text else None
    if new_text is None and occurred_at is None:
        raise IncidentError("Give a new time (`<when> -`), a new text, or both.")
    if occurred_at is not None:
        incidents.check_typed_time(incident, occurred_at)
    moment = incidents.moment_of(incident, entry)
    if moment is not None:  # the incident's own mark: it follows its entry
        if new_text is not None and new_text != entry.text:
            raise IncidentError(
                f"Entry {number} marks when the impact was {moment.value}: only its time can "
                "change."
            )
        if occurred_at is not None:
            incidents.check_moment(session, incident=incident, moment=moment, at=occurred_at)
            incidents.set_moment(
                session, incident=incident, moment=moment, at=occurred_at, user_id=user_id, now=now
            )
    incidents.record_revision(
        session,
        entry,
        action="edit",
        user_id=user_id,
        now=now,
        new_text=new_text or entry.text,
        new_occurred_at=occurred_at or entry.occurred_at,
    )
    if new_text is not None:
        entry.text = new_text
    if occurred_at is not None:
        entry.occurred_at = occurred_at
    return entry


def delete_entry(
    session: Session, *, incident: Incident, number: int, user_id: str, now: datetime
) -> tuple[TimelineEntry, list[incidents.Undone]]:
    """Take an entry off the timeline; who did it and when is kept. A severity or role
    change goes with its entry: what that changed comes back with it."""
    entry = entry_by_number(session, incident=incident, number=number)
    moment = incidents.moment_of(incident, entry)
    severity, roles = incident.severity, incidents.current_roles(session, incident=incident)
    incidents.take_off_timeline(session, entry, user_id=user_id, now=now)
    if moment is not None:  # the mark goes with its entry
        incidents.set_moment(
            session, incident=incident, moment=moment, at=None, user_id=user_id, now=now
        )
    undone: list[incidents.Undone] = []
    if entry.kind == EntryKind.EVENT.value:
        undone = incidents.follow_timeline(
            session, incident=incident, severity=severity, roles=roles
        )
    return entry, undone


def revisions(session: Session, *, entry: TimelineEntry) -> list[EntryRevision]:
    return list(
        session.scalars(
            select(EntryRevision)
            .where(EntryRevision.entry_id == entry.id)
            .order_by(EntryRevision.id)
        )
    )
