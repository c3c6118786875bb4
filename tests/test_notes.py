"""Group commit of notes (bot/notes.py) on SQLite and PostgreSQL: every note stored once,
numbered without gaps, acknowledged only once committed, and failing only on its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, Engine, event, select, text

from bot import db, incidents
from bot.db import make_session_factory
from bot.models import Incident, TimelineEntry
from bot.notes import NewNote, NoteAdded, NoteWriteError, NoteWriter
from tests.conftest import ALICE, BOB, NOW, TEAM, Bot, Database

LONG = 30.0  # seconds: a deadline no test should reach


def _start(database: Database, channel: str) -> Incident:
    with make_session_factory(database.engine)() as session:
        incident = incidents.start_incident(
            session,
            team_id=TEAM,
            channel_id=channel,
            user_id=ALICE,
            title=f"trouble in {channel}",
            started_at=NOW,
            timezone="Africa/Nairobi",
            now=NOW,
        )
        session.commit()
        return incident


def _note(
    channel: str,
    text: str,
    *,
    at: datetime = NOW,
    team: str = TEAM,
    request: str | None = None,
) -> NewNote:
    return NewNote(
        team_id=team,
        channel_id=channel,
        author_id=BOB,
        text=text,
        occurred_at=at,
        recorded_at=NOW,
        request_id=request,
    )


def _stored(database: Database, incident_id: int) -> list[tuple[int, str]]:
    with make_session_factory(database.engine)() as session:
        rows = session.execute(
            select(TimelineEntry.number, TimelineEntry.text)
            .where(TimelineEntry.incident_id == incident_id)
            .order_by(TimelineEntry.number)
        )
        return [(row.number, row.text) for row in rows]


def _commits(database: Database) -> list[int]:
    """A counter of the engine's commits, appended to as they happen."""
    seen: list[int] = []

    @event.listens_for(database.engine, "commit")
    def _on_commit(_conn: Any) -> None:
        seen.append(1)

    return seen


@contextmanager
def _database_held(database: Database, incident_id: int) -> Iterator[Connection]:
    """A transaction that holds the incident's row (PostgreSQL) or the write lock (SQLite)."""
    with database.engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(text("UPDATE incidents SET title = title WHERE id = :id"), {"id": incident_id})
        try:
            yield conn
        finally:
            transaction.rollback()


def _first_write(
    pool: ThreadPoolExecutor,
    database: Database,
    writer: NoteWriter,
    channel: str,
    *,
    timeout: float = LONG,
) -> Future[NoteAdded | None]:
    """Submit a note and return once its write has begun (the writer took it and connected);
    with the database held, that write then waits, and later notes queue behind it."""
    connected = threading.Event()

    def on_connect(_conn: Any) -> None:
        connected.set()

    event.listen(database.engine, "engine_connect", on_connect)
    try:
        first = pool.submit(writer.add, _note(channel, "first"), timeout=timeout)
        assert connected.wait(LONG), "the first write did not begin"
    finally:
        event.remove(database.engine, "engine_connect", on_connect)
    return first


def _another_process_engine(database: Database) -> Engine:
    """An engine of its own on the same database, as a second worker process has."""
    options = database.env.get("PGOPTIONS")
    return db.make_engine(
        database.url, **({"connect_args": {"options": options}} if options else {})
    )


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    give_up = time.monotonic() + LONG
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting: {what}"
        time.sleep(0.01)


