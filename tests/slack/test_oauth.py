"""Multi-workspace installs: OAuth through Slack's flow, each workspace on its own token."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from sqlalchemy import func, insert, select, text

from bot.app import build_app
from bot.demo import FakeSlack, Fault, signed_event
from bot.models import SLACK_OAUTH_STATES, Incident, TimelineEntry
from bot.services import build_services
from bot.slack import publish
from bot.web import build_wsgi
from tests.conftest import SECRET, Bot, Clock, Database, make_settings
from tests.slack.test_slack_failures import answered


def _multi_workspace_bot(
    database: Database, fake: FakeSlack, clock: Clock, **overrides: Any
) -> Bot:
    settings = make_settings(
        database.url,
        fake.api_url,
        slack_bot_token=None,
        slack_client_id="1111.2222",
        slack_client_secret="client-secret",
        **overrides,
    )
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    return Bot(app=build_app(settings, services), services=services, fake=fake, clock=clock)


@pytest.fixture
def multi(database: Database, fake_slack: FakeSlack, clock: Clock) -> Bot:
    return _multi_workspace_bot(database, fake_slack, clock)


def _request(query: str = "", cookie: str | None = None) -> BoltRequest:
    headers: dict[str, str | Sequence[str]] = {"cookie": cookie} if cookie else {}
    return BoltRequest(body="", query=query, headers=headers)


def install(starts_on: Bot, team: str, finishes_on: Bot | None = None) -> str:
    """Walk Slack's install flow for `team`; return the bot token the workspace was given."""
    starts_on.fake.oauth_codes[f"code-{team}"] = team
    start_flow = starts_on.app.oauth_flow
    assert start_flow is not None
    page = start_flow.handle_installation(_request())
    assert page.status in (200, 302), page.body
    location = page.headers.get("location", [""])[0] if page.status == 302 else page.body
    state_match = re.search(r"state=([\w-]+)", location)
    assert state_match, location
    assert "client_id=1111.2222" in location
    cookie = page.headers["set-cookie"][0].split(";", 1)[0]

    finish_flow = (finishes_on or starts_on).app.oauth_flow
    assert finish_flow is not None
    done = finish_flow.handle_callback(
        _request(f"code=code-{team}&state={state_match.group(1)}", cookie)
    )
    assert done.status == 200, done.body
    [token] = [t for t, owner in starts_on.fake.tokens.items() if owner == team][-1:]
    return token


def test_each_installed_workspace_is_answered_with_its_own_token(multi: Bot) -> None:
    first = install(multi, "T0FIRST001")
    second = install(multi, "T0SECOND01")

    assert "INC-1" in multi.command("start One", team="T0FIRST001").text
    assert "INC-1" in multi.command("start Two", team="T0SECOND01").text
    assert "INC-2" in multi.command("start Three", team="T0FIRST001", channel="C0OTHER001").text

    lookups = {call.token for call in multi.fake.calls_to("users.info")}
    assert lookups == {first, second}
    multi.command("close", team="T0SECOND01")
    multi.wait()
    assert {call.token for call in multi.fake.calls_to("chat.postMessage")} == {second}


def test_a_workspace_that_never_installed_gets_nothing_stored(multi: Bot) -> None:
    install(multi, "T0FIRST001")
    reply = multi.command("start Sneaky", team="T0STRANGER")
    assert "INC-" not in reply.text
    with multi.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 0


