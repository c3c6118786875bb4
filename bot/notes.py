"""Plain notes, committed in groups: one transaction holds every note waiting to be written.

During a big incident many people note at once, and each note must be committed before it
is acknowledged. A commit costs more than the note itself, so the first thread to find no
write in progress writes every note waiting (its own included) in one transaction, while
the others wait for that commit: group commit. No note is acknowledged before the
transaction holding it has committed, each note gets its own outcome, and one that fails
alone is written again alone, so it cannot take the others down with it.

A note carries the id of the request that asked for it (Slack's trigger_id), stored on its
entry under a unique index: the same request delivered twice (a replay, a proxy's retry)
is told where the first one went, and its number is not used up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ClauseElement,
    Connection,
    Dialect,
    Engine,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.sql.compiler import SQLCompiler

from bot import db
from bot.models import EntryKind, Incident, IncidentStatus, TimelineEntry, incident_reference

log = logging.getLogger(__name__)


# Taking `taken` entry numbers on a channel's open incident finds the incident too.
_TAKE_NUMBERS = (
    update(Incident)
    .where(
        Incident.team_id == bindparam("in_team"),
        Incident.channel_id == bindparam("in_channel"),
        Incident.status == IncidentStatus.OPEN.value,
    )
    .values(last_entry_number=Incident.last_entry_number + bindparam("taken"))
    .returning(Incident.id, Incident.number, Incident.timezone, Incident.last_entry_number)
)
_ENTRY_COLUMNS = (
    "incident_id",
    "number",
    "occurred_at",
    "recorded_at",
    "author_id",
    "kind",
    "text",
    "request_id",
)
_ADD_ENTRY = insert(TimelineEntry).values({name: bindparam(name) for name in _ENTRY_COLUMNS})


class _DriverStatement:
    """A statement compiled once for one dialect, run on the driver's own cursor.

    SQLAlchemy's execution path (cache lookup, execution context, result wrapping) costs
    several times the driver's own work for these small statements, and a note pays it on
    every write (BENCHMARKS.md, "The writer on the driver's cursor"). The transaction stays
    SQLAlchemy's: its events, the SQLite write lock and the deadline still apply.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self._compiled = compiled
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def params(self, values: dict[str, Any]) -> Any:
        """`values`, with the statement's own literals, in the form the driver takes."""
        every = self._compiled.construct_params(values) or {}
        return tuple(every[name] for name in self._order) if self._order is not None else every


@dataclass(frozen=True)
class NewNote:
    """A note to put on the open incident of a channel; `text` is already checked."""

    team_id: str
    channel_id: str
    author_id: str
    text: str
    occurred_at: datetime
    recorded_at: datetime
    request_id: str | None = None  # the same id twice is one note (None: always a new one)


