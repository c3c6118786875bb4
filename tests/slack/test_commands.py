"""`/incident` end to end: signed requests into the real Bolt app, Slack played by the stand-in."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, insert, select

from bot import incidents
from bot.app import build_app
from bot.demo import FakeSlack, Fault, SlashCommand, hum_replay
from bot.incidents import MAX_TEXT_LENGTH
from bot.models import (
    Action,
    EntryRevision,
    FieldChange,
    HandledRequest,
    Incident,
    Postmortem,
    RoleAssignment,
    TimelineEntry,
)
from bot.services import RequestPruning, build_services
from bot.slack.commands import SUBCOMMANDS
from tests.conftest import (
    ALICE,
    BOB,
    CHANNEL,
    NOBODY,
    NOW,
    SECRET,
    TEAM,
    Bot,
    Clock,
    Database,
    Reply,
    at_once,
    make_settings,
)
from tests.slack.test_capture import PIN_TS, reaction

REFERENCE = Path(__file__).resolve().parents[1] / "reference-postmortems"
HUM = REFERENCE / "hum-ddos-outage.md"
START_X = (
    "team_id=T0TEST0001&channel_id=C0TEST0001&user_id=U0ALICE001"
    "&command=%2Fincident&text=start+x&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fr"
)


def count(bot: Bot, model: type) -> int:
    with bot.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def stored_entries(bot: Bot) -> list[TimelineEntry]:
    with bot.services.sessions() as session:
        return list(
            session.scalars(
                select(TimelineEntry).order_by(TimelineEntry.occurred_at, TimelineEntry.id)
            )
        )


def the_incident(bot: Bot, channel: str = CHANNEL, team: str = TEAM) -> Incident:
    with bot.services.sessions() as session:
        return session.scalars(
            select(Incident).where(Incident.channel_id == channel, Incident.team_id == team)
        ).one()


# --- start ----------------------------------------------------------------------------------


def test_start_opens_an_incident_and_tells_the_channel(bot: Bot) -> None:
    reply = bot.command("start Checkout returns 500s")

    assert reply.status == 200
    assert reply.in_channel
    assert "INC-1" in reply.text and "Checkout returns 500s" in reply.text
    incident = the_incident(bot)
    assert (incident.number, incident.title, incident.status) == (
        1,
        "Checkout returns 500s",
        "open",
    )
    assert incident.started_at == bot.clock.now
    assert incident.timezone == "Africa/Nairobi"  # Alice's zone, from users.info
    assert incident.opened_by == ALICE


def test_start_with_a_time_is_read_in_the_starters_zone(bot: Bot) -> None:
    bot.command("start 1:06 AM - Outage", user=BOB)  # now is 22:00 the day before in Los Angeles

    incident = the_incident(bot)
    assert incident.timezone == "America/Los_Angeles"
    assert incident.started_at == datetime(2026, 11, 19, 9, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("channel_id", "channel_name"),
    [
        ("D0DM000001", "directmessage"),
        ("G0MPDM0001", "mpdm-ann--bob-1"),  # a group DM: a G id, like a private channel
        ("D0DM000002", "incident"),  # a D id is a DM whatever the name says
    ],
)
def test_start_in_a_direct_message_is_refused_and_nothing_is_stored(
    bot: Bot, channel_id: str, channel_name: str
) -> None:
    slash = SlashCommand(
        secret=SECRET,
        team_id=TEAM,
        channel_id=channel_id,
        user_id=ALICE,
        response_url=bot.fake.response_url(channel_id),
        channel_name=channel_name,
    )
    reply = bot.dispatch(*slash.signed("start Outage"))

    assert reply.status == 200 and not reply.in_channel
    assert "start this one in a channel" in reply.text
    assert count(bot, Incident) == 0


@pytest.mark.parametrize("typed", ["note the db is down", "status", "close"])
def test_a_command_for_an_incident_in_a_direct_message_points_to_the_channel(
    bot: Bot, typed: str
) -> None:
    # Not "start one": start is refused here too.
    slash = SlashCommand(
        secret=SECRET,
        team_id=TEAM,
        channel_id="D0DM000001",
        user_id=ALICE,
        response_url=bot.fake.response_url("D0DM000001"),
        channel_name="directmessage",
    )
    reply = bot.dispatch(*slash.signed(typed))

    assert reply.status == 200 and not reply.in_channel
    assert "in the incident's channel" in reply.text and "/incident start" not in reply.visible
    assert count(bot, Incident) == 0


def test_start_in_a_private_channel_is_accepted(bot: Bot) -> None:
    slash = SlashCommand(
        secret=SECRET,
        team_id=TEAM,
        channel_id="G0PRIVATE1",
        user_id=ALICE,
        response_url=bot.fake.response_url("G0PRIVATE1"),
        channel_name="privategroup",
    )
    assert "INC-1" in bot.dispatch(*slash.signed("start Outage")).text
    assert count(bot, Incident) == 1


def test_second_start_in_the_same_channel_is_refused_and_names_the_open_one(bot: Bot) -> None:
    bot.command("start First")
    reply = bot.command("start Second")

    assert reply.status == 200
    assert not reply.in_channel
    assert "INC-1" in reply.text
    assert "First" in reply.visible
    assert count(bot, Incident) == 1


def test_numbers_count_per_workspace_and_workspaces_never_see_each_other(bot: Bot) -> None:
    assert "INC-1" in bot.command("start A", channel="C0AAAAAAA1").text
    assert "INC-2" in bot.command("start B", channel="C0BBBBBBB1").text
    other = {"team": "T0OTHER001", "channel": "C0AAAAAAA1"}  # same channel id, other workspace

    assert "no open incident" in bot.command("note hello", **other).text.lower()
    assert "INC-1" in bot.command("start C", **other).text
    bot.command("note from the other workspace", **other)

    assert "*INC-1*: C" in bot.command("status", **other).visible
    ours = bot.command("status", channel="C0AAAAAAA1").visible
    assert "*INC-1*: A" in ours
    assert "from the other workspace" not in ours


# --- note -----------------------------------------------------------------------------------


def test_note_is_stamped_with_the_moment_the_command_arrived(bot: Bot) -> None:
    bot.command("start Outage")
    bot.clock.advance(minutes=7)
    reply = bot.command("note Rolled back the deploy")

    assert reply.status == 200 and not reply.in_channel
    assert "Rolled back the deploy" in reply.text
    [entry] = stored_entries(bot)
    assert entry.text == "Rolled back the deploy"
    assert entry.occurred_at == bot.clock.now
    assert entry.author_id == ALICE


def test_note_with_a_time_is_read_in_the_writers_own_zone(bot: Bot) -> None:
    bot.command("start Outage")  # by Alice, Nairobi
    bot.command("note 8:30 AM - Alice saw errors")  # 05:30 UTC
    bot.command("note 9:45 PM - Bob saw errors", user=BOB)  # 21:45 PST on the 19th = 05:45 UTC
    bot.command("note 07:50 - someone unknown", user=NOBODY)  # INCIDENT_TIMEZONE (UTC)

    assert [(e.text, e.occurred_at) for e in stored_entries(bot)] == [
        ("someone unknown", datetime(2026, 11, 19, 7, 50, tzinfo=UTC)),  # 07:50 today is future
        ("Alice saw errors", datetime(2026, 11, 20, 5, 30, tzinfo=UTC)),
        ("Bob saw errors", datetime(2026, 11, 20, 5, 45, tzinfo=UTC)),
    ]


def test_a_note_that_starts_with_a_dash_keeps_it_and_shows_it(bot: Bot) -> None:
    # Unlike `close - x` and `edit 1 - x`: a note may be a list item, pasted as typed.
    bot.command("start Outage")

    reply = bot.command("note - restarted db-2")

    assert "- restarted db-2" in reply.text
    assert [entry.text for entry in stored_entries(bot)] == ["- restarted db-2"]


@pytest.mark.parametrize("zone", ["America", "Not/A_Zone", "../etc"])
def test_a_zone_slack_gives_that_is_no_zone_still_keeps_the_persons_name(
    bot: Bot, zone: str
) -> None:
    # A folder of zones ("America") makes ZoneInfo raise IsADirectoryError, not
    # ZoneInfoNotFoundError; the name Slack gave with it is still the person's.
    bot.fake.users[BOB] = zone
    bot.fake.names[BOB] = "bob"
    bot.command("start Outage")
    bot.command("note 07:50 - Bob, with a strange zone", user=BOB)  # INCIDENT_TIMEZONE (UTC)
    reaction(bot, bot.fake.post(CHANNEL, "db is back", user=BOB, ts=PIN_TS))
    bot.wait()

    noted, pinned = stored_entries(bot)
    assert noted.occurred_at == datetime(2026, 11, 19, 7, 50, tzinfo=UTC)
    assert pinned.author_name == "bob"


def test_text_that_starts_with_a_number_is_not_a_time(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("note 500 errors - checkout")
    [entry] = stored_entries(bot)
    assert entry.text == "500 errors - checkout"
    assert entry.occurred_at == bot.clock.now


def test_a_time_that_is_not_a_time_is_refused_and_nothing_is_stored(bot: Bot) -> None:
    bot.command("start Outage")
    reply = bot.command("note 25:99 - nope")
    assert reply.status == 200
    assert "25:99" in reply.text
    assert count(bot, TimelineEntry) == 0


@pytest.mark.parametrize(
    ("typed", "user", "says"),
    [
        ("note 0001-01-01 00:30 - typo in the year", ALICE, "too far from today"),
        ("note 9999-12-31 23:59 - typo in the year", BOB, "too far from today"),
        ("edit ² new text", ALICE, "is not an entry number"),  # "²".isdigit() is True
        ("delete ³", ALICE, "is not an entry number"),
    ],
)
def test_odd_numbers_are_refused_and_nothing_changes(
    bot: Bot, typed: str, user: str, says: str
) -> None:
    bot.command("start Outage")
    bot.command("note first")
    reply = bot.command(typed, user=user)
    assert reply.status == 200, reply.body
    assert says in reply.text
    [entry] = stored_entries(bot)
    assert (entry.text, entry.deleted_at) == ("first", None)


def test_slow_time_zone_lookup_falls_back_without_holding_up_the_ack(bot: Bot) -> None:
    bot.fake.fail("users.info", Fault(delay=3.0))
    reply = bot.command("start Outage")
    assert reply.status == 200 and "INC-1" in reply.text
    assert the_incident(bot).timezone == "UTC"  # INCIDENT_TIMEZONE, not Nairobi


def test_failed_time_zone_lookup_falls_back(bot: Bot) -> None:
    bot.fake.fail("users.info", Fault(status=500))
    bot.command("start Outage")
    assert the_incident(bot).timezone == "UTC"


def test_a_rate_limited_zone_lookup_is_retried_for_the_next_command(bot: Bot) -> None:
    bot.fake.fail("users.info", Fault(status=429, error="ratelimited", retry_after=1))
    bot.command("start Outage")  # waits 1 s at most, then uses the fallback zone
    assert len(bot.fake.wait_for("users.info", 2)) == 2  # retried after Retry-After

    bot.command("note 8:00 AM - restarted the pool")  # Alice, Nairobi: 05:00 UTC

    [entry] = stored_entries(bot)
    assert entry.occurred_at == datetime(2026, 11, 20, 5, 0, tzinfo=UTC)


def test_after_a_rate_limit_the_fallback_lasts_as_long_as_slack_asks(bot: Bot) -> None:
    bot.fake.fail("users.info", Fault(status=429, error="ratelimited", retry_after=1, times=2))
    bot.command("start Outage")
    bot.fake.wait_for("users.info", 2)  # refused twice: the fallback, for Retry-After's 1 s
    time.sleep(1.5)  # not ten minutes

    bot.command("note 8:00 AM - restarted the pool")

    assert len(bot.fake.calls_to("users.info")) == 3
    [entry] = stored_entries(bot)
    assert entry.occurred_at == datetime(2026, 11, 20, 5, 0, tzinfo=UTC)


# --- fields and measures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subcommand", "column"),
    [
        ("impact", "impact"),
        ("cause", "cause"),
        ("resolution", "resolution"),
        ("summary", "summary"),
    ],
)
def test_fields_latest_wins_and_history_is_kept(bot: Bot, subcommand: str, column: str) -> None:
    bot.command("start Outage")
    bot.command(f"{subcommand} first value")
    bot.clock.advance(minutes=1)
    reply = bot.command(f"{subcommand} second value", user=BOB)

    assert reply.status == 200 and "second value" in reply.text
    assert getattr(the_incident(bot), column) == "second value"
    with bot.services.sessions() as session:
        history = session.execute(
            select(FieldChange.field, FieldChange.value, FieldChange.changed_by).order_by(
                FieldChange.id
            )
        ).all()
    assert [tuple(row) for row in history] == [
        (column, "first value", ALICE),
        (column, "second value", BOB),
    ]
    assert count(bot, TimelineEntry) == 0  # not timeline entries


def test_actions_are_a_list(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("action Add rate limits")
    reply = bot.command("action Page the database team sooner")
    assert "2" in reply.text
    with bot.services.sessions() as session:
        assert list(session.scalars(select(Action.text).order_by(Action.id))) == [
            "Add rate limits",
            "Page the database team sooner",
        ]


# --- close ----------------------------------------------------------------------------------


def test_close_posts_a_summary_and_uploads_the_markdown_postmortem(bot: Bot) -> None:
    bot.command("start 8:00 AM - Checkout is down")
    bot.command("impact Customers could not pay")
    bot.command("cause an expired TLS certificate")
    reply = bot.command("close 8:42 AM - Certificate renewed")
    bot.wait()

    assert reply.status == 200 and "INC-1" in reply.text
    incident = the_incident(bot)
    assert incident.status == "closed"
    assert incident.closed_at == datetime(2026, 11, 20, 5, 42, tzinfo=UTC)
    assert stored_entries(bot)[-1].text == "Certificate renewed"

    [posted] = bot.fake.calls_to("chat.postMessage")
    assert posted.params["channel"] == CHANNEL
    assert "INC-1" in posted.params["text"]
    assert posted.token == "xoxb-test-token"
    [completed] = bot.fake.calls_to("files.completeUploadExternal")
    assert completed.params["channel_id"] == CHANNEL
    markdown = bot.fake.uploaded_text()
    assert markdown.startswith("# Postmortem: Checkout is down")
    assert "From 8:00 AM to 8:42 AM EAT, customers could not pay." in markdown
    assert "42 minutes" in markdown
    assert "* 8:42 AM - Certificate renewed" in markdown
    with bot.services.sessions() as session:
        assert session.scalars(select(Postmortem.markdown)).one() == markdown


def test_close_without_text_adds_no_entry(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    assert the_incident(bot).status == "closed"
    assert count(bot, TimelineEntry) == 0


def test_close_with_only_a_time(bot: Bot) -> None:
    bot.command("start 8:00 AM - Outage")
    bot.command("close 8:30 AM")
    bot.wait()
    incident = the_incident(bot)
    assert incident.closed_at == datetime(2026, 11, 20, 5, 30, tzinfo=UTC)
    assert count(bot, TimelineEntry) == 0


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("close - fixed", ["fixed"]),
        ("close -  fixed", ["fixed"]),
        ("close -", []),
        ("close INC-1 - fixed", ["fixed"]),
        ("close 8:30 AM - - a dash the text starts with", ["- a dash the text starts with"]),
        ("close -5% errors left", ["-5% errors left"]),
    ],
)
def test_a_close_with_no_time_before_the_separator_keeps_the_separator_out_of_the_text(
    bot: Bot, typed: str, stored: list[str]
) -> None:
    bot.command("start 8:00 AM - Outage")

    reply = bot.command(typed)
    bot.wait()

    assert the_incident(bot).status == "closed", reply.text
    assert [entry.text for entry in stored_entries(bot)] == stored


def test_close_before_the_start_is_refused_and_nothing_changes(bot: Bot) -> None:
    bot.command("start 8:00 AM - Outage")
    reply = bot.command("close 7:30 AM - too early")
    assert reply.status == 200
    assert "before" in reply.text.lower()
    assert the_incident(bot).status == "open"
    assert count(bot, TimelineEntry) == 0
    assert bot.fake.calls_to("chat.postMessage") == []


def test_after_close_the_channel_can_start_again(bot: Bot) -> None:
    bot.command("start One")
    bot.command("close")
    bot.wait()
    assert "INC-2" in bot.command("start Two").text


def test_summary_is_still_shared_in_a_private_channel_the_bot_is_not_in(bot: Bot) -> None:
    bot.fake.members_only.add(CHANNEL)
    bot.fake.private.add(CHANNEL)
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    responses = bot.fake.wait_for_responses(2)
    assert any(r.get("response_type") == "in_channel" and "INC-1" in r["text"] for r in responses)
    assert any("invite" in r["text"].lower() for r in responses)
    assert not bot.fake.uploads
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Postmortem)) == 1


def test_a_failed_upload_is_reported_and_the_postmortem_is_kept(bot: Bot) -> None:
    bot.fake.fail("files.getUploadURLExternal", Fault(error="internal_error"))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    responses = bot.fake.wait_for_responses(1)
    assert any("could not upload" in r["text"] and "export INC-1" in r["text"] for r in responses)
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Postmortem)) == 1


def test_a_summary_answer_cut_short_is_reported_and_the_upload_still_happens(bot: Bot) -> None:
    # A 200 whose body stops short: the message may or may not be posted, so it is not sent again.
    bot.fake.fail("chat.postMessage", Fault(cut=True, times=5))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    responses = bot.fake.wait_for_responses(1)
    assert any("could not reach Slack to post the summary" in r["text"] for r in responses)
    [uploaded] = bot.fake.uploads.values()
    assert uploaded.startswith(b"# Postmortem: Outage")


def test_an_upload_answer_cut_short_is_reported(bot: Bot) -> None:
    bot.fake.fail("files.completeUploadExternal", Fault(cut=True, times=5))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    responses = bot.fake.wait_for_responses(1)
    assert any("could not upload" in r["text"] and "export INC-1" in r["text"] for r in responses)


def test_when_joining_is_refused_the_summary_goes_through_the_response_url(bot: Bot) -> None:
    bot.fake.members_only.add(CHANNEL)  # a public channel the bot is not in
    bot.fake.fail("conversations.join", Fault(error="missing_scope", times=10))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    responses = bot.fake.wait_for_responses(2)
    assert any(r.get("response_type") == "in_channel" and "INC-1" in r["text"] for r in responses)
    assert any("Invite me with /invite" in r["text"] for r in responses)


def test_slack_rate_limit_on_the_summary_is_retried(bot: Bot) -> None:
    bot.fake.fail("chat.postMessage", Fault(status=429, error="ratelimited", retry_after=1))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    assert len(bot.fake.calls_to("chat.postMessage")) == 2
    assert bot.fake.uploads


# --- status and help ---------------------------------------------------------------------


def test_status_shows_the_incident_and_its_timeline(bot: Bot) -> None:
    bot.command("start 8:00 AM - Outage")
    bot.command("note 8:05 AM - first")
    bot.command("note 8:10 AM - second")
    bot.command("impact Everyone")
    reply = bot.command("status")
    assert reply.status == 200 and not reply.in_channel
    for expected in ("INC-1", "Outage", "8:05 AM", "first", "8:10 AM", "second", "Everyone"):
        assert expected in reply.visible


def test_status_and_timeline_count_a_single_entry_in_the_singular(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("note first")

    status = bot.command("status")
    timeline = bot.command("timeline")

    assert status.text == "INC-1: 1 timeline entry so far"
    assert timeline.text == "INC-1: 1 timeline entry"
    assert "*INC-1 timeline* (1 entry)" in timeline.visible
    assert "entries" not in status.visible + timeline.visible
    bot.command("note second")
    assert bot.command("status").text == "INC-1: 2 timeline entries so far"


def test_replies_name_a_zone_without_letters_as_the_postmortem_does(bot: Bot) -> None:
    kathmandu = "U0KTM00001"
    bot.fake.users[kathmandu] = "Asia/Kathmandu"  # UTC+05:45: tzdata's abbreviation is "+0545"
    bot.command("start 11:00 AM - Outage", user=kathmandu)  # now is 11:45 AM there

    noted = bot.command("note 11:10 AM - restarting", user=kathmandu)
    status = bot.command("status", user=kathmandu)
    timeline = bot.command("timeline", user=kathmandu)
    bot.command("close 11:40 AM", user=kathmandu)
    bot.wait()

    [summary] = bot.fake.calls_to("chat.postMessage")
    assert "From 11:00 AM to 11:40 AM UTC+0545" in str(summary.params)
    assert "at 11:10 AM UTC+0545: restarting" in noted.text
    assert "Open since 11:00 AM UTC+0545" in status.visible
    assert "11:10 AM UTC+0545 - restarting" in status.visible
    assert "11:10 AM UTC+0545 - restarting" in timeline.visible
    assert "M +0545" not in noted.visible + status.visible + timeline.visible


def test_refusals_name_a_zone_without_letters_as_the_postmortem_does(bot: Bot) -> None:
    kathmandu = "U0KTM00001"
    bot.fake.users[kathmandu] = "Asia/Kathmandu"
    bot.command("start 11:00 AM - Outage", user=kathmandu)

    refused = bot.command("close 10:30 AM", user=kathmandu)

    assert "started at 2026-11-20 11:00 UTC+0545" in refused.text
    assert "(2026-11-20 10:30 UTC+0545)" in refused.text


def test_status_of_a_long_incident_shows_the_latest_entries(bot: Bot) -> None:
    bot.command("start Outage")
    for n in range(30):
        bot.clock.advance(minutes=1)
        bot.command(f"note step {n}")
    reply = bot.command("status")
    assert "step 29" in reply.visible
    assert "step 0 " not in reply.visible and "step 0\\" not in reply.visible
    assert "10 earlier entries not shown" in reply.visible


@pytest.mark.parametrize("typed", ["help", "", "frobnicate now", "note", "start", "impact", "  "])
def test_help_unknown_and_missing_text_list_every_subcommand(bot: Bot, typed: str) -> None:
    reply = bot.command(typed)
    assert reply.status == 200 and not reply.in_channel
    for usage in (
        "start [<when> -] <title>",
        "note [<when> -] <text>",
        "impact <text>",
        "cause <text>",
        "resolution <text>",
        "summary <text>",
        "action <text>",
        "close [<when> -] [<text>]",
        "status",
        "help",
    ):
        # As Slack must receive them: < and > as entities, which Slack shows as < and >.
        assert usage.replace("<", "&lt;").replace(">", "&gt;") in reply.text, usage
    assert count(bot, Incident) == 0


def test_help_says_which_times_a_when_can_be(bot: Bot) -> None:
    said = bot.command("help").visible
    for example in ("`1:06 AM`", "`2026-11-20 01:06`", "`now`", "`10 min ago`"):
        assert example in said, example
    assert "detected" in said and "no ` - `" in said


@pytest.mark.parametrize("typed", ["help", "frobnicate", "severity"])
def test_help_names_the_severities_and_roles_this_team_configured(
    database: Database, fake_slack: FakeSlack, clock: Clock, typed: str
) -> None:
    """With INCIDENT_SEVERITIES=P1,P2,P3 the help told people to pick from SEV1 to SEV4,
    which `/incident severity` then refused; it lists what the bot accepts."""
    settings = make_settings(
        database.url, fake_slack.api_url, severities=("P1", "P2", "P3"), roles=("lead", "comms")
    )
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)

    said = bot.command(typed).visible

    assert "`P1`, `P2`, `P3`" in said and "SEV" not in said
    assert "`lead`, `comms`" in said and "scribe" not in said


def shown_lines(reply: Reply) -> list[str]:
    """The lines of the reply's sections, which Slack shows (not the notification's text)."""
    blocks = reply.body["blocks"]
    sections = [block["text"]["text"] for block in blocks if block["type"] == "section"]
    return [line for section in sections for line in section.splitlines()]


def test_help_names_every_alias_with_its_subcommand(bot: Bot) -> None:
    """README lists the aliases (`sev` = `severity`); the help, which people read in Slack,
    named none of them."""
    lines = shown_lines(bot.command("help"))
    for sub in SUBCOMMANDS:
        [line] = [each for each in lines if each.startswith(f"`/incident {sub.name}")]
        for alias in sub.aliases:
            assert f"`{alias}`" in line, (sub.name, alias)


def test_help_with_many_configured_levels_still_lists_every_subcommand(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    levels = tuple(f"LEVEL_{n:02d}_{'X' * 23}" for n in range(60))  # 32 characters each
    settings = make_settings(database.url, fake_slack.api_url, severities=levels)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)

    shown = "\n".join(shown_lines(bot.command("help")))  # Bot.dispatch: Slack would take it

    assert f"`{levels[-1]}`" in shown
    for sub in SUBCOMMANDS:
        assert f"`/incident {sub.name}" in shown, sub.name


def test_help_names_the_default_severities_and_roles(bot: Bot) -> None:
    said = bot.command("help").visible
    assert "`SEV1`, `SEV2`, `SEV3`, `SEV4`" in said
    assert "`commander`, `communications`, `scribe`" in said


# What may stand between < and > in mrkdwn: a mention, a channel, a special, a link.
SLACK_CONTROL = re.compile(r"<(?:[@#!][^<>]*|https?://[^<>]*)>")


def test_no_reply_sends_a_bare_angle_bracket(bot: Bot) -> None:
    # Slack reads < and > as the edges of a control sequence: its docs say to send &lt; &gt;.
    typed = [
        "help",
        "note",  # missing text: the problem and the help
        "status",  # no incident: how to start one
        "start Outage <b>bold</b>",
        "note a <tag> & more",
        "timeline",
        "status",
        "close",
        "note after the close",  # closed: how to reopen
    ]
    for each in typed:
        reply = bot.command(each)
        texts = [reply.body["text"]]
        for block in reply.body.get("blocks", []):
            if block["type"] == "section":
                texts.append(block["text"]["text"])
            elif block["type"] == "context":
                texts += [element["text"] for element in block["elements"]]
        for text in texts:
            stray = SLACK_CONTROL.sub("", text)
            assert "<" not in stray and ">" not in stray, (each, stray[:300])
    bot.wait()


def test_unknown_subcommand_is_named_in_the_reply(bot: Bot) -> None:
    assert "frobnicate" in bot.command("frobnicate now").text


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("ntoe DB back up", "note"),
        ("stauts", "status"),
        ("clsoe 2:46 AM - fixed", "close"),
        ("sevrity 1", "severity"),
        ("comander @ann", "commander"),
    ],
)
def test_a_mistyped_subcommand_is_answered_with_the_one_meant(
    bot: Bot, typed: str, meant: str
) -> None:
    bot.command("start Outage")

    reply = bot.command(typed)

    assert not reply.in_channel
    assert f"did you mean `/incident {meant}`?" in reply.text.lower(), reply.text
    assert count(bot, TimelineEntry) == 0 and the_incident(bot).status == "open"
    assert the_incident(bot).severity is None


def test_an_unknown_subcommand_like_none_suggests_nothing(bot: Bot) -> None:
    reply = bot.command("frobnicate now")

    assert "did you mean" not in reply.text.lower()


@pytest.mark.parametrize(
    "typed",
    [
        "note hello",
        "impact x",
        "cause x",
        "resolution x",
        "summary x",
        "action x",
        "close",
        "status",
    ],
)
def test_without_an_open_incident_nothing_is_stored(bot: Bot, typed: str) -> None:
    reply = bot.command(typed)
    assert reply.status == 200
    assert "no open incident" in reply.text.lower()
    assert "/incident start" in reply.visible
    assert count(bot, Incident) == count(bot, TimelineEntry) == count(bot, FieldChange) == 0


# --- what people type ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "space",
    ["\u00a0", "\u3000", "\t", "\u2009"],
    ids=["no-break space", "ideographic space", "tab", "thin space"],
)
def test_any_space_after_the_subcommand_separates_it_from_the_text(bot: Bot, space: str) -> None:
    # A phone keyboard, an input method or a paste can put a space other than U+0020 there.
    bot.command("start Outage")

    reply = bot.command(f"note{space}DB back up")

    assert "Added to *INC-1*" in reply.text
    assert [entry.text for entry in stored_entries(bot)] == ["DB back up"]


def test_text_over_the_limit_is_refused_with_the_limit_named(bot: Bot) -> None:
    bot.command("start Outage")
    reply = bot.command("note " + "x" * (MAX_TEXT_LENGTH + 1))
    assert "4,000" in reply.text
    assert count(bot, TimelineEntry) == 0
    assert bot.command("note " + "y" * MAX_TEXT_LENGTH).status == 200
    assert count(bot, TimelineEntry) == 1


def test_huge_title_is_refused(bot: Bot) -> None:
    reply = bot.command("start " + "x" * 5000)
    assert "4,000" in reply.text
    assert count(bot, Incident) == 0


def test_slack_markup_is_stored_as_typed_and_never_pings(bot: Bot) -> None:
    bot.command("start Outage")
    escaped = "&lt;b&gt; R&amp;D &amp;amp; <@U0BOB00001|bob> told <!channel> and <!here> @everyone"
    reply = bot.command(f"note {escaped}", escaped=True)

    [entry] = stored_entries(bot)
    assert entry.text == "<b> R&D &amp; @bob told @channel and @here @everyone"
    for ping in ("<!channel>", "<!here>", "<!everyone>"):
        assert ping not in reply.visible
    assert not re.search(r"(?<!\u200b)@(channel|here|everyone)\b", reply.text)
    assert "&lt;b&gt;" in reply.text  # shown as typed, not as markup


def test_a_channel_a_command_mentions_without_its_name_is_stored_by_its_name(bot: Bot) -> None:
    """Slack escapes a channel in a command's text as `<#C0123ABCD|general>`, but sends some
    (private channels, Slack Connect ones) as `<#C0123ABCD|>` or `<#C0123ABCD>`: the note
    read "#C0WARROOM1" where the person had typed "#war-room"."""
    bot.fake.channel_names["war-room"] = "C0WARROOM1"
    bot.fake.channel_names["db-team"] = "G0DBTEAM01"
    bot.command("start Outage")

    reply = bot.command("note moving to <#C0WARROOM1|> with <#G0DBTEAM01>", escaped=True)

    [entry] = stored_entries(bot)
    assert entry.text == "moving to #war-room with #db-team"
    assert "#war-room" in reply.visible


def test_a_person_a_command_mentions_without_their_name_is_stored_by_their_name(
    bot: Bot,
) -> None:
    """Slack escapes a person in a command's text as `<@U0123ABCD|bob>`, but some clients
    and its newer formats send `<@U0123ABCD>` alone: notes, causes and actions kept
    "@U0BOB00001" where the person had typed "@Bob"."""
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")

    reply = bot.command("note paged <@U0BOB00001> and <@U0GONE0001>", escaped=True)
    bot.command("cause <@U0BOB00001|>'s deploy", escaped=True)
    bot.command("action <@U0BOB00001> adds an alert", escaped=True)

    [entry] = stored_entries(bot)
    # Slack does not know U0GONE0001 (user_not_found): its id is all there is to show.
    assert entry.text == "paged @Bob and @U0GONE0001"
    assert "@Bob" in reply.visible
    assert the_incident(bot).cause == "@Bob's deploy"
    with bot.services.sessions() as session:
        assert list(session.scalars(select(Action.text))) == ["@Bob adds an alert"]
    asked = [call.params["user"] for call in bot.fake.calls_to("users.info")]
    assert asked.count(BOB) == 1  # cached


def test_a_note_that_mentions_no_one_asks_slack_nothing(bot: Bot) -> None:
    """The busiest path: a note without mentions does not wait on Slack."""
    bot.command("start Outage")
    asked = len(bot.fake.calls)

    bot.command("note db primary failed over &amp; replica lag 3s", escaped=True)

    assert [call.method for call in bot.fake.calls[asked:]] == []


def test_template_syntax_in_text_is_just_text(bot: Bot) -> None:
    bot.command("start {{ 7*7 }} {% if true %}boom{% endif %}")
    bot.command("note {{ config }}")
    bot.command("close")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "49" not in markdown
    assert "{{ 7\\*7 }}" in markdown and "{{ config }}" in markdown


# --- signatures ---------------------------------------------------------------------------


def test_forged_signature_is_rejected_and_nothing_is_stored(bot: Bot) -> None:
    body = START_X
    headers = bot.signed(body)
    headers["x-slack-signature"] = "v0=" + "0" * 64
    assert bot.dispatch(body, headers).status == 401
    assert count(bot, Incident) == 0


def test_body_changed_after_signing_is_rejected(bot: Bot) -> None:
    body = START_X
    headers = bot.signed(body)
    assert bot.dispatch(body.replace("start+x", "start+y"), headers).status == 401
    assert count(bot, Incident) == 0


def test_stale_signature_is_rejected(bot: Bot) -> None:
    body = START_X
    headers = bot.signed(body, timestamp=int(time.time()) - 10 * 60)
    assert bot.dispatch(body, headers).status == 401
    assert count(bot, Incident) == 0


def test_missing_signature_is_rejected(bot: Bot) -> None:
    body = START_X
    assert bot.dispatch(body, {"content-type": "application/x-www-form-urlencoded"}).status == 401
    assert count(bot, Incident) == 0


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-slack-request-timestamp", "soon"),
        ("x-slack-request-timestamp", "1700000000.5"),
        ("x-slack-request-timestamp", ""),
        ("x-slack-signature", "v0=\u00e9"),
        ("x-slack-signature", "v0=" + "\u0660" * 64),
    ],
)
def test_a_malformed_signature_header_is_a_401_not_a_500(
    bot: Bot, caplog: pytest.LogCaptureFixture, header: str, value: str
) -> None:
    # Anyone can send these; they are not Slack's, and not the app's failure to log as one.
    body = START_X
    headers = {**bot.signed(body), header: value}
    with caplog.at_level(logging.INFO):
        assert bot.dispatch(body, headers).status == 401
    assert count(bot, Incident) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_refused_signature_does_not_put_the_request_in_the_log(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    # Slack's own request, arriving late (a server clock that drifted, a slow proxy): it is
    # refused, and its response URL (which can post in the channel) and the verification
    # token must not be logged with it.
    body, _ = bot.signed_command("note the body of a refused request")
    headers = bot.signed(body, timestamp=int(time.time()) - 10 * 60)
    with caplog.at_level(logging.INFO):  # as `serve` logs
        assert bot.dispatch(body, headers).status == 401
    logged = "\n".join(r.getMessage() for r in caplog.records)
    url = bot.fake.response_url(CHANNEL)
    assert url not in logged and quote(url, safe="") not in logged
    assert "legacy-verification-token" not in logged


# --- the same request twice ----------------------------------------------------------------
# A signed request can arrive again byte for byte within Slack's 5 minutes: replayed by
# someone who captured it, or retried by a proxy. Its trigger_id is Slack's, one per
# invocation: the second delivery records nothing.


def _state(bot: Bot) -> dict[str, Any]:
    """Everything a command can change, to compare before and after a replay."""
    with bot.services.sessions() as session:
        return {
            "incidents": [
                (i.number, i.status, i.severity, i.detected_at, i.mitigated_at, i.impact)
                for i in session.scalars(select(Incident).order_by(Incident.id))
            ],
            "entries": [
                (e.number, e.text, e.occurred_at, e.deleted_at)
                for e in session.scalars(select(TimelineEntry).order_by(TimelineEntry.id))
            ],
            "counts": {
                model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (
                    Action,
                    FieldChange,
                    Postmortem,
                    RoleAssignment,
                    EntryRevision,
                )
            },
        }


def test_a_replayed_note_is_recorded_once_and_answered_with_its_entry(bot: Bot) -> None:
    bot.command("start Outage")
    request = bot.signed_command("note the db is down")
    assert "Added to *INC-1*" in bot.dispatch(*request).text
    bot.command("note failing over")

    again = bot.dispatch(*request)

    assert again.status == 200
    assert "already" in again.text and "INC-1" in again.text and "#1" in again.text
    assert [(e.number, e.text) for e in stored_entries(bot)] == [
        (1, "the db is down"),
        (2, "failing over"),
    ]
    bot.command("note next")  # no number was used up by the replay
    assert [e.number for e in stored_entries(bot)] == [1, 2, 3]


def test_notes_without_a_trigger_id_are_each_recorded(bot: Bot) -> None:
    bot.command("start Outage")
    request = bot.signed_command("note the db is down", with_trigger_id=False)
    bot.dispatch(*request)
    bot.dispatch(*request)  # nothing tells a replay apart from the same words typed again
    assert [e.number for e in stored_entries(bot)] == [1, 2]


@pytest.mark.parametrize(
    ("before", "replayed", "between"),
    [
        ([], "impact users see 503s", ["impact only checkout"]),
        ([], "action add a DDoS filter", []),
        ([], "severity SEV2", ["severity SEV1"]),
        ([], "commander <@U0BOB00001>", ["commander <@U0ALICE001>"]),
        ([], "role scribe <@U0BOB00001>", []),
        ([], "detected", []),
        ([], "mitigated 8:30 AM", []),
        (["note first"], "edit 1 the first, edited", ["edit 1 the first, edited again"]),
        (["note first"], "delete 1", []),
        ([], "close", ["reopen not over"]),
        (["close"], "reopen not over", ["close"]),
    ],
)
def test_a_replayed_command_changes_nothing_the_second_time(
    bot: Bot, before: list[str], replayed: str, between: list[str]
) -> None:
    bot.command("start 8:00 AM - Outage")
    for typed in before:
        bot.command(typed)
    request = bot.signed_command(replayed, escaped=True)
    first = bot.dispatch(*request)
    assert ":warning:" not in first.visible, first.text
    bot.clock.advance(minutes=2)  # a replay comes later: "now" is not the same
    for typed in between:
        assert ":warning:" not in bot.command(typed, escaped=True).visible
    bot.wait()
    state = _state(bot)

    again = bot.dispatch(*request)
    bot.wait()

    assert again.status == 200
    assert "already" in again.text, again.text
    assert _state(bot) == state


def test_a_replayed_start_opens_no_second_incident(bot: Bot) -> None:
    request = bot.signed_command("start Outage")
    bot.dispatch(*request)
    bot.command("close")
    bot.wait()

    again = bot.dispatch(*request)

    assert "already" in again.text and not again.in_channel
    assert [i.number for i in _incidents(bot)] == [1]


def _incidents(bot: Bot) -> list[Incident]:
    with bot.services.sessions() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)))


def test_the_same_request_delivered_twice_at_once_is_carried_out_once(bot: Bot) -> None:
    bot.command("start Outage")
    request = bot.signed_command("action add a DDoS filter")
    answers = at_once(4, lambda _: bot.dispatch(*request).text)

    assert sorted("already" in answer for answer in answers) == [False, True, True, True]
    assert count(bot, Action) == 1


def test_commands_without_a_trigger_id_still_run(bot: Bot) -> None:
    start = bot.signed_command("start Outage", with_trigger_id=False)
    assert "INC-1" in bot.dispatch(*start).text
    action = bot.signed_command("action add a filter", with_trigger_id=False)
    bot.dispatch(*action)
    bot.dispatch(*action)
    assert count(bot, Action) == 2


def handled(bot: Bot) -> list[str]:
    """The commands whose requests are remembered, oldest first."""
    with bot.services.sessions() as session:
        query = select(HandledRequest.command).order_by(HandledRequest.handled_at)
        return list(session.scalars(query))


def test_requests_handled_over_a_day_ago_are_forgotten_and_recent_ones_kept(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("impact users see 503s")
    bot.wait()
    assert handled(bot) == ["start", "impact"]
    bot.clock.advance(days=1, minutes=1)  # Slack sends no request again after 5 minutes

    recent = bot.signed_command("action add a filter")
    bot.dispatch(*recent)
    bot.wait()

    assert handled(bot) == ["action"]
    assert "already" in bot.dispatch(*recent).text  # what is kept still refuses a replay
    assert count(bot, Action) == 1


def test_forgetting_old_requests_is_done_in_batches_until_none_is_left(bot: Bot) -> None:
    bot.services.pruning = RequestPruning(batch=2, every=timedelta(minutes=10))
    with bot.services.engine.begin() as connection:
        connection.execute(
            insert(HandledRequest),
            [
                {"request_id": f"old{n}", "team_id": TEAM, "command": "old", "handled_at": NOW}
                for n in range(5)
            ],
        )
    bot.clock.advance(days=2)
    bot.command("start Outage")  # the first command a process sees: the first batch in 10 min
    bot.wait()
    assert handled(bot).count("old") == 5
    bot.clock.advance(minutes=10)

    left = []
    for typed in ("impact users see 503s", "cause a bad deploy", "summary bad", "fix undo"):
        bot.command(typed)
        bot.wait()
        left.append(handled(bot).count("old"))

    assert left == [3, 1, 0, 0]  # a full batch: the next command starts another at once
    assert len(handled(bot)) == 5


def test_two_workers_forgetting_at_once_forget_each_old_request_once(bot: Bot) -> None:
    old = bot.clock.now
    with bot.services.engine.begin() as connection:
        connection.execute(
            insert(HandledRequest),
            [
                {"request_id": f"old{n}", "team_id": TEAM, "command": "impact", "handled_at": old}
                for n in range(6)
            ],
        )
    later = bot.clock.advance(days=2)

    def forget(_: int) -> int:
        with bot.services.sessions() as session:
            forgotten = incidents.forget_handled_requests(session, now=later, limit=6)
            session.commit()
            return forgotten

    assert sum(at_once(2, forget)) == 6
    assert handled(bot) == []


# --- the reference incident ---------------------------------------------------------------


def _bullets(markdown: str, heading: str) -> list[str]:
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [line[2:].strip() for line in section.splitlines() if line.startswith("* ")]


def test_replaying_the_hum_outage_gives_its_window_timeline_and_measures(bot: Bot) -> None:
    for typed in hum_replay("2026-11-20"):
        assert bot.command(typed).status == 200, typed
    bot.wait()
    ours = bot.fake.uploaded_text()
    reference = HUM.read_text()

    assert "From 1:06 AM to 2:46 AM EAT, " in reference  # the reference's own window
    assert "From 1:06 AM to 2:46 AM EAT, " in ours
    assert "1 hour 40 minutes" in ours
    assert _bullets(ours, "Timeline") == _bullets(reference, "Timeline")
    assert _bullets(ours, "Corrective and preventative measures") == _bullets(
        reference, "Corrective and preventative measures"
    )
    for heading in ("## Issue summary", "## Timeline", "## Root cause and resolution"):
        assert f"\n\n{heading}\n\n" in ours, f"{heading} is not a paragraph of its own"
    headings = [line for line in ours.splitlines() if line.startswith("## ")]
    assert headings == [line.strip() for line in reference.splitlines() if line.startswith("## ")]


def test_the_bot_joins_a_public_channel_to_upload_the_postmortem(bot: Bot) -> None:
    bot.fake.members_only.add(CHANNEL)  # posting there answers not_in_channel until it joins
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    assert [c.params["channel"] for c in bot.fake.calls_to("conversations.join")] == [CHANNEL]
    assert len(bot.fake.calls_to("chat.postMessage")) == 2  # refused, then posted as a member
    assert bot.fake.uploads


@pytest.mark.parametrize(
    "typed",
    ["payload", "payload= service returns 500", "the payload field is empty"],
)
def test_text_with_the_word_payload_is_read_as_typed(bot: Bot, typed: str) -> None:
    # Bolt alone reads such a form body as empty and leaves the command unanswered.
    assert "opened" in bot.command(f"start {typed}").text
    reply = bot.command(f"note {typed}")

    assert reply.status == 200
    assert reply.text.startswith("Added to *INC-1* at 9:00 AM EAT: ")
    with bot.services.sessions() as session:
        assert session.scalars(select(Incident.title)).one() == typed
        assert session.scalars(select(TimelineEntry.text)).one() == typed


def test_a_forged_body_with_the_word_payload_is_still_refused(bot: Bot) -> None:
    slash = SlashCommand(secret="not-the-signing-secret", team_id=TEAM, channel_id=CHANNEL)
    body, headers = slash.signed("start payload")

    reply = bot.dispatch(body, headers)

    assert reply.status == 401
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 0


def test_slacks_ssl_check_is_answered_as_bolt_answers_it(bot: Bot) -> None:
    # Slack checks the app's certificate with a POST of `ssl_check=1`; Bolt answers it 200
    # before its signature check, and the app's own check, which runs first, leaves it so.
    assert bot.dispatch("ssl_check=1&token=legacy-verification-token", {}).status == 200
    assert count(bot, Incident) == 0
