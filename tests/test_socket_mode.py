"""`incident-bot socket`: commands over Socket Mode, and a stop that finishes what it owes.

The process is the real console script; Slack's Socket Mode end is `tests/socketmode.py`,
its Web API FakeSlack.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import create_engine, select

from bot.demo import FakeSlack, Fault, SlashCommand, signed_event
from bot.models import TimelineEntry
from tests.conftest import ALICE, BOB, CHANNEL, TEAM, Database
from tests.socketmode import SocketModeServer
from tests.test_migrations import cli_env


@pytest.fixture
def socket_mode(fake_slack: FakeSlack) -> Iterator[SocketModeServer]:
    server = SocketModeServer()
    fake_slack.socket_mode_url = server.url
    yield server
    server.stop()


@pytest.fixture
def socket_process(
    database: Database, fake_slack: FakeSlack, socket_mode: SocketModeServer, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    env = {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xapp-x"}
    log = tmp_path / "socket.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "socket"],
            env=cli_env(database, {**env, "SLACK_API_URL": fake_slack.api_url}),
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        socket_mode.wait_connected()
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def command(socket_mode: SocketModeServer, typed: str) -> str:
    """`/incident <typed>` from Alice, as a Socket Mode envelope; the answer's text."""
    slash = SlashCommand(secret="unused", team_id=TEAM, channel_id="C0TEST0001", user_id=ALICE)
    envelope = socket_mode.deliver("slash_commands", dict(parse_qsl(slash.body(typed))))
    return str(socket_mode.ack(envelope)["payload"]["text"])


@pytest.mark.usefixtures("socket_process")
def test_commands_are_answered_over_socket_mode(socket_mode: SocketModeServer) -> None:
    assert "opened" in command(socket_mode, "start Checkout is down")
    assert "Added to" in command(socket_mode, "note payments 500 since the deploy")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_right_after_a_close_still_publishes_the_postmortem(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
    stop: signal.Signals,
) -> None:
    """A deploy restarts the bot while Slack is slow to take the close's summary: the
    postmortem is still uploaded before the process ends."""
    process, log = socket_process
    fake_slack.fail("chat.postMessage", Fault(delay=2))
    assert "opened" in command(socket_mode, "start Checkout is down")
    assert "is closed" in command(socket_mode, "close")
    assert fake_slack.wait_for("chat.postMessage"), "the close was not being published"

    process.send_signal(stop)

    assert process.wait(timeout=30) == 0, log.read_text()
    assert fake_slack.calls_to("files.completeUploadExternal"), log.read_text()
    assert "stopping before this was done" not in log.read_text()


def test_a_postmortem_still_posting_when_the_process_stops_is_named_in_its_log(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    """Slack hangs: the process cannot wait for ever, but names what it leaves unpublished."""
    process, log = socket_process
    fake_slack.fail("chat.postMessage", Fault(delay=60))
    assert "opened" in command(socket_mode, "start Checkout is down")
    assert "is closed" in command(socket_mode, "close")
    assert fake_slack.wait_for("chat.postMessage"), "the close was not being published"

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=40) == 0, log.read_text()
    assert "publishing the postmortem of INC-1" in log.read_text()


