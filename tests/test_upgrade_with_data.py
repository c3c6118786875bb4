"""`incident-bot db upgrade` from every older revision, on a database with a deployment's data.

Each test builds a database at an older revision, fills every table that exists there with what
the bot of that time would have written (open and closed incidents, typed and pinned entries
with their history, roles, measures, postmortems, handled requests, OAuth installations), and
checks that the upgrade keeps every value of every row, that the bot then carries on from it,
and that upgrading again changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, MetaData, Table, inspect, select, text

from bot import db
from bot.app import build_app
from bot.demo import FakeSlack
from bot.models import Publication, TimelineEntry
from bot.services import build_services
from bot.slack import publish
from tests.conftest import ALICE, BOB, CHANNEL, TEAM, Bot, Clock, Database, make_settings
from tests.test_migrations import HEAD, HEAD_REVISION, SLACK_ENV, empty_database_of, run_cli

# Every revision, oldest first, as Alembic chains them (not by their ids' spelling).
IN_ORDER = [
    script.revision
    for script in reversed(list(ScriptDirectory(str(db.MIGRATIONS_DIR)).walk_revisions()))
]
# Every revision before the latest.
OLDER_REVISIONS = [revision for revision in IN_ORDER if revision not in HEAD]
# Tables incident-bot 0.1 made with create_all, before it used migrations: 0001's, unrecorded.
UNRECORDED = "unrecorded"

OTHER_TEAM = "T0OTHER001"
OTHER_CHANNEL = "C0OTHER001"
SECOND_CHANNEL = "C0SECOND01"
PIN_TS = "1795150500.000100"


def utc(day: int, hour: int, minute: int, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, micro, tzinfo=UTC)


# Rows as the latest schema names their columns; at an older revision, the columns it lacks
# are left out. Entries marked `since` were not possible before that revision.
WORKSPACES = [
    {"team_id": TEAM, "last_incident_number": 2},
    {"team_id": OTHER_TEAM, "last_incident_number": 1},
]
INCIDENTS = [
    {
        "id": 1,
        "team_id": TEAM,
        "number": 1,
        "channel_id": CHANNEL,
        "title": "Checkout is down",
        "status": "closed",
        "timezone": "Africa/Nairobi",
        "started_at": utc(19, 7, 0),
        "opened_by": ALICE,
        "opened_at": utc(19, 7, 1, 12, 345678),
        "closed_at": utc(19, 8, 30),
        "closed_by": BOB,
        "impact": "Customers could not pay",
        "cause": "an expired TLS certificate",
        "resolution": "Certificate renewed",
        "summary": "Checkout failed for 90 minutes.",
        "severity": "SEV1",
        "detected_at": utc(19, 7, 5),
        "mitigated_at": utc(19, 8, 0),
        "last_entry_number": 3,
    },
    {
        "id": 2,
        "team_id": TEAM,
        "number": 2,
        "channel_id": CHANNEL,
        "title": "Search is slow",
        "status": "open",
        "timezone": "Africa/Nairobi",
        "started_at": utc(20, 5, 0),
        "opened_by": ALICE,
        "opened_at": utc(20, 5, 0, 30, 1),
        "closed_at": None,
        "closed_by": None,
        "impact": "Searches take 4 seconds",
        "cause": None,
        "resolution": None,
        "summary": None,
        "severity": "SEV2",
        "detected_at": utc(20, 5, 2),
        "mitigated_at": None,
        "last_entry_number": 4,
    },
    {
        "id": 3,
        "team_id": OTHER_TEAM,
        "number": 1,
        "channel_id": OTHER_CHANNEL,
        "title": "Another workspace's incident",
        "status": "open",
        "timezone": "UTC",
        "started_at": utc(20, 4, 0),
        "opened_by": BOB,
        "opened_at": utc(20, 4, 0),
        "closed_at": None,
        "closed_by": None,
        "impact": None,
        "cause": None,
        "resolution": None,
        "summary": None,
        "severity": None,
        "detected_at": None,
        "mitigated_at": None,
        "last_entry_number": 0,
    },
]
FILES = json.dumps([{"name": "graph.png", "permalink": "https://example.slack.com/files/F1"}])
ENTRY_DEFAULTS: dict[str, Any] = {
    "author_name": None,
    "deleted_at": None,
    "deleted_by": None,
    "source_channel": None,
    "source_ts": None,
    "permalink": None,
    "files": None,
    "captured_by": None,
    "source_edited_ts": None,
    "request_id": None,
    "since": "0001",
}
ENTRIES: list[dict[str, Any]] = [
    {
        **ENTRY_DEFAULTS,
        "id": 1,
        "incident_id": 1,
        "number": 1,
        "occurred_at": utc(19, 7, 10),
        "recorded_at": utc(19, 7, 11),
        "author_id": ALICE,
        "kind": "note",
        "text": "Errors at checkout",
    },
    {
        **ENTRY_DEFAULTS,
        "id": 2,
        "incident_id": 1,
        "number": 2,
        "occurred_at": utc(19, 7, 40),
        "recorded_at": utc(19, 7, 41, 0, 999999),
        "author_id": BOB,
        "kind": "note",
        "text": "Rolled back the deploy",
    },
    {
        **ENTRY_DEFAULTS,
        "id": 3,
        "incident_id": 1,
        "number": 3,
        "occurred_at": utc(19, 8, 30),
        "recorded_at": utc(19, 8, 30, 5),
        "author_id": BOB,
        "kind": "close",
        "text": "Certificate renewed",
    },
    {
        **ENTRY_DEFAULTS,
        "id": 4,
        "incident_id": 2,
        "number": 1,
        "occurred_at": utc(20, 5, 5),
        "recorded_at": utc(20, 5, 5, 1),
        "author_id": ALICE,
        "kind": "note",
        "text": "p99 latency is 4 s",
        "request_id": "1795150000.trigger.note",
    },
    {
        **ENTRY_DEFAULTS,
        "id": 5,
        "incident_id": 2,
        "number": 2,
        "occurred_at": utc(20, 5, 10),
        "recorded_at": utc(20, 5, 12),
        "author_id": BOB,
        "kind": "capture",
        "text": "Graph of the slow queries",
        "author_name": "Bob",
        "source_channel": CHANNEL,
        "source_ts": PIN_TS,
        "permalink": "https://example.slack.com/archives/C0TEST0001/p1795150500000100",
        "files": FILES,
        "captured_by": ALICE,
        "source_edited_ts": "1795150600.000200",
        "since": "0002",
    },
    {
        **ENTRY_DEFAULTS,
        "id": 6,
        "incident_id": 2,
        "number": 3,
        "occurred_at": utc(20, 5, 20),
        "recorded_at": utc(20, 5, 20),
        "author_id": ALICE,
        "kind": "note",
        "text": "meant for another channel",
        "deleted_at": utc(20, 5, 21),
        "deleted_by": ALICE,
        "since": "0002",
    },
    {
        **ENTRY_DEFAULTS,
        "id": 7,
        "incident_id": 2,
        "number": 4,
        "occurred_at": utc(20, 5, 25),
        "recorded_at": utc(20, 5, 25),
        "author_id": ALICE,
        "kind": "event",
        "text": "Bob is now the commander",
        "since": "0002",
    },
]
TABLES: dict[str, list[dict[str, Any]]] = {
    "workspaces": WORKSPACES,
    "incidents": INCIDENTS,
    "timeline_entries": ENTRIES,
    "entry_revisions": [
        {
            "id": 1,
            "entry_id": 5,
            "action": "refresh",
            "old_text": "Graph",
            "old_occurred_at": utc(20, 5, 10),
            "new_text": "Graph of the slow queries",
            "new_occurred_at": utc(20, 5, 10),
            "changed_by": BOB,
            "changed_at": utc(20, 5, 13),
        },
        {
            "id": 2,
            "entry_id": 6,
            "action": "delete",
            "old_text": "meant for another channel",
            "old_occurred_at": utc(20, 5, 20),
            "new_text": None,
            "new_occurred_at": None,
            "changed_by": ALICE,
            "changed_at": utc(20, 5, 21),
        },
    ],
    "role_assignments": [
        {
            "id": 1,
            "incident_id": 2,
            "role": "commander",
            "user_id": BOB,
            "user_name": "Bob",
            "assigned_by": ALICE,
            "assigned_at": utc(20, 5, 25),
        }
    ],
    "field_changes": [
        {
            "id": n,
            "incident_id": incident,
            "field": field,
            "value": value,
            "changed_by": ALICE,
            "changed_at": utc(19, 8, 0) + timedelta(minutes=n),
        }
        for n, (incident, field, value) in enumerate(
            [
                (1, "impact", "Some customers could not pay"),
                (1, "impact", "Customers could not pay"),
                (1, "cause", "an expired TLS certificate"),
                (1, "resolution", "Certificate renewed"),
                (1, "summary", "Checkout failed for 90 minutes."),
                (2, "impact", "Searches take 4 seconds"),
            ],
            start=1,
        )
    ],
    "actions": [
        {
            "id": 1,
            "incident_id": 1,
            "text": "Alert 14 days before a certificate expires",
            "author_id": ALICE,
            "created_at": utc(19, 8, 10),
        },
        {
            "id": 2,
            "incident_id": 1,
            "text": "Renew certificates automatically",
            "author_id": BOB,
            "created_at": utc(19, 8, 12),
        },
    ],
    "postmortems": [
        {
            "id": 1,
            "incident_id": 1,
            "rendered_at": utc(19, 8, 30, 6),
            "markdown": "# Postmortem: Checkout is down\n\n* 10:10 AM - Errors at checkout\n",
        }
    ],
    # As a bot at 0010 left a postmortem it published (0010 itself records one published for
    # each incident closed before it: expected_after_upgrade).
    "publications": [
        {
            "since": "0010",
            "incident_id": 1,
            "pending": False,
            "channel_id": CHANNEL,
            "enterprise_id": None,
            "is_enterprise_install": False,
            "claim": None,
            "claimed_until": None,
            "attempts": 1,
            "summary_posted": True,
        }
    ],
    "handled_requests": [
        {
            "request_id": "1795150000.trigger.severity",
            "team_id": TEAM,
            "command": "severity",
            "handled_at": utc(20, 5, 3),
        }
    ],
    # slack_sdk's stores write naive UTC times into these.
    "slack_bots": [
        {
            "id": 1,
            "client_id": "111.222",
            "app_id": "A0APP00001",
            "enterprise_id": None,
            "enterprise_name": None,
            "team_id": OTHER_TEAM,
            "team_name": "Other",
            "bot_token": "xoxb-other",
            "bot_id": "B0BOT00001",
            "bot_user_id": "U0BOT00001",
            "bot_scopes": "commands,chat:write",
            "bot_refresh_token": None,
            "bot_token_expires_at": None,
            "is_enterprise_install": False,
            "installed_at": datetime(2026, 11, 1, 12, 0, 0, 123456),
        }
    ],
    "slack_installations": [
        {
            "id": 1,
            "client_id": "111.222",
            "app_id": "A0APP00001",
            "enterprise_id": None,
            "enterprise_name": None,
            "enterprise_url": None,
            "team_id": OTHER_TEAM,
            "team_name": "Other",
            "bot_token": "xoxb-other",
            "bot_id": "B0BOT00001",
            "bot_user_id": "U0BOT00001",
            "bot_scopes": "commands,chat:write",
            "bot_refresh_token": None,
            "bot_token_expires_at": None,
            "user_id": "U0INSTALL1",
            "user_token": None,
            "user_scopes": None,
            "user_refresh_token": None,
            "user_token_expires_at": None,
            "incoming_webhook_url": None,
            "incoming_webhook_channel": None,
            "incoming_webhook_channel_id": None,
            "incoming_webhook_configuration_url": None,
            "is_enterprise_install": False,
            "token_type": "bot",
            "installed_at": datetime(2026, 11, 1, 12, 0, 0, 123456),
        }
    ],
    "slack_oauth_states": [
        {"id": 1, "state": "a-state", "expire_at": datetime(2026, 11, 20, 6, 10)},
    ],
}


@dataclass
class Filled:
    """A database at an older revision, with the rows each table was given."""

    database: Database
    revision: str
    given: dict[str, list[dict[str, Any]]]  # table -> rows, only the columns it had


def head_table(name: str) -> Table:
    return db.Base.metadata.tables[name]


def fill(engine: Engine, revision: str) -> dict[str, list[dict[str, Any]]]:
    """Insert, into each table the database has, the rows it could hold at `revision`."""
    present = inspect(engine)
    columns_of = {
        name: {column["name"] for column in present.get_columns(name)}
        for name in TABLES
        if present.has_table(name)
    }
    given: dict[str, list[dict[str, Any]]] = {}
    with engine.begin() as connection:
        for name, rows in TABLES.items():
            if name not in columns_of:
                continue
            columns = columns_of[name]
            # The column types as the bot writes them (aware UTC times: bot.db.UTCDateTime).
            table = Table(
                name,
                MetaData(),
                *(Column(c.name, c.type) for c in head_table(name).columns if c.name in columns),
            )
            kept = [
                {key: value for key, value in row.items() if key in columns}
                for row in rows
                if IN_ORDER.index(row.get("since", "0001")) <= IN_ORDER.index(revision)
            ]
            if kept:
                connection.execute(table.insert(), kept)
            given[name] = kept
            if connection.dialect.name == "postgresql" and "id" in columns and kept:
                # As if the rows had been numbered by the database, as the bot's are.
                sequence = f"pg_get_serial_sequence('{name}', 'id')"
                connection.execute(text(f"SELECT setval({sequence}, MAX(id)) FROM {name}"))
    return given


def snapshot(engine: Engine) -> dict[str, dict[str, list[Any]]]:
    """Every column of every table but alembic_version, as stored (no type conversion of ours):
    table -> column -> its values, in the order of the primary key."""
    found: dict[str, dict[str, list[Any]]] = {}
    for name in sorted(inspect(engine).get_table_names()):
        if name == "alembic_version":
            continue
        table = Table(name, MetaData(), autoload_with=engine)
        names = [column.name for column in table.c]
        keys = ", ".join(f'"{column.name}"' for column in table.primary_key.columns)
        listed = ", ".join(f'"{column}"' for column in names)
        with engine.connect() as connection:
            # On the driver's cursor: SQLite's times as the text it holds, not parsed.
            rows = connection.exec_driver_sql(
                f'SELECT {listed} FROM "{name}" ORDER BY {keys}'
            ).all()
        found[name] = {column: [row[i] for row in rows] for i, column in enumerate(names)}
    return found


def typed_rows(engine: Engine, name: str) -> list[dict[str, Any]]:
    """The table's rows as the bot reads them (aware UTC times)."""
    table = head_table(name)
    with engine.connect() as connection:
        query = select(table).order_by(*table.primary_key.columns)
        return [dict(row._mapping) for row in connection.execute(query)]