def test_notes_from_many_threads_are_all_stored_once_and_numbered_without_gaps(
    database: Database,
) -> None:
    channels = ["C1", "C2", "C3"]
    opened = {channel: _start(database, channel) for channel in channels}
    writer = NoteWriter(database.engine)
    barrier = threading.Barrier(8)

    def note_many(thread: int) -> list[tuple[str, str, NoteAdded | None]]:
        barrier.wait()
        done = []
        for n in range(15):
            channel = channels[(thread + n) % len(channels)]
            text = f"thread {thread} note {n}"
            done.append((channel, text, writer.add(_note(channel, text), timeout=LONG)))
        return done

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [item for part in pool.map(note_many, range(8)) for item in part]

    assert len(results) == 120
    for channel, incident in opened.items():
        mine = [(added, text) for c, text, added in results if c == channel]
        assert all(added is not None and added.incident_id == incident.id for added, _ in mine)
        stored = _stored(database, incident.id)
        # 1, 2, 3, ...: no gap, no number twice, and each answer names its own entry.
        assert [number for number, _ in stored] == list(range(1, len(mine) + 1))
        assert dict(stored) == {added.number: text for added, text in mine if added}
        assert {added.reference for added, _ in mine if added} == {incident.reference}


def test_notes_that_arrive_during_a_write_are_committed_together(database: Database) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    commits = _commits(database)
    with ThreadPoolExecutor(max_workers=6) as pool, _database_held(database, incident.id):
        first = _first_write(pool, database, writer, "C1")
        rest = [pool.submit(writer.add, _note("C1", f"then {n}"), timeout=LONG) for n in range(5)]
        _wait_until(lambda: writer.waiting() == 5, "five notes queued")
        assert not any(future.done() for future in [first, *rest])  # nothing acknowledged yet
        commits.clear()
    added = [future.result(timeout=LONG) for future in [first, *rest]]

    assert len(commits) == 2  # the first note's transaction, then one for the five others
    assert [a.number for a in added if a] == [1, 2, 3, 4, 5, 6]
    assert _stored(database, incident.id) == [
        (1, "first"),
        *[(n + 2, f"then {n}") for n in range(5)],
    ]


def _queued_behind_a_held_write(
    database: Database, incident: Incident, writer: NoteWriter, notes: list[NewNote]
) -> list[Future[NoteAdded | None]]:
    """Submit a first note, hold the database while `notes` queue behind it, then release."""
    pool = ThreadPoolExecutor(max_workers=len(notes) + 1)
    with _database_held(database, incident.id):
        first = _first_write(pool, database, writer, incident.channel_id)
        futures = [pool.submit(writer.add, note, timeout=LONG) for note in notes]
        _wait_until(lambda: writer.waiting() == len(notes), "the notes queued")
    pool.shutdown(wait=True)
    return [first, *futures]


def test_a_note_that_fails_does_not_fail_the_others_written_with_it(database: Database) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    naive = datetime(2026, 11, 20, 6, 5)  # no time zone: the database layer refuses it
    futures = _queued_behind_a_held_write(
        database,
        incident,
        writer,
        [_note("C1", "before"), _note("C1", "bad", at=naive), _note("C1", "after")],
    )

    first, before, bad, after = futures
    with pytest.raises(NoteWriteError) as refused:
        bad.result()
    assert refused.value.maybe_stored is False
    assert [f.result().number for f in (first, before, after)] == [1, 2, 3]  # type: ignore[union-attr]
    assert _stored(database, incident.id) == [(1, "first"), (2, "before"), (3, "after")]


def test_a_note_for_a_channel_without_an_open_incident_stores_nothing(
    database: Database,
) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    futures = _queued_behind_a_held_write(
        database,
        incident,
        writer,
        [
            _note("C9", "nowhere"),  # no incident in C9
            _note("C1", "another workspace", team="T0OTHER001"),  # C1 of another team
            _note("C1", "here"),
        ],
    )

    assert futures[1].result() is None
    assert futures[2].result() is None
    assert futures[3].result().number == 2  # type: ignore[union-attr]
    assert _stored(database, incident.id) == [(1, "first"), (2, "here")]


# --- the same request twice: a replay, a proxy's retry ----------------------------------------


