"""`GET /healthz`: the database answers. `GET /readyz`: it answers and its schema is current.

First through the WSGI app in-process, then from a real `incident-bot serve` over HTTP.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from alembic import command
from sqlalchemy import text

from bot import db
from bot.app import build_app
from bot.demo import FakeSlack, Fault, SlashCommand
from bot.services import build_services
from bot.web import WsgiApp, build_wsgi
from tests.conftest import ALICE, TEAM, Bot, Database, make_settings
from tests.test_migrations import HEAD, cli_env, run_cli

Answer = tuple[int, dict[str, Any]]


def get(wsgi: WsgiApp, path: str) -> Answer:
    """GET `path` from the WSGI app: the status code and the JSON body."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    statuses: list[int] = []

    def start_response(status: str, _headers: list[tuple[str, str]], _exc: Any = None) -> Any:
        statuses.append(int(status.split()[0]))

    body = b"".join(wsgi(environ, start_response))  # type: ignore[arg-type]
    return statuses[0], json.loads(body)


def set_revision(database: Database, revision: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def undo_migrations(database: Database) -> None:
    """Take the database back to no schema at all, as a new one would be."""
    with db.migration_connection(database.engine) as connection:
        command.downgrade(db.alembic_config(connection), "base")


@pytest.fixture
def wsgi(bot: Bot) -> WsgiApp:
    return build_wsgi(bot.app, bot.services)


# --- in-process ---------------------------------------------------------------------------


def test_both_answer_200_on_a_current_schema(wsgi: WsgiApp) -> None:
    assert get(wsgi, "/healthz") == (200, {"database": "ok"})
    assert get(wsgi, "/readyz") == (
        200,
        {"database": "ok", "schema": "current", "revision": list(HEAD), "head": list(HEAD)},
    )


def test_readyz_is_503_without_the_schema_until_it_is_upgraded(
    wsgi: WsgiApp, database: Database
) -> None:
    undo_migrations(database)

    status, body = get(wsgi, "/readyz")
    assert (status, body["database"], body["schema"]) == (503, "ok", "missing")
    assert "no incident-bot schema" in body["detail"]
    assert "`incident-bot db upgrade`" in body["fix"]
    assert get(wsgi, "/healthz") == (200, {"database": "ok"})  # alive, only not ready

    db.upgrade_schema(database.engine)

    assert get(wsgi, "/readyz")[0] == 200


def test_readyz_is_503_on_a_revision_this_version_does_not_know(
    wsgi: WsgiApp, database: Database
) -> None:
    set_revision(database, "f00dfeed")

    status, body = get(wsgi, "/readyz")

    assert (status, body["schema"], body["revision"]) == (503, "unknown", ["f00dfeed"])
    assert "does not know" in body["detail"]


def test_both_answer_503_when_the_database_does_not(
    db_kind: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'no such folder' / 'incidents.db'}"
        if db_kind == "sqlite"
        else f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    )
    settings = make_settings(url, fake_slack.api_url)
    services = build_services(settings, create_schema=False)
    try:
        wsgi = build_wsgi(build_app(settings, services), services)

        assert get(wsgi, "/healthz") == (503, {"database": "unreachable"})
        status, body = get(wsgi, "/readyz")
        assert (status, body["database"]) == (503, "unreachable")
    finally:
        services.engine.dispose()


# --- `incident-bot serve` over HTTP -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str) -> Answer:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def serve_env(database: Database, fake_slack: FakeSlack) -> dict[str, str]:
    return cli_env(
        database,
        {
            "SLACK_BOT_TOKEN": "xoxb-x",
            "SLACK_SIGNING_SECRET": "s",
            "SLACK_API_URL": fake_slack.api_url,
        },
    )


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base: str
    log: Path