def expected_after_upgrade(filled: Filled) -> dict[str, list[dict[str, Any]]]:
    """Each table's rows as the latest schema should hold them: the values given, and for the
    columns added since, what the migrations say (entries numbered per incident in the order
    they were recorded, the counter at the last number, NULL otherwise)."""
    expected: dict[str, list[dict[str, Any]]] = {}
    entries = filled.given.get("timeline_entries", [])
    for name in TABLES:
        expected[name] = []
        for had in filled.given.get(name, []):
            full = {c.name: had.get(c.name) for c in head_table(name).columns}
            if name == "timeline_entries" and "number" not in had:
                earlier = [e for e in entries if e["incident_id"] == had["incident_id"]]
                full["number"] = [e["id"] for e in earlier].index(had["id"]) + 1
            if name == "incidents" and "last_entry_number" not in had:
                full["last_entry_number"] = sum(1 for e in entries if e["incident_id"] == had["id"])
            expected[name].append(full)
        if name == "publications" and name not in filled.given:  # made by 0010: published
            expected[name] = [
                {
                    **{c.name: None for c in head_table(name).columns},
                    "incident_id": incident["id"],
                    "pending": False,
                    "channel_id": incident["channel_id"],
                    "is_enterprise_install": False,
                    "attempts": 0,
                    "summary_posted": True,
                }
                for incident in filled.given["incidents"]
                if incident["status"] == "closed"
            ]
        keys = [column.name for column in head_table(name).primary_key.columns]
        expected[name].sort(key=lambda row: [row[key] for key in keys])
    return expected


