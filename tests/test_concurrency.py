"""Races the database must settle: two `start`s for one channel, and numbering across channels."""

from __future__ import annotations

import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from bot import incidents
from bot.db import make_session_factory, read_only
from bot.models import Incident, Postmortem, TimelineEntry
from bot.services import FOLLOWUP_THREADS, build_services
from tests.conftest import CHANNEL, NOW, TEAM, Bot, Database, at_once, make_settings


def _start(database: Database, channel: str, title: str) -> Incident:
    with make_session_factory(database.engine)() as session:
        incident = incidents.start_incident(
            session,
            team_id=TEAM,
            channel_id=channel,
            user_id="U1",
            title=title,
            started_at=NOW,
            timezone="UTC",
            now=NOW,
        )
        session.commit()
        return incident


def test_a_start_racing_an_uncommitted_start_is_told_which_one_is_open(database: Database) -> None:
    sessions = make_session_factory(database.engine)
    first = sessions()
    opened = incidents.start_incident(
        first,
        team_id=TEAM,
        channel_id="C1",
        user_id="U1",
        title="first",
        started_at=NOW,
        timezone="UTC",
        now=NOW,
    )  # flushed, not committed: the second start cannot see it yet
    outcome: dict[str, object] = {}
    started = threading.Event()

    def second_start() -> None:
        started.set()
        try:
            _start(database, "C1", "second")
            outcome["result"] = "opened"
        except incidents.IncidentAlreadyOpenError as error:
            outcome["result"] = error.incident.number
        except Exception as error:  # reported below rather than lost in the thread
            outcome["result"] = error

    thread = threading.Thread(target=second_start)
    thread.start()
    started.wait()
    thread.join(timeout=1.0)  # it is waiting on the first transaction's lock
    first.commit()
    first.close()
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert outcome["result"] == opened.number
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 1


def test_starts_in_many_channels_at_once_get_distinct_numbers(database: Database) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        opened = list(pool.map(lambda n: _start(database, f"C{n}", f"t{n}").number, range(24)))
    assert sorted(opened) == list(range(1, 25))


@pytest.mark.parametrize("attempts", [8])
def test_many_starts_through_the_app_for_one_channel_open_exactly_one(
    bot: Bot, attempts: int
) -> None:
    texts = at_once(attempts, lambda n: bot.command(f"start attempt {n}").text)

    assert sum("opened" in text for text in texts) == 1
    assert sum("already open" in text and "INC-1" in text for text in texts) == attempts - 1
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 1


def test_a_sqlite_file_another_process_holds_too_long_is_answered_and_nothing_stored(
    bot: Bot,
) -> None:
    """Another process (here a plain sqlite3 connection) keeps SQLite's write lock past the
    busy timeout: `start` is answered "could not record" instead of failing, stores nothing,
    and the next command goes through once the lock is free."""
    if bot.services.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's file lock")
    other = sqlite3.connect(str(bot.services.engine.url.database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        answer = bot.command("start Checkout is down")
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert answer.status == 200
    assert answer.text.startswith(":warning: I could not record that")
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 0
    assert "opened" in bot.command("start Checkout is down").text


@pytest.mark.parametrize("attempts", [8])
def test_closes_racing_for_one_incident_close_it_once_and_publish_once(
    bot: Bot, attempts: int
) -> None:
    bot.command("start Checkout is down")
    texts = at_once(attempts, lambda n: bot.command(f"close fixed by {n}").text)
    bot.wait()

    closed_here = [text for text in texts if "Posting the summary" in text]
    told_closed = [text for text in texts if re.fullmatch(r"INC-1 is (already )?closed\.", text)]
    assert (len(closed_here), len(told_closed)) == (1, attempts - 1), texts
    assert len(bot.fake.calls_to("chat.postMessage")) == 1
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Postmortem)) == 1
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 1


@pytest.mark.parametrize("attempts", [8])
def test_reopens_racing_for_one_incident_reopen_it_once(bot: Bot, attempts: int) -> None:
    bot.command("start Checkout is down")
    bot.command("close")
    bot.wait()
    texts = at_once(attempts, lambda n: bot.command(f"reopen errors are back, says {n}").text)

    assert sum(text == "INC-1 reopened" for text in texts) == 1, texts
    with bot.services.sessions() as session:
        kept = list(session.scalars(select(TimelineEntry.text).order_by(TimelineEntry.id)))
    # The close it undid, and one reopen.
    assert len(kept) == 2 and kept[0] == "Closed" and kept[1].startswith("Reopened: "), kept


@pytest.mark.parametrize("typed", ["impact checkout returned 503", "severity SEV1"])
def test_a_command_racing_an_uncommitted_close_is_told_it_is_closed(bot: Bot, typed: str) -> None:
    """The close holds the incident until it commits; a command that found the incident
    open meanwhile must not then be recorded on the closed incident, after the postmortem
    was written, and be answered as set."""
    bot.command("start Checkout is down")
    closing = bot.services.sessions()
    incident = incidents.require_open_incident(closing, team_id=TEAM, channel_id=CHANNEL)
    incidents.close_incident(
        closing, incident=incident, closed_at=NOW, user_id="U1", text=None, now=NOW
    )  # flushed, not committed
    answers: list[str] = []
    command = threading.Thread(target=lambda: answers.append(bot.command(typed).text))
    command.start()
    command.join(timeout=0.5)  # it is waiting on the close's lock (PostgreSQL)
    closing.commit()
    closing.close()
    command.join(timeout=30)

    assert not command.is_alive()
    assert answers == ["INC-1 is closed."]
    with bot.services.sessions() as session:
        closed = session.get_one(Incident, incident.id)
        assert (closed.impact, closed.severity) == (None, None)
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 0


def test_a_reader_such_as_export_neither_holds_up_notes_nor_sees_them_midway(bot: Bot) -> None:
    """`incident-bot export` reads a whole incident, which takes seconds for a large one. On
    SQLite it took the write lock like any transaction, so notes typed meanwhile waited and
    were answered "could not record"; on PostgreSQL each of its statements saw the writes
    committed since the one before. A read-only session holds no lock and sees one moment."""
    bot.command("start Checkout is down")
    bot.command("note first")
    reading = make_session_factory(read_only(bot.services.engine))
    with reading() as session:
        before = session.scalar(select(func.count()).select_from(TimelineEntry))
        answer = bot.command("note typed while the export reads")
        after = session.scalar(select(func.count()).select_from(TimelineEntry))
    assert "Added to" in answer.text
    assert before == after == 1
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 2


def test_a_worker_with_many_threads_gets_a_connection_for_each(database: Database) -> None:
    # `serve --threads 24`: every request thread and every follow-up thread may hold a
    # connection at once. SQLAlchemy's default pool lends 15; the 16th waited for one, then
    # failed ("could not record").
    settings = make_settings(database.url, "http://127.0.0.1:9")
    services = build_services(settings, create_schema=False, request_threads=24)
    held = []
    try:
        for _ in range(24 + FOLLOWUP_THREADS):  # the pool raises TimeoutError if it cannot
            held.append(services.engine.raw_connection())
        assert len({id(connection.dbapi_connection) for connection in held}) == len(held)
    finally:
        for connection in held:
            connection.close()
        services.engine.dispose()
