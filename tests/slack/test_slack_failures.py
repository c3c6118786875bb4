"""Slack's Web API failing after a close: the record is kept, calls are retried, people are told."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.app import build_app
from bot.demo import RESPONSE_URL, UPLOAD_URL, FakeSlack, Fault
from bot.models import Incident, Postmortem, TimelineEntry
from bot.services import build_services
from tests.conftest import ALICE, BOB, CHANNEL, TOKEN, Bot, Clock, Database, Reply, make_settings
from tests.slack.test_capture import PIN_TS, entries, reaction, shortcut


@pytest.fixture
def impatient(database: Database, fake_slack: FakeSlack, clock: Clock) -> Bot:
    """The app with a one-second Slack timeout, so that a timeout is quick to provoke."""
    settings = make_settings(database.url, fake_slack.api_url, slack_timeout=1)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    return Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)


def stored(bot: Bot) -> tuple[str, int, int]:
    with bot.services.sessions() as session:
        status = session.scalars(select(Incident.status)).one()
        entries = session.scalar(select(func.count()).select_from(TimelineEntry)) or 0
        postmortems = session.scalar(select(func.count()).select_from(Postmortem)) or 0
    return status, entries, postmortems


def test_a_server_error_on_the_summary_is_retried(bot: Bot) -> None:
    bot.fake.fail("chat.postMessage", Fault(status=503, times=2))
    bot.command("start Outage")
    bot.command("close 9:00 AM - fixed")
    bot.wait()
    assert len(bot.fake.calls_to("chat.postMessage")) == 3  # two 503s, then posted
    assert bot.fake.uploads
    assert stored(bot) == ("closed", 1, 1)


def test_a_summary_that_keeps_failing_is_reported_and_nothing_is_lost(bot: Bot) -> None:
    bot.fake.fail("chat.postMessage", Fault(status=500, times=10))
    bot.command("start Outage")
    bot.command("close 9:00 AM - fixed")
    bot.wait()
    assert len(bot.fake.calls_to("chat.postMessage")) == 3  # the first try and two retries
    responses = bot.fake.wait_for_responses(1)
    assert any("could not post the summary" in r["text"] for r in responses)
    assert bot.fake.uploads  # the postmortem file still goes up
    assert stored(bot) == ("closed", 1, 1)


def test_rate_limited_upload_waits_as_slack_asks_and_succeeds(bot: Bot) -> None:
    # Longer than a command may wait: the upload runs after the answer, with no deadline.
    bot.fake.fail("files.getUploadURLExternal", Fault(status=429, retry_after=3))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    assert len(bot.fake.calls_to("files.getUploadURLExternal")) == 2
    assert [c.params["channel_id"] for c in bot.fake.calls_to("files.completeUploadExternal")] == [
        CHANNEL
    ]


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503), Fault(status=500, times=2), Fault(status=429, retry_after=1)],
    ids=["unavailable", "server_error_twice", "rate_limited"],
)
def test_a_failed_post_to_the_upload_url_is_tried_again_like_the_other_steps(
    bot: Bot, fault: Fault
) -> None:
    # files_upload_v2's second step, the file's bytes to the URL files.getUploadURLExternal
    # gave, fails as any call to Slack may; nothing is shared until the third step.
    bot.fake.fail(UPLOAD_URL, fault)
    bot.command("start Outage")
    bot.command("close fixed")
    bot.wait()

    assert "# Postmortem: Outage" in bot.fake.uploaded_text()
    [completed] = bot.fake.calls_to("files.completeUploadExternal")
    assert completed.params["channel_id"] == CHANNEL
    assert not any("could not upload" in r["text"] for r in bot.fake.responses)


def test_slack_timing_out_is_retried_then_reported(impatient: Bot) -> None:
    impatient.fake.fail("files.completeUploadExternal", Fault(delay=2.5, times=10))
    impatient.command("start Outage")
    reply = impatient.command("close 9:00 AM - fixed")
    assert reply.status == 200 and "closed" in reply.text
    impatient.wait()
    attempts = len(impatient.fake.calls_to("files.completeUploadExternal"))
    assert 1 <= attempts <= 3  # bounded retries, not forever
    responses = impatient.fake.wait_for_responses(1)
    assert any("could not upload" in r["text"] and "export INC-1" in r["text"] for r in responses)
    assert stored(impatient) == ("closed", 1, 1)


@pytest.mark.parametrize("code", ["invalid_auth", "token_revoked", "account_inactive"])
def test_a_token_slack_no_longer_accepts_is_named_and_the_summary_still_reaches_the_channel(
    bot: Bot, code: str
) -> None:
    # The app was uninstalled or its token revoked while the incident was open: every Web API
    # call is refused, but the close's response URL still speaks in the channel.
    bot.command("start Outage")
    bot.fake.revoked[TOKEN] = code
    reply = bot.command("close 9:00 AM - fixed")
    assert reply.status == 200 and "closed" in reply.text
    bot.wait()
    responses = bot.fake.wait_for_responses(2)
    assert any(r.get("response_type") == "in_channel" and "INC-1" in r["text"] for r in responses)
    told = " ".join(r["text"] for r in responses)
    assert code in told and "reinstall" in told and "incident-bot export INC-1" in told
    assert bot.fake.calls_to("files.getUploadURLExternal") == []  # refused as surely
    assert stored(bot) == ("closed", 1, 1)


def test_a_scope_the_app_lacks_is_named_and_the_summary_still_reaches_the_channel(
    bot: Bot,
) -> None:
    # Installed before a scope was added to the manifest: Slack says which one is needed.
    provided = "commands,users:read"
    for method, needed in (
        ("chat.postMessage", "chat:write"),
        ("files.getUploadURLExternal", "files:write"),
    ):
        missing = {"needed": needed, "provided": provided}
        bot.fake.fail(method, Fault(error="missing_scope", details=missing))
    bot.command("start Outage")
    bot.command("close fixed")
    bot.wait()

    responses = bot.fake.wait_for_responses(3)
    assert any(r.get("response_type") == "in_channel" and "INC-1" in r["text"] for r in responses)
    told = " ".join(r["text"] for r in responses)
    assert "lacks chat:write" in told and "lacks files:write" in told and "reinstall" in told
    assert "incident-bot export INC-1" in told
    assert stored(bot) == ("closed", 1, 1)


def test_a_channel_archived_before_the_close_is_published_is_named_and_no_invite_asked(
    bot: Bot,
) -> None:
    # Archiving takes the bot out of the channel: Slack answers not_in_channel, and
    # conversations.join answers is_archived, as it documents. No invitation can help.
    bot.command("start Outage")
    bot.fake.members_only.add(CHANNEL)
    bot.fake.archived.add(CHANNEL)
    bot.command("close 9:00 AM - fixed")
    bot.wait()
    responses = bot.fake.wait_for_responses(2)
    assert any(r.get("response_type") == "in_channel" and "INC-1" in r["text"] for r in responses)
    told = " ".join(r["text"] for r in responses)
    assert "archived" in told and "incident-bot export INC-1" in told
    assert "/invite" not in told and "not a member" not in told
    assert stored(bot) == ("closed", 1, 1)


# --- rate limits before the answer ----------------------------------------------------------
# Slack gives a request 3 seconds and the app answers only when its listener returns, so a
# listener must not sleep through a long Retry-After; follow-up work after the answer may.

GUARD_S = 20  # far more than any answer needs, far less than two Retry-After: 30 waits


def answered(send: Callable[[], Reply]) -> Reply:
    """`send()`'s reply; fails when it has not come back within the guard."""
    replies: list[Reply] = []
    sender = threading.Thread(target=lambda: replies.append(send()), daemon=True)
    sender.start()
    sender.join(timeout=GUARD_S)
    assert replies, f"no answer within {GUARD_S}s: the request waited on Slack"
    return replies[0]


