"""A prototype of the note path BENCHMARKS.md proposes, served like `incident-bot serve`.

Not the bot: evidence for a proposed change to it, measured by the same harness. It keeps
what the bot promises (the signature checked by Bolt, the entry committed in the bot's own
tables before the acknowledgement, the same reply text, one JSON log line per command)
and changes only how the work is done:

- one Core statement, built once, finds the channel's open incident and takes the entry's
  short number (`UPDATE incidents ... RETURNING` four columns, instead of a SELECT that
  loads an ORM `Incident` and then that UPDATE), and a Core INSERT on the session's
  connection writes the entry (no unit-of-work flush);
- the reply is built as plain dicts rather than Block Kit objects validated on `to_dict()`;
- with `--serialize-writes` (SQLite), writers queue on a lock in the process before
  `BEGIN IMMEDIATE`, instead of sleeping in SQLite's busy handler.

`start` goes through the bot's own `incidents.start_incident`. Run as
`python -m bench.prototype --port N` with SLACK_SIGNING_SECRET, SLACK_API_URL and
DATABASE_URL set (the schema must exist).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from sqlalchemy import bindparam, insert, update
from sqlalchemy.orm import Session, sessionmaker

from bench.bare import BARE_TOKEN, build_wsgi, gunicorn_serve
from bot import db, incidents
from bot.models import Incident, IncidentStatus, TimelineEntry
from bot.slack import replies
from bot.slack import text as slack_text
from bot.web import WsgiApp

log = logging.getLogger("bench.prototype")
request_log = logging.getLogger("bot.requests")

# One statement finds the channel's open incident and takes the entry's short number.
NEXT_ENTRY = (
    update(Incident)
    .where(
        Incident.team_id == bindparam("in_team"),
        Incident.channel_id == bindparam("in_channel"),
        Incident.status == IncidentStatus.OPEN.value,
    )
    .values(last_entry_number=Incident.last_entry_number + 1)
    .returning(Incident.id, Incident.number, Incident.timezone, Incident.last_entry_number)
)
ADD_ENTRY = insert(TimelineEntry)


def _reply(text: str, *, in_channel: bool = False) -> dict[str, Any]:
    section = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    return {
        "text": text,
        "blocks": [section],
        "response_type": "in_channel" if in_channel else "ephemeral",
    }


def build_prototype_app(
    *, signing_secret: str, api_url: str, sessions: sessionmaker[Session], serialize: bool
) -> App:
    app = App(
        signing_secret=signing_secret,
        client=WebClient(token=BARE_TOKEN, base_url=api_url, timeout=10),
        process_before_response=True,
        token_verification_enabled=False,
        logger=logging.getLogger("bench.prototype.bolt"),
    )
    writers = threading.Lock()

    @contextlib.contextmanager
    def write_turn() -> Iterator[None]:
        if not serialize:
            yield
            return
        with writers:
            yield

    def note(session: Session, command: dict[str, Any], text: str, now: datetime) -> Any:
        text = incidents.check_text(text)
        connection = session.connection()
        found = connection.execute(
            NEXT_ENTRY, {"in_team": command["team_id"], "in_channel": command["channel_id"]}
        ).one_or_none()
        if found is None:
            return _reply("There is no open incident in this channel.")
        connection.execute(
            ADD_ENTRY,
            {
                "incident_id": found.id,
                "number": found.last_entry_number,
                "occurred_at": now,
                "recorded_at": now,
                "author_id": command["user_id"],
                "kind": "note",
                "text": text,
            },
        )
        when = replies.local_time(now, found.timezone, now=now)
        return _reply(f"Added to *INC-{found.number}* at {when}: {replies.quoted(text)}")

    def start(session: Session, command: dict[str, Any], text: str, now: datetime) -> Any:
        incident = incidents.start_incident(
            session,
            team_id=command["team_id"],
            channel_id=command["channel_id"],
            user_id=command["user_id"],
            title=text,
            started_at=now,
            timezone="UTC",
            now=now,
        )
        return _reply(f"{incident.reference} opened: {replies.quoted(text)}", in_channel=True)

    handlers = {"note": note, "start": start}

    def handle_incident(ack: Ack, command: dict[str, Any]) -> None:
        began = time.perf_counter()
        name, _, rest = command.get("text", "").strip().partition(" ")
        handler = handlers.get(name.lower())
        if handler is None:
            ack(text="The prototype knows only start and note.")
            return
        with write_turn(), sessions() as session:
            reply = handler(session, command, slack_text.decode(rest.strip()), datetime.now(UTC))
            session.commit()
        ack(**reply)
        request_log.info(
            json.dumps(
                {
                    "event": "command",
                    "team": command.get("team_id"),
                    "channel": command.get("channel_id"),
                    "user": command.get("user_id"),
                    "subcommand": name,
                    "outcome": "ok",
                    "latency_ms": round((time.perf_counter() - began) * 1000, 1),
                }
            )
        )

    app.command("/incident")(handle_incident)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prototype", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--serialize-writes", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    signing_secret = os.environ["SLACK_SIGNING_SECRET"]
    api_url = os.environ["SLACK_API_URL"]
    database_url = os.environ["DATABASE_URL"]

    def build() -> WsgiApp:
        engine = db.make_engine(database_url)
        app = build_prototype_app(
            signing_secret=signing_secret,
            api_url=api_url,
            sessions=db.make_session_factory(engine),
            serialize=args.serialize_writes,
        )
        return build_wsgi(app)

    gunicorn_serve(
        build, host=args.host, port=args.port, workers=args.workers, threads=args.threads
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