def test_a_request_recorded_before_is_not_written_again_and_the_rest_of_its_batch_is(
    database: Database,
) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    assert writer.add(_note("C1", "once", request="R1"), timeout=LONG).number == 1  # type: ignore[union-attr]
    futures = _queued_behind_a_held_write(
        database,
        incident,
        writer,
        [
            _note("C1", "before", request="R2"),
            _note("C1", "once", request="R1"),  # the same request again
            _note("C1", "after", request="R3"),
        ],
    )

    first, before, again, after = (future.result(timeout=LONG) for future in futures)
    assert again is not None and again.repeated and again.number == 1
    assert again.reference == incident.reference
    assert [(a.number, a.repeated) for a in (first, before, after) if a] == [
        (2, False),
        (3, False),
        (4, False),
    ]
    assert _stored(database, incident.id) == [
        (1, "once"),
        (2, "first"),
        (3, "before"),
        (4, "after"),
    ]


def test_the_same_request_twice_in_one_batch_is_written_once(database: Database) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    futures = _queued_behind_a_held_write(
        database,
        incident,
        writer,
        [_note("C1", "twice", request="R1"), _note("C1", "twice", request="R1")],
    )

    _first, one, other = (future.result(timeout=LONG) for future in futures)
    assert one is not None and other is not None
    assert (one.number, one.repeated, other.number, other.repeated) == (2, False, 2, True)
    assert _stored(database, incident.id) == [(1, "first"), (2, "twice")]


def test_notes_without_a_request_id_are_each_written(database: Database) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    for _ in range(2):
        writer.add(_note("C1", "same words"), timeout=LONG)
    assert _stored(database, incident.id) == [(1, "same words"), (2, "same words")]


def test_the_same_request_in_two_processes_at_once_is_written_once(database: Database) -> None:
    """A proxy that retries to another worker: two engines, two writers, the same requests."""
    incident = _start(database, "C1")
    other = _another_process_engine(database)
    writers = [NoteWriter(database.engine), NoteWriter(other)]
    barrier = threading.Barrier(8)

    def note(thread: int) -> list[tuple[str, NoteAdded | None]]:
        barrier.wait()
        writer = writers[thread % 2]
        return [
            (text, writer.add(_note("C1", text, request=f"R{n}"), timeout=LONG))
            for n, text in ((n, f"request {n}") for n in range(10))
        ]

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = [each for part in pool.map(note, range(8)) for each in part]
    finally:
        other.dispose()

    stored = _stored(database, incident.id)
    assert [number for number, _ in stored] == list(range(1, 11))  # no number used up
    number_of = {text: number for number, text in stored}
    assert set(number_of) == {f"request {n}" for n in range(10)}
    assert sorted(text for text, added in results if added and not added.repeated) == sorted(
        number_of
    )  # each written by one of the eight, and the others told where it went
    assert all(added is not None and added.number == number_of[text] for text, added in results)


def test_a_note_whose_deadline_passes_while_queued_is_refused_and_not_stored(
    database: Database,
) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    with ThreadPoolExecutor(max_workers=2) as pool, _database_held(database, incident.id):
        first = _first_write(pool, database, writer, "C1")
        late = pool.submit(writer.add, _note("C1", "late"), timeout=0.3)
        with pytest.raises(NoteWriteError) as refused:
            late.result(timeout=LONG)
        assert refused.value.maybe_stored is False
        assert writer.waiting() == 0
    assert first.result(timeout=LONG).number == 1  # type: ignore[union-attr]
    assert _stored(database, incident.id) == [(1, "first")]


def test_a_write_the_database_holds_past_the_deadline_is_cut_and_not_stored(
    database: Database,
) -> None:
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    # Another thread writes: a deadline cuts the links of the thread that writes.
    with ThreadPoolExecutor(max_workers=1) as pool, _database_held(database, incident.id):
        cut = pool.submit(writer.add, _note("C1", "too late"), timeout=0.5)
        with pytest.raises(NoteWriteError) as refused:
            cut.result(timeout=LONG)
        assert refused.value.maybe_stored is False
    assert _stored(database, incident.id) == []
    # The writer is not stuck: the next note goes through, and takes number 1.
    assert writer.add(_note("C1", "next"), timeout=LONG).number == 1  # type: ignore[union-attr]
    assert _stored(database, incident.id) == [(1, "next")]


