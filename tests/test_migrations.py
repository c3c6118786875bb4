"""The schema is Alembic's: `db upgrade` makes exactly the models' schema; `serve` will not guess.

Each test starts from an empty database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, Engine, Text, inspect, text
from sqlalchemy.exc import IntegrityError

from bot import db, models
from tests.conftest import (
    TEST_DATABASE_URL,
    Database,
    _drop_postgres_schema,
    _postgres_engine,
)

HEAD = ("0011",)  # the latest migration in bot/migrations/versions
HEAD_REVISION = HEAD[0]


@contextmanager
def empty_database_of(kind: str, path: Path) -> Iterator[Database]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL schema."""
    if kind == "sqlite":
        url = f"sqlite:///{path}"
        engine = db.make_engine(url)
        try:
            yield Database(url=url, engine=engine)
        finally:
            engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = _postgres_engine(schema)
    try:
        yield Database(
            url=TEST_DATABASE_URL, engine=engine, env={"PGOPTIONS": f"-csearch_path={schema}"}
        )
    finally:
        engine.dispose()
        _drop_postgres_schema(schema)


@pytest.fixture
def empty_database(db_kind: str, tmp_path: Path) -> Iterator[Database]:
    with empty_database_of(db_kind, tmp_path / "incidents.db") as database:
        yield database


def cli_env(database: Database, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an `incident-bot` process on `database`: ours, less any Slack or DB."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SLACK_", "PG")) and name not in ("DATABASE_URL", "TEMPLATES_DIR")
    }
    environ.update(database.env)
    environ.update(env or {})
    environ["DATABASE_URL"] = database.url
    return environ


