"""The `incident-bot` console script: serve, socket, export and demo."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from bot.config import ConfigError, Settings

log = logging.getLogger("bot")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        result: int = args.run(args)
        return result
    except ConfigError as error:
        print(f"incident-bot: configuration error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-bot",
        description="A self-hosted Slack incident bot that writes your postmortems.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="answer Slack over HTTP at POST /slack/events")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--threads", type=int, default=8, help="threads per worker (default 8)")
    serve.set_defaults(run=_serve)

    socket = commands.add_parser(
        "socket", help="answer Slack over Socket Mode (no public URL needed)"
    )
    socket.set_defaults(run=_socket)

    export = commands.add_parser("export", help="print an incident's postmortem from the database")
    export.add_argument("reference", help="INC-<n>")
    export.add_argument("--format", choices=["md", "html"], default="md")
    export.add_argument("--team", help="the workspace (team id), when the database holds several")
    export.set_defaults(run=_export)

    demo = commands.add_parser(
        "demo", help="run a sample incident with no Slack account or network"
    )
    demo.set_defaults(run=_demo)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from bot import db, web

    settings = Settings.load(require=("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"))
    db.create_schema(db.make_engine(settings.database_url))
    web.serve(settings, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def _socket(_args: argparse.Namespace) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.app import build_app
    from bot.services import build_services

    settings = Settings.load(require=("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"))
    app = build_app(settings, build_services(settings))
    SocketModeHandler(app, settings.slack_app_token).start()  # type: ignore[no-untyped-call]
    return 0


def _export(args: argparse.Namespace) -> int:
    from bot import db, incidents, postmortem
    from bot.services import utc_now

    match = re.fullmatch(r"(?:INC-)?(\d+)", args.reference.strip(), re.IGNORECASE)
    if match is None:
        print(
            f"incident-bot: {args.reference!r} is not an incident reference like INC-7",
            file=sys.stderr,
        )
        return 2
    settings = Settings.load()
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    with db.make_session_factory(engine)() as session:
        try:
            incident = incidents.get_incident(
                session, team_id=args.team, number=int(match.group(1))
            )
        except incidents.IncidentNotFoundError as error:
            print(f"incident-bot: {error}", file=sys.stderr)
            return 1
        context = postmortem.build_context(session, incident=incident, now=utc_now())
    env = postmortem.build_environment(settings.templates_dir)
    sys.stdout.write(postmortem.render(env, context, postmortem.Format(args.format)))
    return 0


def _demo(_args: argparse.Namespace) -> int:
    from bot import demo

    return demo.run()