@dataclass(frozen=True)
class NoteAdded:
    """A committed note: the incident it went to and its number on the timeline.

    `repeated`: its request had been recorded already, as this entry; nothing was added.
    """

    incident_id: int
    incident_number: int
    timezone: str
    number: int
    repeated: bool = False

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
        self._statements = _Statements(engine.dialect)
        # What the driver raises: the statements run on its cursor, outside SQLAlchemy's
        # wrapping of errors (which still covers the connection, BEGIN and COMMIT).
        self._errors: tuple[type[Exception], ...] = (
            SQLAlchemyError,
            engine.dialect.loaded_dbapi.Error,
        )
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
        batch, repeats = _firsts_and_repeats(batch)
        if batch:
            self._write_in_time(batch, now)
        for each, first in repeats:
            _finish_as_repeat(each, first)

    def _write_in_time(self, batch: Sequence[_Waiting], now: float) -> None:
        with db.deadline(self._engine, min(each.deadline for each in batch) - now):
            written = self._write_together(batch)
        if not written:
            # One bad note must not fail the rest: each is tried again on its own, within its
            # own deadline. The batch's may have cut it; a note past it is refused, not written
            # to be acknowledged after Slack has given up on it.
            for each in batch:
                if each.done:  # found recorded already
                    continue
                remaining = each.deadline - time.monotonic()
                if remaining <= 0:
                    _finish(each, error=NoteWriteError("no turn to write before the deadline"))
                    continue
                with db.deadline(self._engine, remaining):
                    self._write_together([each])

    def _write_together(self, batch: Sequence[_Waiting]) -> bool:
        """One transaction for the whole batch; True when every note in it is finished. A
        batch of several that fails before its commit finishes none (each may be retried)."""
        committing = False
        try:
            with self._engine.connect() as connection:
                with connection.begin():
                    added = self._statements.insert(connection, batch)
                    committing = True
            for each, result in zip(batch, added, strict=True):
                _finish(each, added=result)
            return True
        except self._errors as error:
            if not committing and self._integrity_errors(error) and self._found_recorded(batch):
                # Those notes' requests came before: the others are written without them.
                rest = [each for each in batch if not each.done]
                return not rest or self._write_together(rest)
            log.warning(
                "could not write %d note(s): %s",
                len(batch),
                type(error).__name__,
                exc_info=True,
            )
            if committing or len(batch) == 1:
                message = "the commit failed" if committing else "the database refused the note"
                maybe_stored = committing and db.failed_commit_may_be_stored(self._engine)
                for each in batch:
                    _finish(each, error=NoteWriteError(message, maybe_stored=maybe_stored))
                return True
            return False

    def _integrity_errors(self, error: Exception) -> bool:
        return isinstance(error, IntegrityError | self._engine.dialect.loaded_dbapi.IntegrityError)

    def _found_recorded(self, batch: Sequence[_Waiting]) -> bool:
        """Finish the notes of `batch` whose request has an entry already; True if any had.

        Only after a constraint refused the batch: the hot path asks nothing beforehand.
        """
        ids = {each.note.request_id for each in batch if each.note.request_id is not None}
        if not ids:
            return False
        try:
            with self._engine.connect() as connection:
                found = {
                    row.request_id: row
                    for row in connection.execute(
                        select(
                            TimelineEntry.request_id,
                            TimelineEntry.number,
                            Incident.id,
                            Incident.number.label("incident_number"),
                            Incident.team_id,
                            Incident.timezone,
                        )
                        .join(Incident, Incident.id == TimelineEntry.incident_id)
                        .where(TimelineEntry.request_id.in_(ids))
                    )
                }
        except self._errors:
            log.warning("could not look for notes recorded already", exc_info=True)
            return False
        any_found = False
        for each in batch:
            row = found.get(each.note.request_id)
            if row is None or row.team_id != each.note.team_id:
                continue
            added = NoteAdded(
                incident_id=row.id,
                incident_number=row.incident_number,
                timezone=row.timezone,
                number=row.number,
                repeated=True,
            )
            _finish(each, added=added)
            any_found = True
        return any_found


def _firsts_and_repeats(
    batch: Sequence[_Waiting],
) -> tuple[list[_Waiting], list[tuple[_Waiting, _Waiting]]]:
    """The batch without the notes whose request is in it already (the same request
    delivered twice at once), and those, each with the first of its request."""
    firsts: dict[str, _Waiting] = {}
    kept: list[_Waiting] = []
    repeats: list[tuple[_Waiting, _Waiting]] = []
    for each in batch:
        request = each.note.request_id
        if request is not None and request in firsts:
            repeats.append((each, firsts[request]))
            continue
        if request is not None:
            firsts[request] = each
        kept.append(each)
    return kept, repeats


def _finish_as_repeat(waiting: _Waiting, first: _Waiting) -> None:
    """The outcome of the first note of the same request, as a repeat of it."""
    if first.error is not None:
        _finish(waiting, error=first.error)
    elif first.added is not None:
        _finish(waiting, added=replace(first.added, repeated=True))
    else:
        _finish(waiting)


def _finish(
    waiting: _Waiting, *, added: NoteAdded | None = None, error: NoteWriteError | None = None
) -> None:
    waiting.added, waiting.error, waiting.done = added, error, True


def _psycopg_pipelines() -> bool:
    """Whether psycopg can pipeline here (its libpq must be version 14 or later)."""
    from psycopg import Pipeline

    return bool(Pipeline.is_supported())