def cli(
    database: Database, *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start `incident-bot <args>` on `database`, in `cwd` (where there is no .env)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env=cli_env(database, env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(
    database: Database, *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `incident-bot <args>` on `database` to the end."""
    process = cli(database, *args, cwd=cwd, env=env)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def drift(engine: Engine) -> list[Any]:
    """What autogenerate would write to make the database match bot/models.py."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, db.Base.metadata))


# --- the first migration is the models' schema --------------------------------------------


def test_upgrading_an_empty_database_gives_the_models_schema(empty_database: Database) -> None:
    engine = empty_database.engine
    assert db.schema_status(engine).state is db.SchemaState.MISSING

    upgrade = db.upgrade_schema(engine)

    assert (upgrade.before, upgrade.after, upgrade.adopted) == ((), HEAD, False)
    assert upgrade.describe() == f"created the schema at revision {HEAD_REVISION}"
    assert table_names(engine) == set(db.Base.metadata.tables) | {"alembic_version"}
    assert drift(engine) == []
    status = db.schema_status(engine)
    assert (status.state, status.revisions, status.heads) == (db.SchemaState.CURRENT, HEAD, HEAD)


def catalog(connection: Connection) -> dict[str, Any]:
    """The database's own account of the schema: columns, keys, indexes and their conditions.

    Autogenerate does not compare everything (a partial index's WHERE, for one), so the
    migrated schema is also compared with what `create_all` makes from the models.
    """
    if connection.dialect.name == "sqlite":
        tables = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version' ORDER BY name"
        ).scalars()
        found: dict[str, Any] = {}
        for table in tables:
            indexes = connection.exec_driver_sql(f"PRAGMA index_list('{table}')").all()
            found[table] = {
                "columns": connection.exec_driver_sql(f"PRAGMA table_info('{table}')").all(),
                "foreign_keys": sorted(
                    tuple(row[2:])
                    for row in connection.exec_driver_sql(f"PRAGMA foreign_key_list('{table}')")
                ),
                "indexes": sorted(
                    (
                        name,
                        unique,
                        origin,
                        partial,
                        connection.exec_driver_sql(f"PRAGMA index_info('{name}')").all(),
                    )
                    for _seq, name, unique, origin, partial in indexes
                ),
            }
        found["index definitions"] = sorted(
            " ".join(sql.split())
            for sql in connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            ).scalars()
        )
        return found
    schema_free = "replace({}, current_schema() || '.', '')"
    return {
        "columns": connection.execute(
            text(
                "SELECT table_name, ordinal_position, column_name, data_type, "
                "character_maximum_length, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name != 'alembic_version' ORDER BY table_name, ordinal_position"
            )
        ).all(),
        "indexes": connection.execute(
            text(
                f"SELECT tablename, indexname, {schema_free.format('indexdef')} "
                "FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename != 'alembic_version' ORDER BY tablename, indexname"
            )
        ).all(),
        "constraints": connection.execute(
            text(
                f"SELECT conrelid::regclass::text AS tab, conname, contype, "
                f"{schema_free.format('pg_get_constraintdef(oid)')} "
                "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace "
                "AND conrelid::regclass::text != 'alembic_version' ORDER BY tab, conname"
            )
        ).all(),
    }


def test_migrated_schema_is_the_one_create_all_makes(db_kind: str, tmp_path: Path) -> None:
    with (
        empty_database_of(db_kind, tmp_path / "migrated.db") as migrated,
        empty_database_of(db_kind, tmp_path / "created.db") as created,
    ):
        db.upgrade_schema(migrated.engine)
        db.Base.metadata.create_all(created.engine)
        with migrated.engine.connect() as left, created.engine.connect() as right:
            assert catalog(left) == catalog(right)


def test_open_incidents_are_unique_per_channel_in_the_migrated_schema(
    empty_database: Database,
) -> None:
    db.upgrade_schema(empty_database.engine)
    now = datetime(2026, 11, 20, tzinfo=UTC)

    def incident(number: int, status: str) -> models.Incident:
        return models.Incident(
            team_id="T1",
            number=number,
            channel_id="C1",
            title="t",
            status=status,
            timezone="UTC",
            started_at=now,
            opened_by="U1",
            opened_at=now,
        )

    sessions = db.make_session_factory(empty_database.engine)
    with sessions.begin() as session:
        session.add_all([incident(1, "closed"), incident(2, "closed"), incident(3, "open")])
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(incident(4, "open"))


# --- upgrading again, and databases made some other way -----------------------------------


def test_upgrade_is_idempotent_and_keeps_the_data(empty_database: Database) -> None:
    engine = empty_database.engine
    db.create_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO workspaces VALUES ('T1', 7)"))

    again = db.upgrade_schema(engine)
    db.create_schema(engine)

    assert (again.before, again.after, again.adopted) == (HEAD, HEAD, False)
    assert (
        again.describe()
        == f"the schema is already current at revision {HEAD_REVISION}; nothing to do"
    )
    with engine.connect() as connection:
        assert connection.execute(text("SELECT * FROM workspaces")).all() == [("T1", 7)]
    assert db.schema_status(engine).is_current
    assert drift(engine) == []


def test_entries_made_before_0004_are_kept_and_request_ids_are_unique(
    empty_database: Database,
) -> None:
    engine = empty_database.engine
    with db.migration_connection(engine) as connection:
        command.upgrade(db.alembic_config(connection), "0003")
    entry = (
        "INSERT INTO timeline_entries (incident_id, number, occurred_at, recorded_at, "
        "author_id, kind, text) VALUES (1, {n}, '2026-11-20 00:00:00', '2026-11-20 00:00:00', "
        "'U1', 'note', 'note {n}')"
    )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO incidents (id, team_id, number, channel_id, title, status, "
                "timezone, started_at, opened_by, opened_at, last_entry_number) VALUES "
                "(1, 'T1', 1, 'C1', 't', 'open', 'UTC', '2026-11-20 00:00:00', 'U1', "
                "'2026-11-20 00:00:00', 2)"
            )
        )
        connection.execute(text(entry.format(n=1)))
        connection.execute(text(entry.format(n=2)))

    assert db.upgrade_schema(engine).after == HEAD

    with engine.begin() as connection:
        kept = "SELECT number, text, request_id FROM timeline_entries ORDER BY number"
        assert connection.execute(text(kept)).all() == [(1, "note 1", None), (2, "note 2", None)]
        connection.execute(text("UPDATE timeline_entries SET request_id = 'r1' WHERE number = 1"))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("UPDATE timeline_entries SET request_id = 'r1' WHERE number = 2"))
    assert drift(engine) == []


