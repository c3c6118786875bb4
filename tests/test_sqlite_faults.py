"""SQLite's file going wrong while serving.

Whatever happens to the file, a command answered as recorded is in the file that
`DATABASE_URL` names, and one answered "nothing was saved" is in no file at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

from bot import db
from tests.conftest import ALICE, CHANNEL, Bot, Database
from tests.slack.test_capture import shortcut_request

pytestmark = pytest.mark.parametrize("db_kind", ["sqlite"], indirect=True)


def _file(database: Database) -> Path:
    assert database.engine.url.database
    return Path(database.engine.url.database)


def _notes_in(path: Path) -> list[str]:
    """The notes stored in the file at `path`, read by a connection of its own."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            return list(
                connection.scalars(
                    text("SELECT text FROM timeline_entries WHERE kind = 'note' ORDER BY number")
                )
            )
    finally:
        engine.dispose()


def test_a_command_after_the_database_file_is_deleted_is_not_acknowledged_into_it(
    bot: Bot, database: Database
) -> None:
    """SQLite goes on writing to the file it opened after `rm incidents.db`: a note would be
    "Added" to a file no one can open again, and lost when the process exits."""
    path = _file(database)
    assert "INC-1" in bot.command("start Outage").text
    assert "Added to" in bot.command("note before").text
    kept = path.with_name("kept.db")
    with sqlite3.connect(path) as source, sqlite3.connect(kept) as copy:
        source.backup(copy)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)

    for typed in ("note while deleted", "note still deleted", "severity SEV1"):
        reply = bot.command(typed)
        assert "could not record" in reply.text and "Added to" not in reply.visible, typed
    assert not db.ping(bot.services.engine)  # /healthz says so too
    assert not path.exists()  # and no empty database was made in its place

    kept.rename(path)  # put back: the bot writes to it again
    assert "Added to" in bot.command("note after").text
    assert _notes_in(path) == ["before", "after"]


def test_a_command_is_on_disk_before_it_is_acknowledged(bot: Bot, database: Database) -> None:
    """In WAL mode, SQLite's `synchronous = NORMAL` does not sync the log at a commit: a
    power cut or an OS crash (the outage may be the machine's own) rolls back commands already
    answered "Added to". FULL syncs it at every commit, as PostgreSQL does; group commit
    spreads that cost over the notes written together."""
    assert "INC-1" in bot.command("start Outage").text
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


@contextmanager
def commits_refused(engine: Engine, *, after: int = 0) -> Iterator[None]:
    """Every COMMIT but the first `after` fails as SQLite fails one it cannot write (a full
    disk, an I/O error): the call raises and the transaction is not committed."""
    spared = [after]

    def refuse(_connection: Any) -> None:
        if spared[0]:
            spared[0] -= 1
            return
        full = sqlite3.OperationalError("database or disk is full")
        raise OperationalError("COMMIT", None, full)  # as SQLAlchemy raises SQLite's error

    event.listen(engine, "commit", refuse)
    try:
        yield
    finally:
        event.remove(engine, "commit", refuse)


@pytest.mark.parametrize("typed", ["note the disk is full", "severity SEV1"])
def test_a_commit_sqlite_refuses_is_told_as_not_recorded(
    bot: Bot, database: Database, typed: str
) -> None:
    """SQLite's COMMIT runs in this process: when it fails, nothing was stored, and the
    person should simply try again, not be sent to `/incident status` to find out."""
    assert "INC-1" in bot.command("start Outage").text
    with commits_refused(database.engine):
        reply = bot.command(typed)
    assert "could not record" in reply.text and "Nothing was saved" in reply.text
    assert "could not confirm" not in reply.visible
    assert _notes_in(_file(database)) == []


def test_a_message_shortcut_whose_commit_sqlite_refuses_is_told_as_not_recorded(
    bot: Bot, database: Database
) -> None:
    assert "INC-1" in bot.command("start Outage").text
    ts = bot.fake.post(CHANNEL, "rolled back", user=ALICE, ts="1795154400.000100")
    message = {"type": "message", "user": ALICE, "text": "rolled back", "ts": ts}
    body, headers = shortcut_request(bot, message)
    # The first commit ends the incident's lookup, before Slack is asked about the message.
    with commits_refused(database.engine, after=1):
        assert bot.dispatch(body, headers).status == 200
    [told] = bot.fake.wait_for_responses(1)
    assert "could not record" in told["text"] and "could not confirm" not in told["text"]
    with database.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM timeline_entries")) == 0