@pytest.fixture(params=[UNRECORDED, *OLDER_REVISIONS])
def filled(request: pytest.FixtureRequest, db_kind: str, tmp_path: Path) -> Iterator[Filled]:
    revision = str(request.param)
    made_at = db.BASELINE_REVISION if revision == UNRECORDED else revision
    with empty_database_of(db_kind, tmp_path / "incidents.db") as database:
        with db.migration_connection(database.engine) as connection:
            command.upgrade(db.alembic_config(connection), made_at)
        given = fill(database.engine, made_at)
        if revision == UNRECORDED:
            with database.engine.begin() as connection:
                connection.execute(text("DROP TABLE alembic_version"))
        yield Filled(database=database, revision=revision, given=given)


def make_bot(database: Database, fake: FakeSlack, clock: Clock) -> Bot:
    settings = make_settings(database.url, fake.api_url)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    return Bot(app=build_app(settings, services), services=services, fake=fake, clock=clock)


def refusal(filled: Filled) -> str:
    """Why `serve` will not start on the database, as it says it."""
    if filled.revision == UNRECORDED:
        return "the database has no incident-bot schema revision recorded"
    return (
        f"the database's schema is at revision {filled.revision}, "
        f"older than this version's {HEAD_REVISION}"
    )


# --- the tests ----------------------------------------------------------------------------------