def test_an_install_started_on_one_worker_finishes_on_another(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    worker_a = _multi_workspace_bot(database, fake_slack, clock)
    worker_b = _multi_workspace_bot(database, fake_slack, clock)
    install(worker_a, "T0FIRST001", finishes_on=worker_b)
    assert "INC-1" in worker_a.command("start One", team="T0FIRST001").text


def test_a_callback_with_a_forged_state_installs_nothing(multi: Bot) -> None:
    multi.fake.oauth_codes["code-T0EVIL0001"] = "T0EVIL0001"
    flow = multi.app.oauth_flow
    assert flow is not None
    done = flow.handle_callback(_request("code=code-T0EVIL0001&state=forged"))
    assert done.status >= 400
    assert "T0EVIL0001" not in multi.fake.tokens.values()


def test_a_rate_limited_auth_test_is_answered_in_time_with_what_to_do(multi: Bot) -> None:
    # Bolt checks a workspace's token with auth.test on its first request to each process.
    install(multi, "T0FIRST001")
    multi.fake.fail("auth.test", Fault(status=429, error="ratelimited", retry_after=30))

    reply = answered(lambda: multi.command("start Outage", team="T0FIRST001"))

    assert reply.status == 200 and "INC-" not in reply.text
    [response] = multi.fake.wait_for_responses(1)
    assert "try again" in response["text"].lower(), response["text"]
    with multi.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 0
    assert "INC-1" in multi.command("start Outage", team="T0FIRST001").text  # once Slack answers


def _pin(bot: Bot, team: str, ts: str, *, retry_num: int | None = None) -> BoltResponse:
    """Bob's pin on `ts`, as Slack posts it (answered with text, not JSON, when refused)."""
    event = {
        "type": "reaction_added",
        "user": "U0BOB00001",
        "reaction": "pushpin",
        "item": {"type": "message", "channel": "C0TEST0001", "ts": ts},
        "event_ts": "1795154400.000200",
    }
    body, headers = signed_event(SECRET, event, team_id=team, retry_num=retry_num)
    return bot.app.dispatch(BoltRequest(body=body, headers=dict(headers)))


def test_a_pin_whose_workspace_slack_cannot_confirm_just_now_is_sent_again(
    multi: Bot, database: Database
) -> None:
    # An event has no one to tell "try again": answered 200, Slack never sends it again and
    # the pin is lost; answered 500, Slack sends it again (up to three times, over minutes).
    token = install(multi, "T0FIRST001")
    assert "INC-1" in multi.command("start Outage", team="T0FIRST001").text
    # Another worker, whose first request from the workspace this is: Bolt asks auth.test.
    multi = _multi_workspace_bot(database, multi.fake, multi.clock)
    ts = multi.fake.post("C0TEST0001", "db is down", user="U0ALICE001", ts="1795154400.000100")
    multi.fake.react("C0TEST0001", ts, "pushpin", "U0BOB00001")
    # Asked twice: as Bolt asks, and again to tell a failure from a workspace not installed.
    multi.fake.fail("auth.test", Fault(status=429, error="ratelimited", retry_after=30, times=2))

    assert answered(lambda: _pin(multi, "T0FIRST001", ts)).status == 500

    assert _pin(multi, "T0FIRST001", ts, retry_num=1).status == 200
    multi.wait()
    with multi.services.sessions() as session:
        assert list(session.scalars(select(TimelineEntry.text))) == ["db is down"]
    assert [call.token for call in multi.fake.calls_to("reactions.add")] == [token]


def test_a_pin_from_a_workspace_that_is_not_installed_is_answered_and_dropped(
    multi: Bot,
) -> None:
    # Slack's retries would find no installation either.
    install(multi, "T0FIRST001")

    assert _pin(multi, "T0STRANGER", "1795154400.000100").status == 200
    assert _pin(multi, "T0STRANGER", "1795154400.000100", retry_num=1).status == 200
    with multi.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 0


def test_an_org_wide_install_opens_incident_channels_in_the_workspace_of_the_command(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    # An org-wide (Enterprise Grid) install has one token for all the organization's
    # workspaces, and conversations.create must be told which of them the channel is for.
    bot = _multi_workspace_bot(database, fake_slack, clock, incident_channels=True)
    install(bot, "E0ORG00001")

    reply = bot.command("start Checkout down", team="T0ORGWS001", enterprise="E0ORG00001")
    bot.wait()

    assert "INC-1" in reply.text
    [create] = fake_slack.calls_to("conversations.create")
    assert create.params.get("team_id") == "T0ORGWS001"
    new_channel = fake_slack.channel_names["inc-20261120-checkout-down"]
    with bot.services.sessions() as session:
        incident = session.scalars(select(Incident)).one()
        assert (incident.team_id, incident.channel_id) == ("T0ORGWS001", new_channel)


def test_an_install_slack_cannot_finish_gets_a_page_that_says_so(multi: Bot) -> None:
    # oauth.v2.access never answers whole (the link drops, every retry too): Bolt catches
    # only SlackApiError there, so the installer got a bare 500 and the log a traceback.
    team = "T0FIRST001"
    multi.fake.oauth_codes[f"code-{team}"] = team
    flow = multi.app.oauth_flow
    assert flow is not None
    page = flow.handle_installation(_request())
    location = page.headers.get("location", [""])[0] if page.status == 302 else page.body
    state_match = re.search(r"state=([\w-]+)", location)
    assert state_match, location
    cookie = page.headers["set-cookie"][0].split(";", 1)[0]
    multi.fake.fail("oauth.v2.access", Fault(cut=True, times=10))

    done = flow.handle_callback(_request(f"code=code-{team}&state={state_match.group(1)}", cookie))

    assert done.status == 503
    assert "/slack/install" in done.body
    assert team not in multi.fake.tokens.values()


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_the_incident_command_is_the_first_listener_bolt_tries(
    mode: str, bot: Bot, multi: Bot
) -> None:
    # For every request Bolt runs the matchers of each listener registered before the one
    # that matches (each builds its keyword arguments). `/incident` is nearly all the traffic.
    app = (bot if mode == "single" else multi).app
    body, headers = bot.signed_command("note the first listener")
    request = BoltRequest(body=body, headers=dict(headers))
    first = app._listeners[0]
    assert first.matches(req=request, resp=BoltResponse(status=404))


@pytest.mark.parametrize(
    ("path", "query"),
    [("/slack/install", ""), ("/slack/oauth_redirect", "code=code-T0FIRST001&state=x")],
)
def test_an_install_page_asked_for_with_a_body_that_is_not_utf8_is_a_400(
    multi: Bot, path: str, query: str
) -> None:
    # Anyone can reach these pages; Bolt's adapter decodes even a GET's body, and the
    # UnicodeDecodeError left the WSGI app (a 500 from gunicorn, a traceback in its log).
    body = b"\xff\xfe\x00"
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET", QUERY_STRING=query)
    environ.update(CONTENT_LENGTH=str(len(body)), CONTENT_TYPE="text/plain")
    environ["wsgi.input"] = io.BytesIO(body)
    statuses: list[str] = []

    def start_response(status: str, _headers: list[tuple[str, str]], _exc: Any = None) -> Any:
        statuses.append(status)

    b"".join(build_wsgi(multi.app, multi.services)(environ, start_response))  # type: ignore[arg-type]

    assert [int(status.split()[0]) for status in statuses] == [400]
    assert "T0FIRST001" not in multi.fake.tokens.values()


def test_install_pages_no_one_finished_are_forgotten_once_their_state_expires(
    multi: Bot,
) -> None:
    # Anyone can ask for /slack/install, and each answer keeps a state for the callback;
    # slack_sdk's store deleted a state only when an install used it, so states of installs
    # no one finished piled up for good.
    long_ago = datetime(2020, 1, 1)  # the store keeps naive UTC times
    with multi.services.engine.begin() as connection:
        connection.execute(
            insert(SLACK_OAUTH_STATES),
            [{"state": f"abandoned-{n}", "expire_at": long_ago} for n in range(3)],
        )
    flow = multi.app.oauth_flow
    assert flow is not None

    for _ in range(3):
        assert flow.handle_installation(_request()).status in (200, 302)

    with multi.services.engine.connect() as connection:
        states = connection.scalars(select(SLACK_OAUTH_STATES.c.state)).all()
    assert len(states) == 3
    assert not [state for state in states if state.startswith("abandoned-")]
    install(multi, "T0FIRST001")  # a state still in time is kept for its callback


def test_an_install_the_database_cannot_keep_leaves_its_token_out_of_the_log(
    multi: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLAlchemy's errors repeat the statement's parameters, and the statement that keeps
    # an install holds the workspace's new bot token; the failure is logged with its error.
    with multi.services.engine.begin() as connection:
        # The install's INSERT fails (the lookup before it does not name that column).
        connection.execute(text("ALTER TABLE slack_installations RENAME COLUMN bot_scopes TO x"))
    team = "T0FIRST001"
    multi.fake.oauth_codes[f"code-{team}"] = team
    flow = multi.app.oauth_flow
    assert flow is not None
    page = flow.handle_installation(_request())
    state_match = re.search(r"state=([\w-]+)", page.headers.get("location", [""])[0] or page.body)
    assert state_match
    cookie = page.headers["set-cookie"][0].split(";", 1)[0]

    with caplog.at_level(logging.INFO):  # as `serve` logs
        done = flow.handle_callback(
            _request(f"code=code-{team}&state={state_match.group(1)}", cookie)
        )

    assert done.status == 503
    [token] = [t for t, owner in multi.fake.tokens.items() if owner == team]
    logged = "\n".join(logging.Formatter().format(record) for record in caplog.records)
    assert "could not finish an install" in logged
    assert token not in logged


def test_pending_postmortems_are_published_with_each_installation_s_token(multi: Bot) -> None:
    # No request is at hand when the sweeper publishes: each workspace's token comes from its
    # installation, an org-wide one's from its organization's.
    first = install(multi, "T0FIRST001")
    org = install(multi, "E0ORG00001")
    multi.fake.fail("files.getUploadURLExternal", Fault(error="internal_error", times=2))
    multi.command("start One", team="T0FIRST001", channel="C0FIRST001")
    multi.command("close", team="T0FIRST001", channel="C0FIRST001")
    multi.command("start Two", team="T0ORGWS001", enterprise="E0ORG00001", channel="C0ORGWS001")
    multi.command("close", team="T0ORGWS001", enterprise="E0ORG00001", channel="C0ORGWS001")
    multi.wait()
    assert not multi.fake.calls_to("files.completeUploadExternal")

    multi.clock.advance(minutes=1)
    assert publish.publish_pending(multi.services) == 2

    uploaded = {
        call.params["channel_id"]: call.token
        for call in multi.fake.calls_to("files.completeUploadExternal")
    }
    assert uploaded == {"C0FIRST001": first, "C0ORGWS001": org}