def test_a_batch_the_database_holds_past_the_deadline_is_refused_not_written_later(
    database: Database,
) -> None:
    """Several notes written together, cut at their deadline: each is not then written again
    alone with no deadline at all, to be acknowledged after Slack gave up on it (or never)."""
    incident = _start(database, "C1")
    writer = NoteWriter(database.engine)
    with ThreadPoolExecutor(max_workers=3) as pool:
        with _database_held(database, incident.id):
            first = _first_write(pool, database, writer, "C1", timeout=0.5)
            batch = [pool.submit(writer.add, _note("C1", n), timeout=2.0) for n in ("b", "c")]
            _wait_until(lambda: writer.waiting() == 2 or first.done(), "the notes queued")
            for future in (first, *batch):
                with pytest.raises(NoteWriteError) as refused:
                    future.result(timeout=LONG / 3)
                assert refused.value.maybe_stored is False
    assert _stored(database, incident.id) == []


def test_a_deadline_that_passes_before_the_database_is_reached_still_holds(
    database: Database,
) -> None:
    """A short deadline (a note retried alone with little time left) can pass before its
    thread has taken a connection, when there is no link yet to cut: what the thread then
    asks of the database must fail at once, not wait on a lock held elsewhere."""
    incident = _start(database, "C1")
    engine = database.engine
    update = text("UPDATE incidents SET title = 'x' WHERE id = :id")
    held, go_on = threading.Event(), threading.Event()

    def hold() -> None:  # in a thread of its own, which the deadline does not concern
        with _database_held(database, incident.id):
            held.set()
            go_on.wait(LONG)

    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(hold)
        assert held.wait(LONG)
        try:
            with db.deadline(engine, 0.0):
                _wait_until(lambda: threading.get_ident() in db._late.get(engine, {}), "passed")
                with pytest.raises(db.DeadlinePassedError), engine.connect() as connection:
                    connection.execute(update, {"id": incident.id})
        finally:
            go_on.set()
        holder.result(LONG)
    with engine.connect() as connection:  # this thread's next block is not late
        assert connection.scalar(text("SELECT title FROM incidents")) == "trouble in C1"


