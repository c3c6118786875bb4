"""SQLite's file going wrong while serving.

Whatever happens to the file, a command answered as recorded is in the file that
`DATABASE_URL` names, and one answered "nothing was saved" is in no file at all.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot import db
from tests.conftest import Bot, Database

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