def test_serving_an_older_revision_is_refused_and_changes_nothing(
    filled: Filled, tmp_path: Path
) -> None:
    engine = filled.database.engine
    before = snapshot(engine)

    for mode in ("serve", "socket"):
        result = run_cli(filled.database, mode, cwd=tmp_path, env=SLACK_ENV[mode])
        assert result.returncode == 2, result.stderr
        assert f"will not start: {refusal(filled)}" in result.stderr
        assert "Run `incident-bot db upgrade`" in result.stderr
        assert "Traceback" not in result.stderr
    exported = run_cli(filled.database, "export", "INC-1", "--team", TEAM, cwd=tmp_path)
    assert exported.returncode == 2
    assert f"will not export: {refusal(filled)}" in exported.stderr

    recorded = () if filled.revision == UNRECORDED else (filled.revision,)
    assert db.schema_status(engine).revisions == recorded
    assert snapshot(engine) == before


def test_db_upgrade_keeps_every_value_of_every_row(filled: Filled, tmp_path: Path) -> None:
    engine = filled.database.engine
    before = snapshot(engine)

    result = run_cli(filled.database, "db", "upgrade", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    if filled.revision == UNRECORDED:
        said = (
            "recorded the existing tables as revision 0001 "
            f"and upgraded to revision {HEAD_REVISION}"
        )
    else:
        said = f"upgraded the schema from revision {filled.revision} to {HEAD_REVISION}"
    assert said in result.stdout
    assert db.schema_status(engine).is_current
    # What was stored is stored as it was, in every column that was there.
    after = snapshot(engine)
    for name, columns in before.items():
        assert {column: after[name][column] for column in columns} == columns, name
    # And read back as the bot reads it: the values given, the new columns as migrated,
    # every time aware and in UTC.
    expected = expected_after_upgrade(filled)
    for name in TABLES:
        found = typed_rows(engine, name) if name in after else []
        assert found == expected[name], name
        for row in found:
            for column in head_table(name).columns:
                value = row[column.name]
                if isinstance(column.type, db.UTCDateTime) and value is not None:
                    assert value.tzinfo is UTC, (name, column.name)

    again = run_cli(filled.database, "db", "upgrade", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"already current at revision {HEAD_REVISION}; nothing to do" in again.stdout
    assert snapshot(engine) == after


def test_the_bot_carries_on_from_an_upgraded_database(
    filled: Filled, fake_slack: FakeSlack, clock: Clock, tmp_path: Path
) -> None:
    result = run_cli(filled.database, "db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bot = make_bot(filled.database, fake_slack, clock)
    old_entries = [e for e in filled.given["timeline_entries"] if e["incident_id"] == 2]
    live = [e for e in old_entries if e.get("deleted_at") is None]

    reply = bot.command("note Rebuilt the search index")

    assert reply.status == 200, reply.body
    with bot.services.sessions() as session:
        numbers = list(
            session.scalars(
                select(TimelineEntry.number)
                .where(TimelineEntry.incident_id == 2)
                .order_by(TimelineEntry.id)
            )
        )
    assert numbers == [*range(1, len(old_entries) + 1), len(old_entries) + 1]
    timeline = bot.command("timeline").visible
    for entry in live:
        assert entry["text"] in timeline
    assert "INC-3" in bot.command("start Logins fail", channel=SECOND_CHANNEL).text

    bot.command("close Index rebuilt")
    bot.wait()

    markdown = bot.fake.uploaded_text()
    assert markdown.startswith("# Postmortem: Search is slow")
    for entry in live:
        assert entry["text"] in markdown
    assert "meant for another channel" not in markdown
    assert "Rebuilt the search index" in markdown and "Index rebuilt" in markdown
    if filled.revision not in (UNRECORDED, "0001"):
        assert "graph.png" in markdown and "Bob" in markdown

    exported = run_cli(filled.database, "export", "INC-1", "--team", TEAM, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    for said in ("Errors at checkout", "Rolled back the deploy", "Certificate renewed"):
        assert said in exported.stdout
    assert "Renew certificates automatically" in exported.stdout


def test_incidents_closed_before_the_upgrade_are_recorded_as_published(
    filled: Filled, fake_slack: FakeSlack, clock: Clock, tmp_path: Path
) -> None:
    # Their postmortems were posted (or given up on) by the bot of their time: an upgrade
    # must not leave them pending, or the next start would post them all again.
    result = run_cli(filled.database, "db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    with filled.database.engine.connect() as connection:
        rows = connection.execute(
            select(Publication.incident_id, Publication.pending, Publication.channel_id)
        ).all()
    closed = [i for i in filled.given["incidents"] if i["status"] == "closed"]
    assert closed  # the filled database has one
    assert sorted(rows) == sorted((i["id"], False, i["channel_id"]) for i in closed)
    # And the first sweep of the upgraded bot posts none of them again, however late it is.
    bot = make_bot(filled.database, fake_slack, clock)
    clock.advance(days=30)
    assert publish.publish_pending(bot.services) == 0
    assert not fake_slack.calls_to("chat.postMessage") and not fake_slack.uploads