def test_notes_typed_at_once_through_the_app_are_all_acknowledged_and_stored(bot: Bot) -> None:
    assert "opened" in bot.command("start Checkout is down").text
    barrier = threading.Barrier(8)

    def type_notes(person: int) -> list[str]:
        barrier.wait()
        return [bot.command(f"note person {person} says {n}").text for n in range(10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = [text for part in pool.map(type_notes, range(8)) for text in part]

    assert len(answers) == 80
    assert all(answer.startswith("Added to *INC-1* at 9:00 AM EAT: person ") for answer in answers)
    with bot.services.sessions() as session:
        entries = session.execute(select(TimelineEntry.number, TimelineEntry.text)).all()
    assert sorted(number for number, _ in entries) == list(range(1, 81))
    assert {text for _, text in entries} == {
        f"person {p} says {n}" for p in range(8) for n in range(10)
    }


def test_a_note_at_an_earlier_time_is_stamped_then(bot: Bot) -> None:
    bot.command("start Checkout is down")
    answer = bot.command("note 8:40 AM - first alert fired").text
    assert answer == "Added to *INC-1* at 8:40 AM EAT: first alert fired"
    with bot.services.sessions() as session:
        entry = session.scalars(select(TimelineEntry)).one()
    assert entry.occurred_at == NOW - timedelta(minutes=20)
    assert entry.recorded_at == NOW


def test_two_processes_writers_share_the_numbering_without_conflict(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers (two engines, two writers) noting into the same channels at once."""
    channels = ["C1", "C2", "C3", "C4"]
    opened = {channel: _start(database, channel) for channel in channels}
    other = _another_process_engine(database)
    writers = [NoteWriter(database.engine), NoteWriter(other)]
    barrier = threading.Barrier(12)

    def note_many(thread: int) -> list[tuple[str, NoteAdded | None]]:
        writer = writers[thread % 2]
        order = channels if thread % 2 else channels[::-1]  # the two lock in other orders
        barrier.wait()
        done = []
        for n in range(20):
            channel = order[(thread + n) % len(order)]
            done.append((channel, writer.add(_note(channel, f"{thread}/{n}"), timeout=LONG)))
        return done

    try:
        with caplog.at_level(logging.WARNING, logger="bot.notes"):
            with ThreadPoolExecutor(max_workers=12) as pool:
                results = [item for part in pool.map(note_many, range(12)) for item in part]
    finally:
        other.dispose()

    assert not caplog.records  # no batch failed (a deadlock would have been logged here)
    for channel, incident in opened.items():
        mine = [added for c, added in results if c == channel]
        assert all(added is not None and added.incident_id == incident.id for added in mine)
        stored = [number for number, _ in _stored(database, incident.id)]
        assert stored == list(range(1, len(mine) + 1))
        assert sorted(added.number for added in mine if added) == stored


def test_a_note_is_stored_exactly_as_the_orm_stores_an_entry(database: Database) -> None:
    """The writer runs its statements on the driver's cursor: its rows must not differ from
    the ORM's (timestamps in UTC, stored as SQLAlchemy stores them on each database)."""
    incident = _start(database, "C1")
    in_lagos = datetime(2026, 11, 20, 7, 5, 30, tzinfo=ZoneInfo("Africa/Lagos"))
    written = NoteWriter(database.engine).add(
        _note("C1", "via the writer", at=in_lagos), timeout=LONG
    )
    assert written is not None
    with make_session_factory(database.engine)() as session:
        found = session.get(Incident, incident.id)
        assert found is not None
        incidents.add_entry(
            session,
            incident=found,
            text="via the ORM",
            occurred_at=in_lagos,
            author_id=BOB,
            now=NOW,
        )
        session.commit()
    columns = "occurred_at, recorded_at, author_id, kind, deleted_at, source_ts, number"
    with database.engine.connect() as conn:  # the columns as stored, not as the ORM reads them
        rows = conn.execute(
            text(f"SELECT {columns} FROM timeline_entries WHERE incident_id = :id ORDER BY number"),
            {"id": incident.id},
        ).all()
    assert [row[:-1] for row in rows[:1]] == [row[:-1] for row in rows[1:]]
    assert [row[-1] for row in rows] == [1, 2]
    with make_session_factory(database.engine)() as session:
        stored = session.scalars(select(TimelineEntry).order_by(TimelineEntry.number)).all()
    assert [entry.occurred_at for entry in stored] == [in_lagos, in_lagos]
    assert stored[0].occurred_at.utcoffset() == timedelta(0)


def test_a_large_batch_over_several_channels_is_stored_whole(database: Database) -> None:
    """Over a hundred notes from three channels, queued behind one write: all committed
    together, each channel numbered without gaps."""
    channels = ("C1", "C2", "C3")
    opened = {channel: _start(database, channel) for channel in channels}
    count = 111
    writer = NoteWriter(database.engine)
    commits = _commits(database)
    queued = [_note(channels[n % 3], f"note {n}") for n in range(count)]
    futures = _queued_behind_a_held_write(database, opened["C1"], writer, queued)
    added = [future.result(timeout=LONG) for future in futures]

    assert len(commits) == 2  # the first note's transaction, then one for all the others
    assert all(each is not None for each in added)
    for index, channel in enumerate(channels):
        texts = [f"note {n}" for n in range(count) if n % 3 == index]
        stored, first = _stored(database, opened[channel].id), 1
        if channel == "C1":  # behind the note whose write held the others back
            assert stored[0] == (1, "first")
            stored, first = stored[1:], 2
        assert [number for number, _ in stored] == list(range(first, first + len(texts)))
        assert sorted(text for _, text in stored) == sorted(texts)