def test_a_command_in_flight_when_the_process_stops_is_still_answered(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    """A deploy stops the bot while it is carrying out a command: the command is recorded,
    and Slack is told so, as gunicorn's graceful stop answers the requests it is serving."""
    process, log = socket_process
    fake_slack.fail("users.info", Fault(delay=1.5))  # the caller's time zone, slow to come
    slash = SlashCommand(secret="unused", team_id=TEAM, channel_id="C0TEST0001", user_id=ALICE)
    envelope = socket_mode.deliver("slash_commands", dict(parse_qsl(slash.body("start Down"))))
    assert fake_slack.wait_for("users.info"), "the command was not being carried out"

    process.send_signal(signal.SIGTERM)

    assert "opened" in str(socket_mode.ack(envelope)["payload"]["text"]), log.read_text()
    assert process.wait(timeout=30) == 0, log.read_text()


def pin_event(ts: str, event_id: str) -> dict[str, Any]:
    """Bob's pin reaction on a message in CHANNEL, as the payload of an events_api envelope."""
    event = {
        "type": "reaction_added",
        "user": BOB,
        "reaction": "pushpin",
        "item": {"type": "message", "channel": CHANNEL, "ts": ts},
        "event_ts": "1795154400.000200",
    }
    payload: dict[str, Any] = json.loads(
        signed_event("unused", event, team_id=TEAM, event_id=event_id)[0]
    )
    return payload


@pytest.mark.usefixtures("socket_process")
def test_a_pin_delivered_for_the_first_time_is_not_taken_for_slacks_retry(
    fake_slack: FakeSlack, socket_mode: SocketModeServer, database: Database
) -> None:
    """Socket Mode says `retry_attempt: 0` on a first delivery. Over HTTP a first delivery
    is recorded without asking Slack whether the pin is still there (only a retry, which
    may come minutes later, asks), and Slack may not show a reaction just added yet."""
    assert "opened" in command(socket_mode, "start Checkout is down")
    ts = fake_slack.post(CHANNEL, "payments answer 500", user=ALICE, ts="1795154400.000100")

    socket_mode.ack(socket_mode.deliver("events_api", pin_event(ts, "Ev1")))

    assert fake_slack.wait_for("reactions.add"), "the pin was not recorded"
    with database.engine.connect() as conn:
        texts = list(conn.scalars(select(TimelineEntry.text)))
    assert any("payments answer 500" in text for text in texts)
    assert not fake_slack.calls_to("reactions.get")


def unreachable_url(fake_slack: FakeSlack, kind: str) -> str:
    """A WebSocket URL nothing answers at (`refused`), or where an HTTP server that is not a
    WebSocket server does (`not-websocket`): FakeSlack's own port."""
    if kind == "refused":
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
        return f"ws://127.0.0.1:{port}/link/?ticket=test"
    return fake_slack.api_url.replace("http://", "ws://", 1).rstrip("/") + "/link/?ticket=test"


@pytest.mark.parametrize("kind", ["refused", "not-websocket"])
def test_a_first_start_that_cannot_open_the_socket_mode_connection_says_so_and_stops(
    database: Database, fake_slack: FakeSlack, tmp_path: Path, kind: str
) -> None:
    """slack_sdk only logs a WebSocket it could not open: the bot said it was answering
    Slack over Socket Mode, and went on trying for ever, while no command reached it."""
    url = unreachable_url(fake_slack, kind)
    fake_slack.socket_mode_url = url
    env = {"SLACK_BOT_TOKEN": "xoxb-x", "SLACK_APP_TOKEN": "xapp-x"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "socket"],
        env=cli_env(database, {**env, "SLACK_API_URL": fake_slack.api_url}),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"still running after 30 s, having logged:\n{stderr}")

    assert process.returncode == 1, stderr
    assert "answering Slack over Socket Mode" not in stderr
    assert f"could not open the Socket Mode connection at {url.split('?')[0]} " in stderr
    assert "ticket=" not in stderr


@pytest.mark.usefixtures("socket_process")
def test_a_connection_slack_closes_later_is_opened_again(socket_mode: SocketModeServer) -> None:
    """Only a first start that cannot connect gives up; Slack closes connections now and
    then (a refresh, a deploy of theirs), and the bot opens a new one as slack_sdk does."""
    assert "opened" in command(socket_mode, "start Checkout is down")

    socket_mode.drop()
    socket_mode.wait_connected()

    assert "Added to" in command(socket_mode, "note payments 500 since the deploy")