def pinned_message(bot: Bot) -> dict[str, object]:
    ts = bot.fake.post(CHANNEL, "rolled back", user=ALICE, ts=PIN_TS)
    return {"type": "message", "user": ALICE, "text": "rolled back", "ts": ts}


def test_a_long_rate_limit_on_the_shortcut_answers_in_time_without_the_link(bot: Bot) -> None:
    bot.command("start Outage")
    message = pinned_message(bot)
    bot.fake.fail("chat.getPermalink", Fault(status=429, error="ratelimited", retry_after=30))

    reply = answered(lambda: shortcut(bot, message))

    assert reply.status == 200
    assert "#1" in bot.fake.wait_for_responses(1)[0]["text"]
    assert len(bot.fake.calls_to("chat.getPermalink")) == 1  # not tried again
    [entry] = entries(bot)
    assert entry.text == "rolled back" and entry.permalink is None


def test_a_short_rate_limit_on_the_shortcut_is_waited_for(bot: Bot) -> None:
    bot.command("start Outage")
    message = pinned_message(bot)
    # Slack asks for whole seconds; 0 keeps the test's outcome apart from the machine's speed
    # (a 1 fits only while less than 0.7 s of the deadline has gone).
    bot.fake.fail("chat.getPermalink", Fault(status=429, error="ratelimited", retry_after=0))

    assert shortcut(bot, message).status == 200

    assert len(bot.fake.calls_to("chat.getPermalink")) == 2
    [entry] = entries(bot)
    assert entry.permalink is not None and entry.permalink.startswith("https://")