def test_tables_made_before_migrations_are_adopted_as_the_first_revision(
    empty_database: Database,
) -> None:
    engine = empty_database.engine
    # What incident-bot 0.1 made at start-up with create_all: the first revision's tables,
    # with no record of a revision.
    with db.migration_connection(engine) as connection:
        command.upgrade(db.alembic_config(connection), db.BASELINE_REVISION)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO workspaces VALUES ('T1', 3)"))
    assert db.schema_status(engine).state is db.SchemaState.MISSING

    upgrade = db.upgrade_schema(engine)

    assert (upgrade.before, upgrade.after, upgrade.adopted) == ((), HEAD, True)
    assert db.schema_status(engine).is_current
    with engine.connect() as connection:
        assert connection.execute(text("SELECT * FROM workspaces")).all() == [("T1", 3)]


def test_some_of_the_tables_without_a_revision_are_refused(empty_database: Database) -> None:
    engine = empty_database.engine
    db.Base.metadata.tables["workspaces"].create(engine)

    with pytest.raises(db.SchemaError, match="some of incident-bot's tables \\(workspaces\\)"):
        db.upgrade_schema(engine)
    assert table_names(engine) == {"workspaces"}


def test_a_revision_this_version_does_not_know_is_left_alone(empty_database: Database) -> None:
    engine = empty_database.engine
    db.upgrade_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))

    status = db.schema_status(engine)
    assert (status.state, status.revisions) == (db.SchemaState.UNKNOWN, ("f00dfeed",))
    with pytest.raises(db.SchemaError, match="revision f00dfeed, which this version"):
        db.upgrade_schema(engine)
    assert db.schema_status(engine).revisions == ("f00dfeed",)


def test_downgrade_to_nothing_and_upgrade_again(empty_database: Database) -> None:
    engine = empty_database.engine
    db.upgrade_schema(engine)
    with db.migration_connection(engine) as connection:
        command.downgrade(db.alembic_config(connection), "base")
    assert table_names(engine) == {"alembic_version"}
    assert db.schema_status(engine).state is db.SchemaState.MISSING

    assert db.upgrade_schema(engine).after == HEAD
    assert drift(engine) == []


def test_concurrent_upgrades_take_turns(empty_database: Database, tmp_path: Path) -> None:
    # Several machines may each run `db upgrade` as they start; all of them must succeed.
    upgrades = [cli(empty_database, "db", "upgrade", cwd=tmp_path) for _ in range(3)]
    try:
        results = [process.communicate(timeout=120) for process in upgrades]
    finally:
        for process in upgrades:
            process.kill()

    assert [process.returncode for process in upgrades] == [0, 0, 0], results
    outputs = sorted(stdout.split(": ", 2)[-1].strip() for stdout, _stderr in results)
    assert outputs == [
        f"created the schema at revision {HEAD_REVISION}",
        f"the schema is already current at revision {HEAD_REVISION}; nothing to do",
        f"the schema is already current at revision {HEAD_REVISION}; nothing to do",
    ]
    assert db.schema_status(empty_database.engine).is_current