def test_a_command_in_flight_when_slack_closes_the_connection_is_answered_on_the_next(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    """Slack closes the connection while a command is being carried out: the command is
    recorded, and its answer goes on the connection opened in its place. slack_sdk asked
    whether it was still connected before the closed connection had let go of its socket,
    so it opened none; its monitor did, up to ten seconds later, and the answer, with no
    connection to go on meanwhile, was lost."""
    _, log = socket_process
    fake_slack.fail("users.info", Fault(delay=1.5))  # the caller's time zone, slow to come
    slash = SlashCommand(secret="unused", team_id=TEAM, channel_id="C0TEST0001", user_id=ALICE)
    envelope = socket_mode.deliver("slash_commands", dict(parse_qsl(slash.body("start Down"))))
    assert fake_slack.wait_for("users.info"), "the command was not being carried out"

    socket_mode.drop()

    assert "opened" in str(socket_mode.ack(envelope)["payload"]["text"]), log.read_text()
    socket_mode.wait_connected()
    assert "Added to" in command(socket_mode, "note payments 500 since the deploy")


def test_a_command_the_bot_takes_after_its_time_to_answer_has_passed_is_not_recorded(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
    database: Database,
) -> None:
    """A command that waited before the bot could take it (here behind a reconnection that
    Slack was slow to grant) is answered "could not record", as one whose database work
    outlasts the deadline is, and nothing is stored. Its deadline ran from when the bot
    took it, not from when it arrived: it was recorded after Slack had shown the person an
    error, and typed again, it was recorded twice."""
    _, log = socket_process
    assert "opened" in command(socket_mode, "start Checkout is down")
    fake_slack.fail("apps.connections.open", Fault(delay=3))  # longer than COMMAND_DEADLINE_S
    socket_mode.disconnect("refresh_requested")
    slash = SlashCommand(secret="unused", team_id=TEAM, channel_id="C0TEST0001", user_id=ALICE)
    envelope = socket_mode.deliver("slash_commands", dict(parse_qsl(slash.body("note late"))))

    answer = str(socket_mode.ack(envelope)["payload"]["text"])

    assert "Nothing was saved" in answer, log.read_text()
    with database.engine.connect() as conn:
        assert list(conn.scalars(select(TimelineEntry.text))) == []
    assert '"outcome": "late"' in log.read_text()


def test_a_stopped_socket_process_leaves_what_it_recorded_in_the_sqlite_file(
    fake_slack: FakeSlack, socket_mode: SocketModeServer, tmp_path: Path
) -> None:
    """README: back up SQLite by copying its file while the bot is stopped; what the bot
    wrote must then be in that file, not only in the write-ahead log beside it."""
    database_file = tmp_path / "incidents.db"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DATABASE_URL"))},
        "SLACK_BOT_TOKEN": "xoxb-x",
        "SLACK_APP_TOKEN": "xapp-x",
        "SLACK_API_URL": fake_slack.api_url,
        "DATABASE_URL": f"sqlite:///{database_file}",
    }
    upgrade = [sys.executable, "-m", "bot", "db", "upgrade"]
    assert subprocess.run(upgrade, env=env, cwd=tmp_path, timeout=120).returncode == 0
    log = tmp_path / "socket.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "socket"],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        socket_mode.wait_connected()
        assert "opened" in command(socket_mode, "start Checkout is down")
        assert "Added to" in command(socket_mode, "note rolled back the deploy")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    shutil.copy(database_file, tmp_path / "copy.db")  # the file alone, as a backup takes it
    copy = create_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    with copy.connect() as conn:
        texts = list(conn.scalars(select(TimelineEntry.text)))
    copy.dispose()
    assert texts == ["rolled back the deploy"]


def stopped(process: subprocess.Popen[bytes], log: Path) -> str:
    """What the process logged, once it has stopped by itself (within a minute)."""
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running, having logged:\n{log.read_text()}")
    return log.read_text()


def test_socket_mode_turned_off_for_the_app_stops_the_process_and_says_what_to_do(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    """Slack says `link_disabled` when the app's Socket Mode is switched off; slack_sdk took
    it as any disconnect and asked for a new connection every ten seconds, for ever."""
    process, log = socket_process
    assert "opened" in command(socket_mode, "start Checkout is down")
    asked = len(fake_slack.calls_to("apps.connections.open"))

    socket_mode.disconnect("link_disabled")

    said = stopped(process, log)
    assert process.returncode == 2, said
    assert "incident-bot: stopped: Slack turned Socket Mode off for the app (link_disabled)" in said
    assert "Socket Mode page" in said
    assert len(fake_slack.calls_to("apps.connections.open")) == asked


@pytest.mark.parametrize("code", ["invalid_auth", "token_revoked"])
def test_an_app_token_slack_refuses_later_stops_the_process_and_names_it(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
    code: str,
) -> None:
    """The app-level token revoked while the bot runs: every new connection is refused
    for good, and slack_sdk asked again every ten seconds, for ever."""
    process, log = socket_process
    fake_slack.fail("apps.connections.open", Fault(error=code, times=1000))

    socket_mode.drop()

    said = stopped(process, log)
    assert process.returncode == 2, said
    assert (
        f"Slack refused SLACK_APP_TOKEN when asked for a connection (apps.connections.open: {code})"
        in said
    )
    assert len(fake_slack.calls_to("apps.connections.open")) == 2  # the first start's, and one


def test_a_connection_that_cannot_be_opened_for_now_is_tried_again(
    fake_slack: FakeSlack,
    socket_mode: SocketModeServer,
    socket_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    """Slack failing for a while (an error of its own) is no reason to stop."""
    process, log = socket_process
    assert "opened" in command(socket_mode, "start Checkout is down")
    fake_slack.fail("apps.connections.open", Fault(error="internal_error", times=2))

    socket_mode.drop()
    socket_mode.wait_connected(timeout=60)

    assert "Added to" in command(socket_mode, "note still here"), log.read_text()
    assert process.poll() is None, log.read_text()
    assert len(fake_slack.calls_to("apps.connections.open")) == 4, log.read_text()