def test_a_long_rate_limit_on_a_pin_fails_the_event_in_time_for_slack_to_resend_it(
    bot: Bot,
) -> None:
    bot.command("start Outage")
    ts = str(pinned_message(bot)["ts"])
    bot.fake.fail("conversations.history", Fault(status=429, error="ratelimited", retry_after=30))

    first = answered(lambda: reaction(bot, ts))

    assert first.status == 500  # Slack sends the event again, later
    assert entries(bot, live=False) == []
    reaction(bot, ts, retry_num=1)
    assert [e.text for e in entries(bot)] == ["rolled back"]


def test_a_long_rate_limit_on_users_info_leaves_the_command_on_time(bot: Bot) -> None:
    bot.fake.fail("users.info", Fault(status=429, error="ratelimited", retry_after=30))

    reply = answered(lambda: bot.command("start 8:00 AM - Outage"))

    assert reply.in_channel and "INC-1" in reply.text
    with bot.services.sessions() as session:
        assert session.scalars(select(Incident.timezone)).one() == "UTC"  # INCIDENT_TIMEZONE


def test_a_response_url_slack_fails_to_answer_is_not_written_to_the_log(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    # A response URL lets whoever holds it post in the channel as the app for 30 minutes; a
    # 5xx from it is tried again, and the SDK's note of the retry must not name it.
    bot.fake.members_only.add(CHANNEL)
    bot.fake.private.add(CHANNEL)
    bot.fake.fail(RESPONSE_URL, Fault(status=503))
    bot.command("start Outage")
    with caplog.at_level(logging.INFO):  # as `serve` logs
        bot.command("close")
        bot.wait()

    assert bot.fake.wait_for_responses(2)  # the retry was answered
    url = bot.fake.response_url(CHANNEL)
    assert [r.getMessage() for r in caplog.records if url in r.getMessage()] == []


@pytest.fixture
def patient(database: Database, fake_slack: FakeSlack, clock: Clock) -> Bot:
    """The app with a one-minute Slack timeout: far longer than a request may wait."""
    settings = make_settings(database.url, fake_slack.api_url, slack_timeout=60)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    return Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)


def test_a_shortcut_is_answered_while_slack_is_slow_to_give_the_permalink(patient: Bot) -> None:
    """Slack wants the answer within 3 seconds: a call Slack is slow to answer (not a 429)
    is given up when the answer is due, not when the client's timeout runs out."""
    patient.command("start Outage")
    message = pinned_message(patient)
    patient.fake.fail("chat.getPermalink", Fault(delay=60))

    reply = answered(lambda: shortcut(patient, message))

    assert reply.status == 200
    [response] = patient.fake.wait_for_responses(1)
    assert "#1" in response["text"]
    [entry] = entries(patient)
    assert entry.text == "rolled back" and entry.permalink is None
    patient.wait()


def test_a_pin_is_answered_while_slack_is_slow_to_give_the_message(patient: Bot) -> None:
    patient.command("start Outage")
    ts = str(pinned_message(patient)["ts"])
    patient.fake.fail("conversations.history", Fault(delay=60))

    reply = answered(lambda: reaction(patient, ts))

    assert reply.status == 500  # Slack sends the event again
    assert entries(patient) == []
    assert reaction(patient, ts, retry_num=1).status == 200
    assert [entry.text for entry in entries(patient)] == ["rolled back"]
    patient.wait()


def test_a_shortcut_is_answered_while_its_response_url_is_slow(bot: Bot) -> None:
    """The shortcut's reply goes through its response URL, which may be slow too; Slack
    wants the shortcut answered within 3 seconds, whatever the reply waits for."""
    bot.command("start Outage")
    message = pinned_message(bot)
    bot.fake.fail(RESPONSE_URL, Fault(delay=60))

    reply = answered(lambda: shortcut(bot, message))

    assert reply.status == 200
    assert [entry.text for entry in entries(bot)] == ["rolled back"]


def test_a_shortcut_slowed_by_slack_twice_still_records_the_message(patient: Bot) -> None:
    """Once Slack has been slow to give the permalink, there is no time left to wait for the
    author's name either: the message is recorded under the fallback, not refused as if the
    database had not answered."""
    carol = "U0CAROL001"
    patient.fake.users[carol] = "UTC"
    patient.command("start Outage")
    ts = patient.fake.post(CHANNEL, "rolled back", user=carol, ts=PIN_TS)
    message = {"type": "message", "user": carol, "text": "rolled back", "ts": ts}
    patient.fake.fail("chat.getPermalink", Fault(delay=60))
    patient.fake.fail("users.info", Fault(delay=60))

    reply = answered(lambda: shortcut(patient, message))

    assert reply.status == 200
    [response] = patient.fake.wait_for_responses(1)
    assert "#1" in response["text"], response["text"]
    [entry] = entries(patient)
    assert entry.text == "rolled back" and entry.author_id == carol


