"""The `incident-bot` console script: serve, socket, db upgrade, export and demo."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings
from bot.db import SchemaError

if TYPE_CHECKING:
    from slack_sdk.socket_mode.builtin import SocketModeClient

log = logging.getLogger("bot")

# Events and commands `socket` handles at once (slack_sdk's default for Socket Mode).
SOCKET_THREADS = 10


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # `db upgrade` says what it did; Alembic's own notes would only add noise.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        result: int = args.run(args)
        return result
    except ConfigError as error:
        print(f"incident-bot: configuration error: {error}", file=sys.stderr)
        return 2
    except SchemaError as error:
        print(f"incident-bot: cannot use the database: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-bot",
        description="A self-hosted Slack incident bot that writes your postmortems.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="answer Slack over HTTP at POST /slack/events")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=_port, default=3000, help="port to listen on (default 3000)")
    serve.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--threads", type=_positive, default=8, help="threads per worker (default 8)"
    )
    serve.set_defaults(run=_serve)

    socket = commands.add_parser(
        "socket", help="answer Slack over Socket Mode (no public URL needed)"
    )
    socket.set_defaults(run=_socket)

    database = commands.add_parser("db", help="manage the database schema")
    actions = database.add_subparsers(required=True, metavar="ACTION")
    upgrade = actions.add_parser(
        "upgrade",
        help="create or upgrade the schema of DATABASE_URL (before `serve`, after every upgrade)",
    )
    upgrade.set_defaults(run=_db_upgrade)

    export = commands.add_parser("export", help="print an incident's postmortem from the database")
    export.add_argument("reference", help="INC-<n>")
    export.add_argument(
        "--format", choices=["md", "html"], default="md", help="Markdown or HTML (default md)"
    )
    export.add_argument("--team", help="the workspace (team id), when the database holds several")
    export.set_defaults(run=_export)

    demo = commands.add_parser(
        "demo", help="run a sample incident with no Slack account or network"
    )
    demo.set_defaults(run=_demo)
    return parser


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return number


def _port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:  # 0: any free port
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0 to 65535)")
    return number


def _serve(args: argparse.Namespace) -> int:
    from bot import web

    settings = Settings.load(require=("SLACK_SIGNING_SECRET",))
    if not settings.multi_workspace and settings.slack_bot_token is None:
        raise ConfigError(
            "SLACK_BOT_TOKEN is not set; set it to run in one workspace, or set "
            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install in several."
        )
    _check_templates(settings)
    refused = _refuse_unless_schema_current(settings)
    if refused:
        return refused
    if args.workers > 1 and settings.database_url.startswith("sqlite"):
        # Threads of one process queue for SQLite's lock in order; processes cannot, and one
        # that waits sleeps in SQLite's busy handler (BENCHMARKS.md: p99 73 -> 562 ms).
        log.warning(
            "%d workers share one SQLite file: under load, commands wait for each other's "
            "locks much longer than with one worker. Use --workers 1 with SQLite, or "
            "PostgreSQL for several workers.",
            args.workers,
        )
    if not settings.multi_workspace:
        refused = _refuse_unless_slack_accepts_the_token(settings)
        if refused:
            return refused
    web.serve(settings, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def _socket(_args: argparse.Namespace) -> int:
    from slack_sdk.errors import SlackApiError

    from bot.app import build_app
    from bot.services import FOLLOWUP_GRACE_S, build_services
    from bot.slack.publish import start_sweeper
    from bot.socket_mode import IncidentSocketModeHandler

    settings = Settings.load(require=("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"))
    if settings.multi_workspace:
        # The app would go by installations alone, which only `serve` takes (/slack/install
        # and Slack's OAuth redirect are HTTP), and leave SLACK_BOT_TOKEN unused.
        raise ConfigError(
            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are set, but `socket` runs in one "
            "workspace on SLACK_BOT_TOKEN: installing in several workspaces needs `serve`. "
            "Unset both to use Socket Mode."
        )
    _check_templates(settings)
    refused = _refuse_unless_schema_current(settings) or (
        _refuse_unless_slack_accepts_the_token(settings)
    )
    if refused:
        return refused
    services = build_services(settings, create_schema=False, request_threads=SOCKET_THREADS)
    assert settings.slack_app_token is not None  # required above
    handler = IncidentSocketModeHandler(
        build_app(settings, services), settings.slack_app_token, concurrency=SOCKET_THREADS
    )
    # slack_sdk logs a WebSocket it could not open and goes on, retrying every few seconds.
    # After a disconnect that is what we want; on a first start it hides a wrong URL, a
    # proxy or a firewall behind "answering Slack" while nothing is answered.
    # Its monitor would also try again at once, while this start gives up.
    failures: list[Exception] = []
    handler.client.on_error_listeners.append(failures.append)
    handler.client.default_auto_reconnect_enabled = False
    try:
        handler.connect()  # type: ignore[no-untyped-call]
    except SlackApiError as error:  # apps.connections.open, the one call made before serving
        if error.response.status_code != 200:  # not Slack's answer to a token (a 5xx, a 404)
            print(
                f"incident-bot: {settings.slack_api_url} (SLACK_API_URL) could not open a "
                f"Socket Mode connection (apps.connections.open): HTTP "
                f"{error.response.status_code}",
                file=sys.stderr,
            )
            return 1
        raise ConfigError(
            f"SLACK_APP_TOKEN was refused by Slack ({error.response.get('error')}); it must be "
            "an app-level token with connections:write, from the app's Basic Information page."
        ) from None
    handler.client.on_error_listeners.remove(failures.append)
    if not handler.client.is_connected():
        reason = str(failures[0]) if failures else "it did not answer the WebSocket handshake"
        print(
            f"incident-bot: could not open the Socket Mode connection at "
            f"{_without_query(handler.client.wss_uri)} (the URL apps.connections.open "
            f"handed out): {reason}",
            file=sys.stderr,
        )
        handler.close()  # type: ignore[no-untyped-call]
        return 1
    handler.client.default_auto_reconnect_enabled = True
    handler.client.auto_reconnect_enabled = True
    start_sweeper(services)  # what a stopped worker left unpublished
    log.info("answering Slack over Socket Mode; stop with SIGTERM or Ctrl-C")
    _wait_for_a_stop(handler.client.stopped)
    _finish_envelopes(handler.client)
    handler.close()  # type: ignore[no-untyped-call]
    # Then give queued follow-ups (a close's postmortem) the same grace as `serve` does.
    services.stop(FOLLOWUP_GRACE_S)
    if handler.client.refused is not None:  # nothing more will reach it until it is fixed
        print(f"incident-bot: stopped: {handler.client.refused}.", file=sys.stderr)
        return 2
    return 0


def _without_query(url: str | None) -> str:
    """A URL without its query, which for Socket Mode holds a ticket to connect with."""
    return str(url).split("?", 1)[0]


def _finish_envelopes(client: SocketModeClient) -> None:
    """Take no more envelopes and let the listeners running finish, on a connection still open.

    The client's close() disconnects first and waits for its listeners after, so a command
    being carried out was recorded but its answer had no connection to go on: the person
    was told it failed, as gunicorn's graceful stop does not do to a request it serves.
    Envelopes not yet taken are left unacknowledged; Slack delivers them again.
    """
    client.closed = True  # its message processor stops taking envelopes from the queue
    client.message_processor.shutdown()  # type: ignore[no-untyped-call]
    client.message_workers.shutdown(wait=True)


def _wait_for_a_stop(stop: threading.Event) -> None:
    """Block until SIGTERM (a deploy, systemd, Kubernetes) or SIGINT (Ctrl-C) arrives, or
    `stop` is set otherwise (Slack refused the connection for good)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    stop.wait()


