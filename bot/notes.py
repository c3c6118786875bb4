"""Plain notes, committed in groups: one transaction holds every note waiting to be written.

During a big incident many people note at once, and each note must be committed before it
is acknowledged. A commit costs more than the note itself, so the first thread to find no
write in progress writes every note waiting (its own included) in one transaction, while
the others wait for that commit: group commit. No note is acknowledged before the
transaction holding it has committed, each note gets its own outcome, and one that fails
alone is written again alone, so it cannot take the others down with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Update,
    bindparam,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from bot import db
from bot.models import EntryKind, Incident, IncidentStatus, TimelineEntry, incident_reference

log = logging.getLogger(__name__)


def _take_numbers(*where: ColumnElement[bool]) -> Update:
    """Take `taken` entry numbers on the open incidents `where` selects, returning them."""
    return (
        update(Incident)
        .where(*where)
        .values(last_entry_number=Incident.last_entry_number + bindparam("taken"))
        .returning(
            Incident.team_id,
            Incident.channel_id,
            Incident.id,
            Incident.number,
            Incident.timezone,
            Incident.last_entry_number,
        )
    )


# One channel: its open incident (the usual batch, during an incident).
_TAKE_NUMBERS_IN_CHANNEL = _take_numbers(
    Incident.team_id == bindparam("in_team"),
    Incident.channel_id == bindparam("in_channel"),
    Incident.status == IncidentStatus.OPEN.value,
)
# The open incidents of the `channels`, each a (team_id, channel_id) pair.
_OPEN_IN_CHANNELS = (
    tuple_(Incident.team_id, Incident.channel_id).in_(bindparam("channels", expanding=True)),
    Incident.status == IncidentStatus.OPEN.value,
)
# Several channels at once (one UPDATE for all the channels with the same count).
_TAKE_NUMBERS_IN_CHANNELS = _take_numbers(*_OPEN_IN_CHANNELS)
# Before a batch of several channels changes their incidents, it locks them all, in the
# order of their ids: two processes' batches then never hold one row each while waiting
# for the other's (PostgreSQL would end one of them as a deadlock).
_LOCK_OPEN_IN_CHANNELS = (
    select(Incident.id).where(*_OPEN_IN_CHANNELS).order_by(Incident.id).with_for_update()
)
_ADD_ENTRIES = insert(TimelineEntry)


@dataclass(frozen=True)
class NewNote:
    """A note to put on the open incident of a channel; `text` is already checked."""

    team_id: str
    channel_id: str
    author_id: str
    text: str
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class NoteAdded:
    """A committed note: the incident it went to and its number on the timeline."""

    incident_id: int
    incident_number: int
    timezone: str
    number: int

    @property
    def reference(self) -> str:
        return incident_reference(self.incident_number)


class NoteWriteError(Exception):
    """The note could not be written; `maybe_stored` when the commit failed on its way back."""

    def __init__(self, message: str, *, maybe_stored: bool = False) -> None:
        super().__init__(message)
        self.maybe_stored = maybe_stored


class _Waiting:
    """One note in the queue, and what became of it."""

    __slots__ = ("added", "deadline", "done", "error", "note", "taken")

    def __init__(self, note: NewNote, deadline: float) -> None:
        self.note = note
        self.deadline = deadline
        self.taken = False  # a writer has it: it is in a transaction now
        self.done = False
        self.added: NoteAdded | None = None
        self.error: NoteWriteError | None = None

    def outcome(self) -> NoteAdded | None:
        if self.error is not None:
            raise NoteWriteError(str(self.error), maybe_stored=self.error.maybe_stored)
        return self.added


class NoteWriter:
    """Writes notes for the threads of one process; see the module's docstring."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._changed = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing = False

    def waiting(self) -> int:
        """How many notes wait for a write in progress to finish before theirs can begin."""
        with self._changed:
            return len(self._queue)

    def add(self, note: NewNote, *, timeout: float) -> NoteAdded | None:
        """Commit `note`; None when its channel has no open incident (nothing is stored).

        Raises NoteWriteError when it was not written within `timeout` seconds or the
        database failed.
        """
        waiting = _Waiting(note, time.monotonic() + timeout)
        with self._changed:
            self._queue.append(waiting)
            while not waiting.done and self._writing:
                remaining = waiting.deadline - time.monotonic()
                if waiting.taken:  # the writer that has it is bound by the same deadline
                    self._changed.wait()
                elif remaining > 0:
                    self._changed.wait(remaining)
                else:
                    self._queue.remove(waiting)
                    raise NoteWriteError("no turn to write before the deadline")
            if waiting.done:
                return waiting.outcome()
            self._writing = True
            batch, self._queue = self._queue, []
            for each in batch:
                each.taken = True
        try:
            self._write(batch)
        finally:
            with self._changed:
                for each in batch:
                    if not each.done:  # only if _write itself broke
                        each.error = NoteWriteError("the note writer failed", maybe_stored=True)
                        each.done = True
                self._writing = False
                self._changed.notify_all()
        return waiting.outcome()

    def _write(self, batch: Sequence[_Waiting]) -> None:
        now = time.monotonic()
        late = [each for each in batch if each.deadline <= now]
        for each in late:
            _finish(each, error=NoteWriteError("no turn to write before the deadline"))
        batch = [each for each in batch if each.deadline > now]
        if not batch:
            return
        with db.deadline(self._engine, min(each.deadline for each in batch) - now):
            if not self._write_together(batch):
                # One bad note must not fail the rest: each is tried again on its own.
                for each in batch:
                    self._write_together([each])

    def _write_together(self, batch: Sequence[_Waiting]) -> bool:
        """One transaction for the whole batch; True when every note in it is finished. A
        batch of several that fails before its commit finishes none (each may be retried)."""
        committing = False
        try:
            with self._engine.connect() as connection:
                with connection.begin():
                    added = _insert(connection, batch)
                    committing = True
            for each, result in zip(batch, added, strict=True):
                _finish(each, added=result)
            return True
        except SQLAlchemyError as error:
            log.warning(
                "could not write %d note(s): %s",
                len(batch),
                type(error).__name__,
                exc_info=True,
            )
            if committing or len(batch) == 1:
                message = "the commit failed" if committing else "the database refused the note"
                for each in batch:
                    _finish(each, error=NoteWriteError(message, maybe_stored=committing))
                return True
            return False