def test_server_errors_on_the_shortcut_are_retried_only_while_the_answer_can_wait(
    bot: Bot,
) -> None:
    """Each retry of a 5xx waits longer (0.5 s, then 1 s, each plus up to 1 s at random);
    inside a request, a retry that could not end before the answer is due is not made, and
    the message is recorded without its link rather than refused as if the database had
    not answered."""
    bot.command("start Outage")
    message = pinned_message(bot)
    bot.fake.fail("chat.getPermalink", Fault(status=503, times=10))

    reply = answered(lambda: shortcut(bot, message))

    assert reply.status == 200
    [response] = bot.fake.wait_for_responses(1)
    assert "#1" in response["text"], response["text"]
    [entry] = entries(bot)
    assert entry.text == "rolled back" and entry.permalink is None


def test_a_failed_template_is_reported_without_holding_a_database_connection(
    database: Database, fake_slack: FakeSlack, clock: Clock, tmp_path: Path
) -> None:
    """The postmortem's template fails on this incident's data (it passed the start-up
    check): the person is told through the response URL, which may be slow. That call was
    made inside the follow-up's transaction, holding a pooled connection (and on SQLite the
    process's write lock, which every command needs) for as long as Slack took."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "postmortem.md.j2").write_text(
        "# {{ pm.title }}\n{% if pm.title == 'Outage' %}{{ pm.title.nothing_here() }}{% endif %}\n"
    )
    settings = make_settings(database.url, fake_slack.api_url, templates_dir=folder)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    bot.fake.fail(RESPONSE_URL, Fault(delay=3))
    bot.command("start Outage")

    assert "is closed" in bot.command("close 9:00 AM - fixed").text

    def answering_slowly() -> bool:  # the fault is taken as the request arrives
        return not bot.fake.faults.get(RESPONSE_URL)

    for _ in range(1000):
        if answering_slowly():
            break
        time.sleep(0.01)
    assert answering_slowly(), "the template's failure was not being reported"
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    bot.wait()
    responses = bot.fake.wait_for_responses(1)
    assert any("no postmortem was uploaded: the template" in r["text"] for r in responses)


def test_a_failed_template_is_reported_with_its_file_and_line_and_what_to_do(
    database: Database, fake_slack: FakeSlack, clock: Clock, tmp_path: Path
) -> None:
    """A template edited in TEMPLATES_DIR after start-up (Jinja reloads it) that uses a name
    `pm` does not have: the person who closed was told only Jinja's message, which names
    neither the template nor the line, nor that the close is kept and how to get the
    postmortem once the template is fixed."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "postmortem.md.j2").write_text("# {{ pm.title }}\n\n{{ pm.no_such_field }}\n")
    settings = make_settings(database.url, fake_slack.api_url, templates_dir=folder)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    bot.command("start Outage")

    assert "is closed" in bot.command("close 9:00 AM - fixed").text
    bot.wait()

    [told] = [r["text"] for r in bot.fake.wait_for_responses(1) if ":warning:" in str(r)]
    assert f"{folder / 'postmortem.md.j2'} failed at line 3" in told
    assert "no_such_field" in told
    assert "INC-1 is closed" in told
    assert "`incident-bot export INC-1`" in told
    assert bot.fake.calls_to("chat.postMessage")  # the summary is still posted
    assert not bot.fake.calls_to("files.getUploadURLExternal")


@pytest.mark.parametrize(
    ("first", "typed", "user"),
    [
        (None, "start Outage", BOB),
        ("start Outage", "edit 1 9:00 AM - db failover", BOB),
        ("start Outage", "close 9:00 AM - fixed", BOB),
        ("start Outage", "commander <@U0CAROL001|carol>", ALICE),
    ],
)
def test_slack_is_asked_about_people_before_the_commands_transaction(
    bot: Bot, first: str | None, typed: str, user: str
) -> None:
    """`users.info` may take a second; asked inside the command's transaction, it kept the
    request's record (on SQLite the process's write lock, which every command needs) and
    the incident's row lock meanwhile."""
    bot.fake.users["U0CAROL001"] = "Europe/Berlin"
    if first is not None:
        bot.command(first)
        if "edit" in typed:
            bot.command("note the db failed over")
    bot.fake.fail("users.info", Fault(delay=0.8))

    with ThreadPoolExecutor(1) as pool:
        # A mention goes as Slack sends it, as markup.
        answer = pool.submit(bot.command, typed, user=user, escaped="<@" in typed)
        for _ in range(500):
            if not bot.fake.faults.get("users.info"):  # taken as the call arrived
                break
            time.sleep(0.01)
        assert not bot.fake.faults.get("users.info"), "Slack was not asked about anyone"
        held = bot.services.engine.pool.checkedout()  # type: ignore[attr-defined]
        reply = answer.result(timeout=30)

    assert held == 0
    assert reply.status == 200 and ":warning:" not in reply.text
