"""Where the CPU of one `/incident note` goes, measured in-process, piece by piece.

`python -m bench.note_cost [--postgres URL]` dispatches signed requests straight into the
real Bolt app (no HTTP) and into the bare one, then times the parts of the bot's note path
on their own, and the same work done the way BENCHMARKS.md proposes (SQLAlchemy Core
statements built once, the reply as plain dicts). CPU microseconds per call, the median of
a few batches; the machine's other work moves the figures, the differences hold.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slack_bolt.request import BoltRequest
from sqlalchemy import event, update
from sqlalchemy.orm.attributes import set_committed_value

from bench.bare import build_bare_app
from bench.prototype import ADD_ENTRY, NEXT_ENTRY  # the proposed statements
from bench.servers import PostgresSchema
from bot import db, incidents
from bot.config import Settings
from bot.demo import FakeSlack, SlashCommand
from bot.models import Incident
from bot.notes import NewNote, _Waiting
from bot.slack import replies

SECRET = "note-cost-secret"
TEAM = "T0COST0001"
CHANNEL = "C0COST0001"
USER = "U0COST0001"


def cpu_us(run: Callable[[], object], *, count: int, batches: int = 5) -> float:
    """CPU microseconds per call: the median over `batches` batches of `count` calls."""
    for _ in range(min(200, count)):
        run()
    results = []
    for _ in range(batches):
        began = time.process_time()
        for _ in range(count):
            run()
        results.append((time.process_time() - began) / count * 1e6)
    return statistics.median(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.note_cost", description=__doc__)
    parser.add_argument("--postgres", help="measure on this PostgreSQL server (a fresh schema)")
    parser.add_argument("--count", type=int, default=1000, help="calls per batch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from bot.app import build_app
    from bot.services import build_services

    fake = FakeSlack(users={USER: "Africa/Nairobi"}, team_id=TEAM).start()
    schema = PostgresSchema(args.postgres) if args.postgres else None
    tmp = tempfile.TemporaryDirectory(prefix="note-cost-")
    try:
        if schema is not None:
            schema.create()
            os.environ["PGOPTIONS"] = schema.pgoptions
            url = args.postgres
        else:
            url = f"sqlite:///{Path(tmp.name) / 'cost.db'}"
        settings = dataclasses.replace(
            Settings.load(environ={"DATABASE_URL": url}, env_file=None),
            slack_bot_token="xoxb-note-cost",
            slack_signing_secret=SECRET,
            slack_api_url=fake.api_url,
        )
        engine = db.make_engine(url)
        db.create_schema(engine)
        services = build_services(settings, engine=engine, create_schema=False)
        app = build_app(settings, services)
        bare = build_bare_app(signing_secret=SECRET, api_url=fake.api_url)
        # The bot logs one JSON line per command; send it where a server's stderr would go.
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
            stream=open(os.devnull, "w"),  # lives as long as the process
        )
        command = SlashCommand(secret=SECRET, team_id=TEAM, channel_id=CHANNEL, user_id=USER)

        def dispatch(target: Any, text: str) -> Any:
            body, headers = command.signed(text)
            return target.dispatch(BoltRequest(body=body, headers=dict(headers)))

        started = dispatch(app, "start Measuring the note path")
        assert started.status == 200, started.body
        sessions, now = services.sessions, datetime.now(UTC)
        with sessions() as session:
            incident = incidents.find_open_incident(session, team_id=TEAM, channel_id=CHANNEL)
            assert incident is not None

        def session_only() -> None:
            with sessions() as session:
                session.connection()
                session.commit()

        def session_find() -> None:
            with sessions() as session:
                incidents.find_open_incident(session, team_id=TEAM, channel_id=CHANNEL)
                session.commit()

        def session_find_add() -> None:
            with sessions() as session:
                found = incidents.find_open_incident(session, team_id=TEAM, channel_id=CHANNEL)
                assert found is not None
                incidents.add_entry(
                    session, incident=found, text="hello", occurred_at=now, author_id=USER, now=now
                )
                session.commit()

        def session_find_number() -> None:
            with sessions() as session:
                found = incidents.find_open_incident(session, team_id=TEAM, channel_id=CHANNEL)
                assert found is not None
                incidents.next_entry_number(session, incident=found)
                session.commit()

        def session_find_number_committed() -> None:
            # The same UPDATE..RETURNING, but the number is set on the Incident as committed
            # state, so the flush does not write it a second time.
            with sessions() as session:
                found = incidents.find_open_incident(session, team_id=TEAM, channel_id=CHANNEL)
                assert found is not None
                number = session.execute(
                    update(Incident)
                    .where(Incident.id == found.id)
                    .values(last_entry_number=Incident.last_entry_number + 1)
                    .returning(Incident.last_entry_number)
                    .execution_options(synchronize_session=False)
                ).scalar_one()
                set_committed_value(found, "last_entry_number", number)
                session.commit()

        def core_find_add() -> None:
            with sessions() as session:
                connection = session.connection()
                found = connection.execute(
                    NEXT_ENTRY, {"in_team": TEAM, "in_channel": CHANNEL}
                ).one()
                values = {
                    "incident_id": found.id,
                    "number": found.last_entry_number,
                    "occurred_at": now,
                    "recorded_at": now,
                    "author_id": USER,
                    "kind": "note",
                    "text": "hello",
                }
                connection.execute(ADD_ENTRY, values)
                session.commit()

        writer = services.notes

        def new_note(channel: str) -> NewNote:
            return NewNote(
                team_id=TEAM,
                channel_id=channel,
                author_id=USER,
                text="hello",
                occurred_at=now,
                recorded_at=now,
            )

        def writer_alone() -> None:
            writer.add(new_note(CHANNEL), timeout=10)

        # A batch as group commit makes one under load: 8 notes from 8 channels, written in
        # one transaction (through the writer's own batch method, so no thread has to wait).
        batch_channels = [f"C0COSTB{n:03d}" for n in range(8)]
        with sessions() as session:
            for channel in batch_channels:
                incidents.start_incident(
                    session,
                    team_id=TEAM,
                    channel_id=channel,
                    user_id=USER,
                    title="A batch",
                    started_at=now,
                    timezone="UTC",
                    now=now,
                )
            session.commit()
        batch_notes = [new_note(channel) for channel in batch_channels]

        def writer_batch() -> None:
            batch = [_Waiting(note, time.monotonic() + 10) for note in batch_notes]
            assert writer._write_together(batch)

        sqlite = engine.dialect.name == "sqlite"
        mark = "?" if sqlite else "%s"
        take_number = (
            "UPDATE incidents SET last_entry_number = last_entry_number + 1 "
            f"WHERE team_id = {mark} AND channel_id = {mark} AND status = 'open' "
            "RETURNING id, number, timezone, last_entry_number"
        )
        add_entry = (
            "INSERT INTO timeline_entries (incident_id, number, occurred_at, recorded_at, "
            f"author_id, kind, text) VALUES ({', '.join([mark] * 7)})"
        )
        stamp = now.replace(tzinfo=None) if sqlite else now

        raw_connections: list[Any] = []

        def dbapi(notes_per_commit: int) -> Callable[[], None]:
            """The database work with the driver alone: the floor under any Python layer."""
            raw = engine.raw_connection()
            raw_connections.append(raw)

            def run() -> None:
                cursor = raw.cursor()
                if sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                for _ in range(notes_per_commit):
                    cursor.execute(take_number, (TEAM, CHANNEL))
                    found = cursor.fetchone()
                    assert found is not None
                    values = (found[0], found[3], stamp, stamp, USER, "note", "hello")
                    cursor.execute(add_entry, values)
                raw.commit()
                cursor.close()

            return run

        def reply_blocks() -> None:
            replies.noted(
                incident.reference,
                incident.timezone,
                occurred_at=now,
                text="hello there",
                now=now,
                number=1,
            ).as_ack()

        def reply_dict() -> dict[str, Any]:
            when = replies.local_time(now, incident.timezone, now=now)
            text = f"Added to *{incident.reference}* at {when}: {replies.quoted('hello there')}"
            section = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
            return {"text": text, "blocks": [section], "response_type": "ephemeral"}

        request_log = logging.getLogger("bot.requests")

        def log_line() -> None:
            request_log.info(
                json.dumps(
                    {
                        "event": "command",
                        "team": TEAM,
                        "channel": CHANNEL,
                        "user": USER,
                        "subcommand": "note",
                        "outcome": "ok",
                        "latency_ms": 1.0,
                    }
                )
            )

        count = args.count
        figures = {
            "bare Bolt: dispatch an ack-only /incident": cpu_us(
                lambda: dispatch(bare, "note hello"), count=count
            ),
            "bot: dispatch /incident note (everything)": cpu_us(
                lambda: dispatch(app, "note hello"), count=count
            ),
            "session: open, BEGIN, COMMIT, close": cpu_us(session_only, count=count),
            "session + find_open_incident (ORM Incident)": cpu_us(session_find, count=count),
            "session + find_open_incident + next_entry_number + commit": cpu_us(
                session_find_number, count=count
            ),
            "  the same, the number set with set_committed_value (no 2nd UPDATE)": cpu_us(
                session_find_number_committed, count=count
            ),
            "session + find_open_incident + add_entry + commit": cpu_us(
                session_find_add, count=count
            ),
            "reply: replies.noted().as_ack() (Block Kit objects)": cpu_us(
                reply_blocks, count=count
            ),
            "log: one JSON line through logging": cpu_us(log_line, count=count),
            "proposed: session + Core UPDATE..RETURNING + Core INSERT + commit": cpu_us(
                core_find_add, count=count
            ),
            "proposed: the same reply as plain dicts": cpu_us(reply_dict, count=count),
            "bot.notes: NoteWriter.add, one note alone (its own transaction)": cpu_us(
                writer_alone, count=count
            ),
            "bot.notes: a batch of 8 notes from 8 channels, per note": cpu_us(
                writer_batch, count=max(1, count // 8)
            )
            / 8,
            "driver only: UPDATE..RETURNING + INSERT + COMMIT, one note per commit": cpu_us(
                dbapi(1), count=count
            ),
            "driver only: the same, per note, 8 notes per commit": cpu_us(
                dbapi(8), count=max(1, count // 8)
            )
            / 8,
        }
        for raw in raw_connections:
            raw.close()
        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(" ".join(statement.split())[:100])

        event.listen(engine, "before_cursor_execute", record)
        dispatch(app, "note counted")
        event.remove(engine, "before_cursor_execute", record)
        database = "postgresql" if schema else "sqlite"
        sys.stdout.write(f"CPU per call, {database} ({count} calls x 5 batches, median):\n")
        for name, value in figures.items():
            sys.stdout.write(f"  {value:9.1f} us  {name}\n")
        sys.stdout.write("Statements sent for one note (COMMIT is not a cursor statement):\n")
        for statement in statements:
            sys.stdout.write(f"  {statement}\n")
        if args.json:
            found = {"database": database, "cpu_us": figures, "statements": statements}
            args.json.write_text(json.dumps(found, indent=2))
        services.followups.wait(timeout=10)
        engine.dispose()
    finally:
        fake.stop()
        if schema is not None:
            schema.drop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