def _refuse_unless_slack_accepts_the_token(settings: Settings) -> int:
    """0 when Slack accepts SLACK_BOT_TOKEN; else say why not and return non-zero.

    Bolt asks Slack the same (auth.test) as it builds the app, in every worker, and a token
    that was mistyped or revoked would end each of them with a traceback.
    """
    from slack_sdk.errors import SlackApiError

    from bot.services import web_client

    try:
        web_client(settings, settings.slack_bot_token).auth_test()
    except SlackApiError as error:
        if error.response.status_code != 200:  # not Slack's answer to a token (a 404, a 5xx)
            print(
                f"incident-bot: {settings.slack_api_url} (SLACK_API_URL) did not answer as "
                f"Slack's Web API does: HTTP {error.response.status_code}",
                file=sys.stderr,
            )
            return 1
        raise ConfigError(
            f"SLACK_BOT_TOKEN was refused by Slack ({error.response.get('error')}); copy the "
            "Bot User OAuth Token from the app's OAuth & Permissions page again."
        ) from None
    except OSError as error:  # connection refused, a name that does not resolve, a timeout
        print(
            f"incident-bot: cannot reach Slack at {settings.slack_api_url} (SLACK_API_URL): "
            f"{error}",
            file=sys.stderr,
        )
        return 1
    return 0


def _check_templates(settings: Settings) -> None:
    """A template in TEMPLATES_DIR that cannot render (bad syntax, a name `pm` does not have)
    stops start-up, instead of failing the first close."""
    from bot import postmortem

    if settings.templates_dir is None:
        return
    try:
        postmortem.check_templates(postmortem.build_environment(settings.templates_dir))
    except postmortem.TemplateCheckError as error:
        raise ConfigError(f"TEMPLATES_DIR holds a template that fails: {error}") from None