def _finish(
    waiting: _Waiting, *, added: NoteAdded | None = None, error: NoteWriteError | None = None
) -> None:
    waiting.added, waiting.error, waiting.done = added, error, True


def _insert(connection: Connection, batch: Sequence[_Waiting]) -> list[NoteAdded | None]:
    """Number and insert the batch's notes; per note, where it went (None: no incident)."""
    by_channel: dict[tuple[str, str], list[int]] = {}
    for index, each in enumerate(batch):
        by_channel.setdefault((each.note.team_id, each.note.channel_id), []).append(index)
    # One UPDATE for all the channels that have the same number of notes in the batch: in a
    # busy channel that is one channel, and across channels it is one note each.
    by_count: dict[int, list[tuple[str, str]]] = {}
    for channel, indexes in by_channel.items():
        by_count.setdefault(len(indexes), []).append(channel)
    added: list[NoteAdded | None] = [None] * len(batch)
    rows: list[dict[str, Any]] = []
    # SQLite has no row locks: its writers hold the whole database, one at a time.
    if len(by_channel) > 1 and connection.dialect.name != "sqlite":
        connection.execute(_LOCK_OPEN_IN_CHANNELS, {"channels": sorted(by_channel)})
    for taken, channels in sorted(by_count.items()):
        if len(channels) == 1:
            ((team_id, channel_id),) = channels
            values = {"in_team": team_id, "in_channel": channel_id, "taken": taken}
            found = connection.execute(_TAKE_NUMBERS_IN_CHANNEL, values)
        else:
            values = {"channels": channels, "taken": taken}
            found = connection.execute(_TAKE_NUMBERS_IN_CHANNELS, values)
        for incident in found:
            first = incident.last_entry_number - taken + 1
            for number, index in enumerate(
                by_channel[incident.team_id, incident.channel_id], first
            ):
                note = batch[index].note
                added[index] = NoteAdded(
                    incident_id=incident.id,
                    incident_number=incident.number,
                    timezone=incident.timezone,
                    number=number,
                )
                rows.append(
                    {
                        "incident_id": incident.id,
                        "number": number,
                        "occurred_at": note.occurred_at,
                        "recorded_at": note.recorded_at,
                        "author_id": note.author_id,
                        "kind": EntryKind.NOTE.value,
                        "text": note.text,
                    }
                )
    if rows:
        connection.execute(_ADD_ENTRIES, rows if len(rows) > 1 else rows[0])
    return added
