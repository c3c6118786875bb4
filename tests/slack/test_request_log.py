"""One JSON log line per command, and never a token or signing secret in any log line."""

from __future__ import annotations

import json
import logging

import pytest

from bot.app import build_app
from bot.db import make_engine
from bot.demo import FakeSlack
from bot.services import build_services
from tests.conftest import SECRET, TEAM, TOKEN, Bot, Clock, Database, make_settings


def _command_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "bot.requests"]


def test_each_command_logs_one_line_with_workspace_subcommand_outcome_and_latency(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot.command("start Outage")
    bot.command("note first")
    bot.command("frobnicate")
    bot.command("start again")
    bot.command("close")
    bot.wait()

    lines = _command_lines(caplog)
    assert [(line["subcommand"], line["outcome"]) for line in lines] == [
        ("start", "ok"),
        ("note", "ok"),
        ("frobnicate", "unknown_subcommand"),
        ("start", "refused"),
        ("close", "ok"),
    ]
    assert all(line["team"] == TEAM for line in lines)
    assert all(
        isinstance(line["latency_ms"], int | float) and line["latency_ms"] >= 0 for line in lines
    )
    everything = "\n".join(record.getMessage() for record in caplog.records)
    assert TOKEN not in everything
    assert SECRET not in everything


def test_database_refusing_connections_gets_a_clear_could_not_record(
    fake_slack: object, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.demo import FakeSlack

    assert isinstance(fake_slack, FakeSlack)
    # Nothing listens on port 1: every connection is refused.
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")
    settings = make_settings("postgresql+psycopg://postgres@127.0.0.1:1/test", fake_slack.api_url)
    services = build_services(settings, engine=engine, clock=Clock(), create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=Clock())
    caplog.set_level(logging.INFO)

    reply = bot.command("note the database is down")

    assert reply.status == 200
    assert "could not record" in reply.text and "try again" in reply.text
    assert "Traceback" not in reply.visible
    assert _command_lines(caplog)[-1]["outcome"] == "db_error"


def test_starting_on_slack_bot_token_logs_no_warning_that_it_is_unused(
    database: Database,
    fake_slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bolt reads SLACK_BOT_TOKEN from the environment itself and, as the app is built with
    a client, warned at every start that "`token` will be unused": the token the operator
    set as README says, and which the client the app is built with carries."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    settings = make_settings(database.url, fake_slack.api_url)
    services = build_services(settings, engine=database.engine, create_schema=False)
    caplog.set_level(logging.INFO)

    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=Clock())

    assert "opened" in bot.command("start Outage").text  # on that token
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