def _refuse_unless_schema_current(settings: Settings, *, doing: str = "start") -> int:
    """0 when the database's schema is this version's; else say why not and return non-zero.

    `serve`, `socket` and `export` never create or upgrade the schema themselves, not even an
    empty database's: changing the schema is a deliberate step of a deployment (workers of the
    previous version may still be running on it), and an empty database more often means
    a mistyped DATABASE_URL than a first start.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from bot import db

    refused = _refuse_an_in_memory_database(settings)
    if refused:
        return refused
    missing = _missing_sqlite_file(settings.database_url)
    if missing:
        print(
            f"incident-bot: there is no database at {missing} (DATABASE_URL="
            f"{_shown(settings.database_url)}). Create it with `incident-bot db upgrade`.",
            file=sys.stderr,
        )
        return 2
    engine = db.make_engine(settings.database_url)
    try:
        status = db.schema_status(engine)
    except SQLAlchemyError as error:
        print(
            f"incident-bot: cannot read the database at {_shown(settings.database_url)}: "
            f"{_reason(error)}",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()
    if status.is_current:
        return 0
    print(
        f"incident-bot: will not {doing}: {status.describe()} "
        f"(DATABASE_URL={_shown(settings.database_url)}).\n{status.advice()}",
        file=sys.stderr,
    )
    return 2


def _db_upgrade(_args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot import db

    settings = Settings.load()
    refused = _refuse_an_in_memory_database(settings)
    if refused:
        return refused
    where = _shown(settings.database_url)
    engine = db.make_engine(settings.database_url)
    try:
        upgrade = db.upgrade_schema(engine)
    except SchemaError as error:
        print(f"incident-bot: cannot upgrade the database at {where}: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        print(
            f"incident-bot: could not upgrade the database at {where} "
            f"(it is upgraded in one transaction; nothing was changed): {_reason(error)}",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()
    print(f"incident-bot: database {where}: {upgrade.describe()}")
    return 0


def _refuse_an_in_memory_database(settings: Settings) -> int:
    """2, having said why, when DATABASE_URL is SQLite in memory: each process (and each
    thread of a worker) would have a database of its own, gone when it ends, so an upgrade
    would create a schema no one sees and nothing recorded would be kept."""
    from sqlalchemy.engine import make_url

    from bot import db

    if not db.in_memory(make_url(settings.database_url)):
        return 0
    print(
        f"incident-bot: DATABASE_URL={_shown(settings.database_url)} is a SQLite database in "
        "memory, which keeps nothing once the process ends; name a file, e.g. "
        "sqlite:///incidents.db.",
        file=sys.stderr,
    )
    return 2


def _missing_sqlite_file(database_url: str) -> str | None:
    """The path of a SQLite database file that does not exist (connecting would create it)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from bot import db

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or db.in_memory(url) or url.database is None:
        return None
    return None if Path(url.database).exists() else url.database


def _shown(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def _reason(error: Exception) -> str:
    # The driver's own message, without SQLAlchemy's echo of the statement and its parameters.
    orig = getattr(error, "orig", None)
    return str(orig if orig is not None else error).strip()


def _export(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from bot import db, incidents, postmortem
    from bot.services import utc_now

    # ASCII digits, and few enough for the database's integer column (numbers count per workspace).
    match = re.fullmatch(r"(?:INC-)?0*(\d{1,9})", args.reference.strip(), re.IGNORECASE | re.ASCII)
    if match is None:
        print(
            f"incident-bot: {args.reference!r} is not an incident reference like INC-7",
            file=sys.stderr,
        )
        return 2
    settings = Settings.load()
    # Export only reads: a missing or older schema is refused as `serve` refuses it.
    refused = _refuse_unless_schema_current(settings, doing="export")
    if refused:
        return refused
    engine = db.make_engine(settings.database_url)
    try:
        # Without the write lock on SQLite: a large export takes seconds, and the bot's
        # writers go on meanwhile. One snapshot throughout, on both databases.
        with db.make_session_factory(db.read_only(engine))() as session:
            incident = incidents.get_incident(
                session, team_id=args.team, number=int(match.group(1))
            )
            context = postmortem.build_context(session, incident=incident, now=utc_now())
    except incidents.IncidentNotFoundError as error:
        print(f"incident-bot: {error}", file=sys.stderr)
        return 1
    except SQLAlchemyError as error:
        where = _shown(settings.database_url)
        print(
            f"incident-bot: cannot read the database at {where}: {_reason(error)}", file=sys.stderr
        )
        return 1
    finally:
        engine.dispose()
    fmt = postmortem.Format(args.format)
    env = postmortem.build_environment(settings.templates_dir)
    try:
        rendered = postmortem.render(env, context, fmt)
    except Exception as error:  # a template in TEMPLATES_DIR can fail in any way Python can
        print(
            f"incident-bot: the postmortem template {postmortem.failure(env, error, fmt)}",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(rendered)
    return 0


def _demo(_args: argparse.Namespace) -> int:
    from bot import demo

    return demo.run()