class _Statements:
    """The writer's statements for one database, and how they number and insert a batch."""

    def __init__(self, dialect: Dialect) -> None:
        self._take_numbers = _DriverStatement(_TAKE_NUMBERS, dialect)
        self._add_entry = _DriverStatement(_ADD_ENTRY, dialect)
        self._pipelines = dialect.driver == "psycopg" and _psycopg_pipelines()
        # How the driver is given a timestamp (UTC, and as text on SQLite): the column's own
        # conversion, as SQLAlchemy would apply it.
        column_type = TimelineEntry.__table__.c.occurred_at.type
        convert = column_type.dialect_impl(dialect).bind_processor(dialect)
        self._convert: Callable[[datetime], Any] = convert or (lambda value: value)

    def _stamp(self, value: datetime) -> Any:
        try:
            return self._convert(value)
        except (TypeError, ValueError) as error:  # a naive datetime, say: as SQLAlchemy says it
            raise StatementError(str(error), self._add_entry.sql, None, error) from error

    def _take_numbers_in(
        self, connection: Connection, channels: Sequence[tuple[tuple[str, str], list[int]]]
    ) -> list[Any]:
        """Per channel, in order, its open incident's row with the numbers taken, or None.

        With psycopg, several channels' UPDATEs go in one pipeline: one round trip for them
        all, still run one after the other in this order.
        """
        statement = self._take_numbers
        arguments = [
            statement.params({"in_team": team, "in_channel": channel, "taken": len(indexes)})
            for (team, channel), indexes in channels
        ]
        if not self._pipelines or len(channels) == 1:
            cursor = connection.connection.cursor()
            try:
                found = []
                for each in arguments:
                    cursor.execute(statement.sql, each)
                    found.append(cursor.fetchone())
                return found
            finally:
                cursor.close()
        driver: Any = connection.connection.driver_connection  # a psycopg.Connection
        cursors = [connection.connection.cursor() for _ in arguments]
        try:
            with driver.pipeline():
                for cursor, each in zip(cursors, arguments, strict=True):
                    cursor.execute(statement.sql, each)
            return [cursor.fetchone() for cursor in cursors]
        finally:
            for cursor in cursors:
                cursor.close()

    def insert(self, connection: Connection, batch: Sequence[_Waiting]) -> list[NoteAdded | None]:
        """Number and insert the batch's notes; per note, where it went (None: no incident).

        One UPDATE per channel takes that channel's numbers and finds its open incident. The
        channels go in a fixed order, so two processes' batches lock their incidents in the
        same order and cannot deadlock (PostgreSQL would end one of them). Then one INSERT
        (one executemany) writes every entry.
        """
        by_channel: dict[tuple[str, str], list[int]] = {}
        for index, each in enumerate(batch):
            by_channel.setdefault((each.note.team_id, each.note.channel_id), []).append(index)
        added: list[NoteAdded | None] = [None] * len(batch)
        rows: list[Any] = []
        channels = sorted(by_channel.items())
        taken = self._take_numbers_in(connection, channels)
        for (_channel, indexes), found in zip(channels, taken, strict=True):
            if found is None:  # no open incident there: those notes store nothing
                continue
            incident_id, incident_number, timezone, last_number = found
            first = last_number - len(indexes) + 1
            for number, index in enumerate(indexes, first):
                note = batch[index].note
                added[index] = NoteAdded(
                    incident_id=incident_id,
                    incident_number=incident_number,
                    timezone=timezone,
                    number=number,
                )
                entry = {
                    "incident_id": incident_id,
                    "number": number,
                    "occurred_at": self._stamp(note.occurred_at),
                    "recorded_at": self._stamp(note.recorded_at),
                    "author_id": note.author_id,
                    "kind": EntryKind.NOTE.value,
                    "text": note.text,
                    "request_id": note.request_id,
                }
                rows.append(self._add_entry.params(entry))
        if rows:
            cursor = connection.connection.cursor()
            try:
                if len(rows) == 1:
                    cursor.execute(self._add_entry.sql, rows[0])
                else:
                    cursor.executemany(self._add_entry.sql, rows)
            finally:
                cursor.close()
        return added