@contextmanager
def served(serve_env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """`incident-bot serve` on a free port, once it answers /healthz; stopped at the end."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=serve_env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{base}/healthz"):
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"serve did not answer:\n{log.read_text()}"
            time.sleep(0.1)
        yield Served(process=process, base=base, log=log)
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def serving(serve_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The base URL of a running `incident-bot serve`."""
    with served(serve_env, tmp_path) as server:
        yield server.base


def serve_refused(serve_env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`incident-bot serve` run to its end, as when it refuses to start."""
    return subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--port", str(free_port())],
        env=serve_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_refuses_a_database_without_the_schema(
    database: Database, serve_env: dict[str, str], tmp_path: Path
) -> None:
    undo_migrations(database)

    result = serve_refused(serve_env, tmp_path)

    assert result.returncode == 2
    assert "Run `incident-bot db upgrade`" in result.stderr

    upgrade = run_cli(database, "db", "upgrade", cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"created the schema at revision {HEAD[0]}" in upgrade.stdout


def test_yesterdays_database_is_refused_then_upgraded_and_served_with_its_incidents(
    bot: Bot, database: Database, serve_env: dict[str, str], tmp_path: Path
) -> None:
    """An operator of the release before 0004: its database, with an incident in it, at 0003;
    `serve` says to upgrade, `db upgrade` keeps everything, and `serve` then carries on."""
    assert "opened" in bot.command("start 5:00 AM - Checkout is down").text
    assert "Added" in bot.command("note 5:10 AM - rolled back").text
    assert "closed" in bot.command("close 5:40 AM - all green").text
    bot.wait()
    with database.engine.connect() as connection:
        rows = "SELECT number, text FROM timeline_entries ORDER BY number"
        entries = connection.execute(text(rows)).all()
        assert [entry_text for _number, entry_text in entries] == ["rolled back", "all green"]
        assert connection.execute(text("SELECT COUNT(*) FROM postmortems")).scalar() == 1
    # Alembic's downgrade is the way back to the release before; it keeps the data.
    with db.migration_connection(database.engine) as connection:
        command.downgrade(db.alembic_config(connection), "0003")
    with database.engine.connect() as connection:
        assert connection.execute(text(rows)).all() == entries
        assert connection.execute(text("SELECT COUNT(*) FROM postmortems")).scalar() == 1

    refused = serve_refused(serve_env, tmp_path)
    assert refused.returncode == 2
    assert "schema is at revision 0003, older than this version's" in refused.stderr
    assert "Run `incident-bot db upgrade`" in refused.stderr
    assert db.schema_status(database.engine).revisions == ("0003",)

    upgrade = run_cli(database, "db", "upgrade", cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"upgraded the schema from revision 0003 to {HEAD[0]}" in upgrade.stdout

    with served(serve_env, tmp_path) as server:
        assert http_get(f"{server.base}/readyz")[0] == 200
        slash = SlashCommand(secret="s", team_id=TEAM, channel_id="C0TEST0001", user_id=ALICE)

        def command_text(typed: str) -> str:
            body, headers = slash.signed(typed)
            request = urllib.request.Request(f"{server.base}/slack/events", body.encode(), headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(json.loads(response.read())["text"])

        assert "INC-1 reopened" in command_text("reopen the error rate is back")
        assert "Added to *INC-1*" in command_text("note rolled back again")

    with database.engine.connect() as connection:
        after = connection.execute(text(rows)).all()
        assert connection.execute(text("SELECT COUNT(*) FROM postmortems")).scalar() == 1
    assert after[: len(entries)] == entries
    assert after[-1][1] == "rolled back again"


def test_served_health_checks_follow_the_database(database: Database, serving: str) -> None:
    assert http_get(f"{serving}/healthz") == (200, {"database": "ok"})
    assert http_get(f"{serving}/readyz")[0] == 200

    set_revision(database, "f00dfeed")  # as if a newer version had upgraded it

    status, body = http_get(f"{serving}/readyz")
    assert (status, body["schema"]) == (503, "unknown")
    assert http_get(f"{serving}/healthz") == (200, {"database": "ok"})

    set_revision(database, HEAD[0])

    assert http_get(f"{serving}/readyz")[0] == 200


def test_a_postmortem_still_posting_when_the_server_stops_is_named_in_its_log(
    serve_env: dict[str, str], fake_slack: FakeSlack, tmp_path: Path
) -> None:
    """A restart right after a close, while Slack is slow: the worker cannot wait for ever,
    but what it leaves unpublished is said, with the incident's name."""
    slash = SlashCommand(
        secret="s",
        team_id=TEAM,
        channel_id="C0TEST0001",
        user_id=ALICE,
        response_url=fake_slack.response_url(),
    )

    with served(serve_env, tmp_path) as server:

        def command(typed: str) -> str:
            body, headers = slash.signed(typed)
            request = urllib.request.Request(f"{server.base}/slack/events", body.encode(), headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(json.loads(response.read())["text"])

        fake_slack.fail("chat.postMessage", Fault(delay=60))  # Slack hangs
        assert "opened" in command("start Checkout is down")
        assert "is closed" in command("close")
        assert fake_slack.wait_for("chat.postMessage"), "the close was not being published"
        server.process.terminate()
        server.process.wait(timeout=30)

    said = server.log.read_text()
    assert "publishing the postmortem of INC-1" in said, said


def _answers(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:
        return False


# --- what is not a Slack request ---------------------------------------------------------


def post(wsgi: WsgiApp, body: bytes, content_type: str | None, *, length: int | None = None) -> int:
    """POST `body` to /slack/events, unsigned; the status code."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO="/slack/events", REQUEST_METHOD="POST")
    environ.update(CONTENT_LENGTH=str(len(body) if length is None else length))
    environ["wsgi.input"] = io.BytesIO(body)
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    statuses: list[int] = []

    def start_response(status: str, _headers: list[tuple[str, str]], _exc: Any = None) -> Any:
        statuses.append(int(status.split()[0]))

    b"".join(wsgi(environ, start_response))  # type: ignore[arg-type]
    return statuses[0]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"{x", None),
        (b"command=%2Fincident&text=x", "application/json"),
        (b"\xff\xfe\x00garbage", None),
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_bolt_cannot_parse_is_a_400_not_a_crash(
    wsgi: WsgiApp, body: bytes, content_type: str | None
) -> None:
    assert post(wsgi, body, content_type) == 400


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[1]", "application/json"),
        (b"null", "application/json"),
        (b"7", "application/json"),
        (b"payload=%5B1%5D", "application/x-www-form-urlencoded"),
        (b"payload=7", None),
        (b'{"authorizations": "x"}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ],
)
def test_json_that_is_not_an_object_is_a_400_not_an_escaped_exception(
    wsgi: WsgiApp, body: bytes, content_type: str | None
) -> None:
    # Unsigned: Bolt reads the body before it checks the signature, so anyone can send these.
    assert post(wsgi, body, content_type) == 400


def test_a_form_that_is_not_signed_is_a_401(wsgi: WsgiApp) -> None:
    body = b"command=%2Fincident&text=start+x&team_id=T1&channel_id=C1&user_id=U1"
    assert post(wsgi, body, "application/x-www-form-urlencoded") == 401


def test_a_body_over_a_megabyte_is_refused_before_it_is_read(wsgi: WsgiApp) -> None:
    # The length alone decides: the few bytes there are would not even fill it.
    assert post(wsgi, b"text=x", "application/x-www-form-urlencoded", length=2_000_000) == 413