def test_sqlite_batch_migrations_do_not_cascade_deletes(tmp_path: Path) -> None:
    # SQLite alters a table by copying it and dropping the old one; with foreign keys on,
    # that drop would delete every timeline entry of every incident.
    with empty_database_of("sqlite", tmp_path / "incidents.db") as database:
        engine = database.engine
        db.upgrade_schema(engine)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO incidents (id, team_id, number, channel_id, title, status, "
                    "timezone, started_at, opened_by, opened_at) VALUES (1, 'T1', 1, 'C1', 't', "
                    "'open', 'UTC', '2026-11-20 00:00:00', 'U1', '2026-11-20 00:00:00')"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO timeline_entries (incident_id, occurred_at, recorded_at, "
                    "author_id, kind, text) VALUES (1, '2026-11-20 00:00:00', "
                    "'2026-11-20 00:00:00', 'U1', 'note', 'kept')"
                )
            )

        with db.migration_connection(engine) as connection:
            operations = Operations(
                MigrationContext.configure(connection, opts={"render_as_batch": True})
            )
            with operations.batch_alter_table("incidents", recreate="always") as batch:
                batch.add_column(Column("a_column_no_migration_has", Text(), nullable=True))

        with engine.connect() as connection:
            assert connection.execute(text("SELECT text FROM timeline_entries")).all() == [
                ("kept",)
            ]
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# --- the command line ---------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_then_has_nothing_to_do(
    empty_database: Database, tmp_path: Path
) -> None:
    first = run_cli(empty_database, "db", "upgrade", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"created the schema at revision {HEAD_REVISION}" in first.stdout
    assert db.schema_status(empty_database.engine).is_current

    second = run_cli(empty_database, "db", "upgrade", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"already current at revision {HEAD_REVISION}; nothing to do" in second.stdout


SLACK_ENV = {
    "serve": {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_SIGNING_SECRET": "s"},
    "socket": {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xapp-x"},
}


@pytest.mark.parametrize("mode", ["serve", "socket"])
def test_serving_refuses_an_empty_database_and_says_to_upgrade(
    empty_database: Database, mode: str, tmp_path: Path
) -> None:
    result = run_cli(empty_database, mode, cwd=tmp_path, env=SLACK_ENV[mode])

    assert result.returncode == 2
    said = result.stderr
    # An empty PostgreSQL schema; on SQLite, a file not created yet (connecting would create it).
    assert (
        "will not start: the database has no incident-bot schema revision" in said
        and "Run `incident-bot db upgrade`" in said
    ) or ("there is no database at" in said and "Create it with `incident-bot db upgrade`" in said)
    assert "Traceback" not in said
    assert table_names(empty_database.engine) == set()  # serving never creates the schema


def test_serve_refuses_a_schema_it_does_not_know(empty_database: Database, tmp_path: Path) -> None:
    db.upgrade_schema(empty_database.engine)
    with empty_database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))

    result = run_cli(empty_database, "serve", cwd=tmp_path, env=SLACK_ENV["serve"])

    assert result.returncode == 2
    assert "revision f00dfeed, which this version of incident-bot does not know" in result.stderr
    assert "`incident-bot db upgrade`" in result.stderr


def test_db_upgrade_says_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder" / "incidents.db"
    database = Database(url=f"sqlite:///{missing}", engine=db.make_engine(f"sqlite:///{missing}"))

    result = run_cli(database, "db", "upgrade", cwd=tmp_path)

    assert result.returncode == 1
    assert "could not upgrade the database at sqlite:///" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
@pytest.mark.parametrize(
    ("args", "env"),
    [(("db", "upgrade"), {}), (("serve",), SLACK_ENV["serve"]), (("export", "INC-1"), {})],
)
def test_an_in_memory_sqlite_database_is_refused_as_one_that_keeps_nothing(
    url: str, args: tuple[str, ...], env: dict[str, str], tmp_path: Path
) -> None:
    """It is gone when the process ends: `db upgrade` must not say it created the schema,
    and `serve` must not send the operator to run it."""
    database = Database(url=url, engine=db.make_engine(url))

    result = run_cli(database, *args, cwd=tmp_path, env=env)

    assert result.returncode == 2
    assert "in memory" in result.stderr and "sqlite:///incidents.db" in result.stderr
    assert "created the schema" not in result.stdout
    assert "Run `incident-bot db upgrade`" not in result.stderr
    assert "Traceback" not in result.stderr
