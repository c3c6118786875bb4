"""Managing the timeline and the incident from the channel, end to end through signed commands."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.app import build_app
from bot.demo import FakeSlack, Fault
from bot.models import EntryRevision, FieldChange, Incident, RoleAssignment, TimelineEntry
from bot.services import build_services
from bot.slack import replies
from bot.slack.channels import channel_name
from tests.conftest import ALICE, BOB, CHANNEL, Bot, Clock, Database, make_settings


def live(bot: Bot) -> list[tuple[int, str, datetime]]:
    with bot.services.sessions() as session:
        rows = session.execute(
            select(TimelineEntry.number, TimelineEntry.text, TimelineEntry.occurred_at)
            .where(TimelineEntry.deleted_at.is_(None))
            .order_by(TimelineEntry.occurred_at, TimelineEntry.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def incident(bot: Bot) -> Incident:
    with bot.services.sessions() as session:
        return session.scalars(select(Incident).order_by(Incident.id.desc())).first()  # type: ignore[return-value]


# --- timeline, edit, delete ---------------------------------------------------------------


def test_timeline_lists_entries_with_stable_short_numbers(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("note 8:10 AM - second in time, first recorded")
    bot.command("note 7:05 AM - first in time, second recorded")
    reply = bot.command("timeline")
    assert reply.status == 200 and not reply.in_channel
    visible = reply.visible
    assert visible.index("`#2` 7:05 AM") < visible.index("`#1` 8:10 AM")


def test_edit_changes_time_and_text_and_keeps_history(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("note 8:10 AM - rolled back")
    bot.clock.advance(minutes=5)
    # Bob is in Los Angeles: 9:05 PM there is 8:05 AM in Nairobi.
    reply = bot.command("edit 1 9:05 PM - rolled back the 2.3 deploy", user=BOB)
    assert reply.status == 200 and "rolled back the 2.3 deploy" in reply.text
    assert live(bot) == [
        (1, "rolled back the 2.3 deploy", datetime(2026, 11, 20, 5, 5, tzinfo=UTC))
    ]
    bot.command("edit #1 8:06 AM")  # time only
    bot.command("edit 1 new words only")  # text only
    assert live(bot) == [(1, "new words only", datetime(2026, 11, 20, 5, 6, tzinfo=UTC))]
    with bot.services.sessions() as session:
        history = session.scalars(select(EntryRevision).order_by(EntryRevision.id)).all()
    assert [(r.action, r.old_text, r.changed_by) for r in history] == [
        ("edit", "rolled back", BOB),
        ("edit", "rolled back the 2.3 deploy", "U0ALICE001"),
        ("edit", "rolled back the 2.3 deploy", "U0ALICE001"),
    ]
    assert history[0].old_occurred_at == datetime(2026, 11, 20, 5, 10, tzinfo=UTC)


def test_delete_drops_the_entry_from_the_postmortem_but_keeps_the_record(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("note keep me")
    bot.command("note drop me")
    reply = bot.command("delete 2")
    assert reply.status == 200 and "drop me" in reply.text
    assert [text for _, text, _ in live(bot)] == ["keep me"]
    with bot.services.sessions() as session:
        dropped = session.scalars(select(TimelineEntry).where(TimelineEntry.number == 2)).one()
    assert dropped.deleted_by == ALICE and dropped.deleted_at == bot.clock.now
    bot.command("close")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "keep me" in markdown and "drop me" not in markdown


@pytest.mark.parametrize(
    "typed",
    ["edit 9 x", "delete 9", "edit x y", "delete", "edit 1", "delete 1 extra", "edit 1 25:99 - x"],
)
def test_bad_edits_and_deletes_are_refused_and_change_nothing(bot: Bot, typed: str) -> None:
    bot.command("start Outage")
    bot.command("note the only entry")
    before = live(bot)
    reply = bot.command(typed)
    assert reply.status == 200
    assert live(bot) == before
    with bot.services.sessions() as session:
        assert session.scalars(select(EntryRevision)).all() == []


@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\t"])
def test_any_space_separates_the_entry_number_from_the_rest(bot: Bot, space: str) -> None:
    bot.command("start Outage")
    bot.command("note first")
    bot.command("note second")

    edited = bot.command(f"edit 1{space}db back up")
    timeline = bot.command(f"timeline 2{space}")
    deleted = bot.command(f"delete 2{space}")

    assert "is now" in edited.text, edited.text
    assert "from `#2` on" in timeline.visible, timeline.visible
    assert "is off" in deleted.text, deleted.text
    assert [text for _, text, _ in live(bot)] == ["db back up"]


def test_a_closed_incident_cannot_be_edited(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("note entry")
    bot.command("close")
    bot.wait()
    for typed in ("edit 1 changed", "delete 1", "severity SEV1", "detected"):
        reply = bot.command(typed)
        assert "INC-1" in reply.text and "closed" in reply.text, typed
    assert [text for _, text, _ in live(bot)] == ["entry"]


def test_deleted_entries_do_not_widen_the_window(bot: Bot) -> None:
    bot.command("start 8:00 AM - Outage")
    bot.command("note 6:00 AM - typo: wrong time")
    bot.command("delete 1")
    bot.command("close 8:30 AM")
    bot.wait()
    assert "From 8:00 AM to 8:30 AM EAT" in bot.fake.uploaded_text()


# --- key moments ----------------------------------------------------------------------------


def test_key_moments_give_time_to_detect_mitigate_and_resolve(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("detected 7:12 AM")
    bot.command("mitigated 8:05 AM")
    bot.command("close 8:40 AM")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "Time to detect: 12 minutes" in markdown
    assert "Time to mitigate: 1 hour 5 minutes" in markdown
    assert "Time to resolve: 1 hour 40 minutes" in markdown
    assert "* 7:12 AM - Impact detected" in markdown
    assert "* 8:05 AM - Impact mitigated" in markdown


def test_moments_count_from_a_back_dated_first_entry(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("note 6:50 AM - first errors in the logs")
    bot.command("detected 7:00 AM")
    bot.command("close 7:50 AM")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "Time to detect: 10 minutes" in markdown
    assert "Time to resolve: 1 hour" in markdown


def test_a_moment_not_recorded_is_said_so(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("detected 7:20 AM")
    bot.command("close 7:30 AM")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "Time to detect: 20 minutes. Time to mitigate: not recorded." in markdown


def test_moments_and_notes_can_be_now_or_counted_back_from_it(bot: Bot) -> None:
    # The clock reads 9:00 AM EAT.
    bot.command("start 8:00 AM - Outage")
    assert "8:15 AM" in bot.command("detected 45 min ago").text
    assert (
        "Added to *INC-1* at 8:50 AM EAT: rolled back"
        in bot.command("note 10 min ago - rolled back").text
    )
    bot.command("mitigated now")
    bot.command("close")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "Time to detect: 15 minutes" in markdown
    assert "Time to mitigate: 1 hour" in markdown
    assert "* 8:50 AM - rolled back" in markdown


def test_a_note_that_starts_with_a_time_without_the_dash_says_how_to_date_it(bot: Bot) -> None:
    """`note 8:50 AM rolled back` is stamped now with all its words: the reply gives the
    edit that dates it, and that edit, typed as given, does."""
    bot.command("start 8:00 AM - Outage")
    reply = bot.command("note 8:50 AM rolled back")
    assert "Added to *INC-1* at 9:00 AM EAT: 8:50 AM rolled back" in reply.text
    suggested = re.search(
        r"Meant it at 8:50 AM\? `/incident (edit 1 8:50 AM - rolled back)`", reply.text
    )
    assert suggested, reply.text

    bot.command(suggested.group(1))

    assert live(bot) == [(1, "rolled back", datetime(2026, 11, 20, 5, 50, tzinfo=UTC))]


@pytest.mark.parametrize(
    "typed",
    [
        "note 8:50 AM: rolled back",
        "note 8:50 AM, rolled back",
        "note 8:50 AM -- rolled back",
        "note 8:50 AM \u2013 rolled back",  # an en dash
        "note 8:50 AM \u2014 rolled back",  # an em dash, as phones write `--`
    ],
)
def test_the_edit_suggested_for_a_time_set_off_otherwise_than_by_the_dash_dates_it(
    bot: Bot, typed: str
) -> None:
    # `10:05: db back up` is how many write it; the edit suggested must work as given and
    # leave the text without the punctuation that set the time off.
    bot.command("start 8:00 AM - Outage")
    reply = bot.command(typed)
    suggested = re.search(r"`/incident (edit 1 [^`]*)`", reply.text)
    assert suggested, reply.text
    assert suggested.group(1) == "edit 1 8:50 AM - rolled back", reply.text

    bot.command(suggested.group(1))

    assert live(bot) == [(1, "rolled back", datetime(2026, 11, 20, 5, 50, tzinfo=UTC))]


def test_the_edit_suggested_for_a_long_note_never_holds_a_shortened_text(bot: Bot) -> None:
    bot.command("start 8:00 AM - Outage")
    long_text = "rolled back & " * 250  # 3,500 characters, more once escaped
    reply = bot.command(f"note 8:50 AM {long_text}")  # Bot.dispatch checks Slack's limits
    assert (
        "Meant it at 8:50 AM? `/incident edit 1 8:50 AM - &lt;the text without the time&gt;`"
        in (reply.text)
    ), reply.text[-300:]


def test_the_edit_suggested_for_a_note_escaping_lengthens_is_shown_below_the_echo(
    bot: Bot,
) -> None:
    # 700 `&` are 3,500 characters escaped: the echo is cut to its section, not the advice.
    bot.command("start 8:00 AM - Outage")
    reply = bot.command("note 8:50 AM " + "&" * 700)

    blocks = json.dumps(reply.body["blocks"], ensure_ascii=False)
    assert "Meant it at 8:50 AM? `/incident edit 1 8:50 AM - " in blocks


def test_the_edit_suggested_for_a_note_with_a_backtick_never_holds_a_broken_code_span(
    bot: Bot,
) -> None:
    # The edit is shown in `…`; a backtick of the note's would end it early, and what is
    # left would be read as formatting, not copied as the text.
    bot.command("start 8:00 AM - Outage")
    reply = bot.command("note 8:50 AM rolled back `api` to v1")
    assert (
        "Meant it at 8:50 AM? `/incident edit 1 8:50 AM - &lt;the text without the time&gt;`"
        in reply.text
    ), reply.text


@pytest.mark.parametrize(
    "typed", ["note 8:50 AM - rolled back", "note 500 errors at 8:50", "note now it works"]
)
def test_a_note_dated_or_not_starting_with_a_time_gets_no_such_advice(bot: Bot, typed: str) -> None:
    bot.command("start 8:00 AM - Outage")
    assert "Meant it" not in bot.command(typed).text


@pytest.mark.parametrize("typed", ["detected 25:99", "detected soon", "mitigated 6:00 AM"])
def test_bad_moments_are_refused(bot: Bot, typed: str) -> None:
    bot.command("start 7:00 AM - Outage")
    reply = bot.command(typed)
    assert reply.status == 200
    assert incident(bot).detected_at is None and incident(bot).mitigated_at is None


@pytest.mark.parametrize(
    "typed",
    [
        "detected 6:00 AM",  # before the start
        "mitigated 7:10 AM",  # before the detection
        "detected 7:50 AM",  # after the mitigation
        "detected 25:99",
        "severity 9",
        "severity 1",  # the level it has
        "edit 9 x",
        "delete 9",
        "edit 2 new text",  # a moment's entry: its time alone can change
        "edit 2 6:00 AM",
        "edit 1",
        "delete 1 2",
        "cause \u200b",
        "note 7:10 AM",
    ],
)
def test_a_refused_change_says_that_nothing_was_recorded(bot: Bot, typed: str) -> None:
    # Under stress, a refusal that does not say so leaves the person unsure whether the
    # change went in anyway.
    bot.command("start 7:00 AM - Outage")
    bot.command("note first")
    bot.command("detected 7:30 AM")
    bot.command("mitigated 7:40 AM")
    bot.command("severity 1")
    before = live(bot)

    reply = bot.command(typed)

    assert reply.body["blocks"][0]["text"]["text"].startswith(":warning:"), reply.text
    assert reply.text.count("Nothing was recorded.") == 1, reply.text
    assert live(bot) == before


@pytest.mark.parametrize("typed", ["timeline 9", "timeline x", "timeline 1 2"])
def test_a_refused_question_claims_nothing_about_recording(bot: Bot, typed: str) -> None:
    bot.command("start 7:00 AM - Outage")
    reply = bot.command(typed)
    assert reply.text and "recorded" not in reply.text


@pytest.mark.parametrize("typed", ["detected 7:20 AM -", "mitigated 7:20 AM -"])
def test_a_moment_typed_with_the_dash_other_commands_take_is_read(bot: Bot, typed: str) -> None:
    # `note 7:20 AM - …` and `close 7:20 AM -` take the dash; Slack trims the space after it.
    bot.command("start 7:00 AM - Outage")
    reply = bot.command(typed)
    assert "impact" in reply.text and "7:20 AM EAT" in reply.text, reply.text
    marked = incident(bot)
    assert datetime(2026, 11, 20, 4, 20, tzinfo=UTC) in (marked.detected_at, marked.mitigated_at)


@pytest.mark.parametrize(
    "typed", ["detected 7:20 AM - alerts fired", "mitigated 10 min ago - rolled back"]
)
def test_a_moment_with_text_after_its_time_says_where_the_text_goes(bot: Bot, typed: str) -> None:
    bot.command("start 7:00 AM - Outage")
    reply = bot.command(typed)
    # The time is one; what follows it would be lost, not "a time I cannot read".
    assert "not a time" not in reply.text, reply.text
    assert "takes only a time" in reply.text and "/incident note" in reply.text, reply.text
    assert "Nothing was recorded" in reply.text
    assert (incident(bot).detected_at, incident(bot).mitigated_at) == (None, None)
    assert live(bot) == []


def test_marking_a_moment_again_moves_it(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("detected 7:10 AM")
    bot.command("detected 7:20 AM")  # a correction: it was noticed at 7:20
    bot.command("close 7:30 AM")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "Time to detect: 20 minutes." in markdown
    assert "* 7:20 AM - Impact detected" in markdown
    assert markdown.count("Impact detected") == 1
    # The earlier mark's entry left the timeline as any deleted entry does: with a revision.
    with bot.services.sessions() as session:
        first = session.scalars(select(TimelineEntry).where(TimelineEntry.number == 1)).one()
        kept = session.scalars(select(EntryRevision).where(EntryRevision.entry_id == first.id))
        revisions = [(r.action, r.old_text, r.changed_by) for r in kept]
    assert first.deleted_at is not None
    assert revisions == [("delete", "Impact detected", ALICE)]


def test_marking_a_moment_again_says_where_it_moved_from(bot: Bot) -> None:
    # Two responders both type `detected`, minutes apart: the second moves the detection
    # later, and must be told that it was marked already, when and by whom.
    bot.command("start 7:00 AM - Outage")
    bot.command("detected")  # 9:00 AM in Nairobi
    bot.clock.advance(minutes=5)

    reply = bot.command("detected", user=BOB)

    assert "impact detected at 9:05 AM EAT" in reply.text
    assert "<@U0ALICE001> had marked it at 9:00 AM EAT" in reply.text
    assert "that mark is off the timeline, replaced by this one" in reply.text
    first = bot.command("mitigated")
    assert "moved" not in first.text


def test_deleting_or_moving_a_moments_entry_moves_the_moment(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("detected 7:10 AM")  # entry 1
    bot.command("mitigated 7:25 AM")  # entry 2
    bot.command("edit 2 7:40 AM")  # the mitigation's entry, moved
    assert "only its time" in bot.command("edit 2 7:40 AM - mitigated by a restart").text
    bot.command("delete 1")  # detection, taken off
    moments = incident(bot)
    assert moments.detected_at is None
    assert moments.mitigated_at == datetime(2026, 11, 20, 4, 40, tzinfo=UTC)  # 7:40 AM EAT

    bot.command("close 7:50 AM")
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "Impact detected" not in markdown
    assert "Time to detect: not recorded. Time to mitigate: 40 minutes." in markdown


@pytest.mark.parametrize(
    ("first", "then"),
    [("detected 7:20 AM", "mitigated 7:05 AM"), ("mitigated 7:05 AM", "detected 7:20 AM")],
)
def test_detection_after_mitigation_is_refused(bot: Bot, first: str, then: str) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command(first)
    before = incident(bot)

    reply = bot.command(then)

    assert "cannot have been" in reply.text
    after = incident(bot)
    assert (after.detected_at, after.mitigated_at) == (before.detected_at, before.mitigated_at)


@pytest.mark.parametrize(
    "typed",
    [
        ["detected 7:30 AM"],  # the start was stamped 7:30:45
        ["mitigated 7:30 AM"],
        ["detected", "mitigated 7:30 AM"],  # detected at 7:30:45
        ["mitigated", "detected 7:30 AM"],  # mitigated at 7:30:45: detected before, not after
        ["close 7:30 AM - a false alarm"],
        ["detected", "close 7:30 AM"],
        ["mitigated", "close 7:30 AM"],
    ],
)
def test_a_time_typed_in_the_minute_of_an_earlier_moment_is_not_before_it(
    bot: Bot, typed: list[str]
) -> None:
    # People type minutes; a moment stamped "now" has seconds. 7:30 AM is not before 7:30:45.
    bot.clock.now = datetime(2026, 11, 20, 4, 30, 45, tzinfo=UTC)  # 7:30:45 AM in Nairobi
    bot.command("start Outage")

    for command in typed:
        reply = bot.command(command)
        assert "cannot" not in reply.text, (command, reply.text)
    bot.wait()

    if typed[-1].startswith("close"):
        assert incident(bot).status == "closed"
        assert "From 7:30 AM to 7:30 AM EAT" in bot.fake.uploaded_text()


def test_a_close_before_the_mitigation_is_refused_and_nothing_changes(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("mitigated 7:50 AM")
    before = live(bot)

    reply = bot.command("close 7:30 AM - fixed")

    assert reply.status == 200 and not reply.in_channel
    assert "mitigated at" in reply.text and "cannot close before" in reply.text
    assert incident(bot).status == "open"
    assert live(bot) == before
    assert bot.fake.calls_to("chat.postMessage") == []


def test_an_impact_that_ended_before_anyone_noticed_can_close_before_its_detection(
    bot: Bot,
) -> None:
    bot.command("start 7:00 AM - Checkout errors")
    bot.command("detected 7:50 AM")

    reply = bot.command("close 7:30 AM - recovered by itself before the alert")

    assert "cannot" not in reply.text and incident(bot).status == "closed"
    bot.wait()
    markdown = bot.fake.uploaded_text()
    assert "From 7:00 AM to 7:30 AM EAT" in markdown and "50 minutes" in markdown


# --- severity, roles, status ------------------------------------------------------------------


def test_severity_is_announced_and_recorded_on_the_timeline(bot: Bot) -> None:
    bot.command("start Outage")
    reply = bot.command("severity sev2")
    assert reply.in_channel and "SEV2" in reply.text
    bot.command("severity SEV1")
    assert incident(bot).severity == "SEV1"
    assert [text for _, text, _ in live(bot)] == [
        "Severity set to SEV2",
        "Severity changed from SEV2 to SEV1",
    ]
    refused = bot.command("severity P0")
    assert "SEV1, SEV2, SEV3, SEV4" in refused.text and not refused.in_channel
    assert incident(bot).severity == "SEV1"


def test_configured_severities(database: Database, fake_slack: FakeSlack, clock: Clock) -> None:
    settings = make_settings(database.url, fake_slack.api_url, severities=("P1", "P2"))
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    bot.command("start Outage")
    assert "P1" in bot.command("severity p1").text
    assert "P1, P2" in bot.command("severity SEV1").text
    assert "P2" in bot.command("severity 2").text
    assert incident(bot).severity == "P2"


@pytest.mark.parametrize(
    ("typed", "level"),
    [("sev 1", "SEV1"), ("severity SEV-2", "SEV2"), ("sev 3", "SEV3"), ("severity Sev_4", "SEV4")],
)
def test_severity_as_people_say_it(bot: Bot, typed: str, level: str) -> None:
    bot.command("start Outage")
    assert level in bot.command(typed).text
    assert incident(bot).severity == level


@pytest.mark.parametrize("typed", ["severity 5", "severity 12", "severity -1", "severity 1.5"])
def test_a_number_that_is_no_level_is_refused(bot: Bot, typed: str) -> None:
    bot.command("start Outage")
    assert "SEV1, SEV2, SEV3, SEV4" in bot.command(typed).text
    assert incident(bot).severity is None


def test_a_number_that_ends_two_levels_is_refused(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    settings = make_settings(database.url, fake_slack.api_url, severities=("A1", "B1", "C2"))
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    bot.command("start Outage")
    assert "A1, B1, C2" in bot.command("severity 1").text
    assert incident(bot).severity is None
    assert "C2" in bot.command("severity 2").text


def test_roles_are_announced_recorded_and_shown_in_status(bot: Bot) -> None:
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")
    reply = bot.command("commander <@U0BOB00001>", escaped=True)
    assert reply.in_channel and "<@U0BOB00001>" in reply.visible
    bot.command("role scribe <@U0ALICE001|alice>", escaped=True)
    assert [text for _, text, _ in live(bot)] == [
        "Bob is now the commander",
        "alice is now the scribe",
    ]
    status = bot.command("status").visible
    assert "Commander:* Bob" in status and "Scribe:* alice" in status


@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\t"])
def test_any_space_separates_the_role_from_the_person(bot: Bot, space: str) -> None:
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")

    reply = bot.command(f"role scribe{space}<@U0BOB00001>", escaped=True)

    assert reply.in_channel, reply.text
    assert [text for _, text, _ in live(bot)] == ["Bob is now the scribe"]


@pytest.mark.parametrize("typed", ["commander <@U0BOB00001>.", "role scribe <@U0BOB00001|bob>!"])
def test_punctuation_after_the_mention_still_gives_the_role(bot: Bot, typed: str) -> None:
    # The person was mentioned: "Mention the person" would tell them to do what they did.
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")

    reply = bot.command(typed, escaped=True)

    assert reply.in_channel, reply.text
    assert "<@U0BOB00001> is now the" in reply.visible


def test_giving_someone_the_role_they_hold_is_refused_and_announces_nothing(bot: Bot) -> None:
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")
    bot.command("commander <@U0BOB00001>", escaped=True)

    reply = bot.command("role Commander <@U0BOB00001|bob>", escaped=True)

    assert reply.status == 200 and not reply.in_channel
    assert "already the commander" in reply.text
    assert [text for _, text, _ in live(bot)] == ["Bob is now the commander"]
    bot.command("commander <@U0ALICE001>", escaped=True)
    bot.command("commander <@U0BOB00001>", escaped=True)  # back to Bob: that is a change
    assert [text for _, text, _ in live(bot)][-1] == "Bob is now the commander"
    assert len(live(bot)) == 3


def test_a_name_that_opens_a_direction_is_closed_before_the_words_after_it(bot: Bot) -> None:
    # A display name is typed by its owner; "is now the commander" follows it on the timeline.
    bot.fake.names[BOB] = "\u202eBob"
    bot.command("start Outage")
    bot.command("commander <@U0BOB00001>", escaped=True)

    refused = bot.command("commander <@U0BOB00001>", escaped=True)

    assert [text for _, text, _ in live(bot)] == ["\u202eBob\u202c is now the commander"]
    assert "\u202eBob\u202c is already the commander" in refused.text
    assert "Commander:* \u202eBob\u202c" in bot.command("status").visible


@pytest.mark.parametrize(
    ("kind", "said"), [("bots", "is an app"), ("deactivated", "no longer in this workspace")]
)
def test_a_role_for_an_app_or_a_deactivated_account_is_refused(
    bot: Bot, kind: str, said: str
) -> None:
    bot.fake.users["U0GRAFANA1"] = "UTC"
    getattr(bot.fake, kind).add("U0GRAFANA1")
    bot.command("start Outage")

    reply = bot.command("commander <@U0GRAFANA1|grafana>", escaped=True)

    assert reply.status == 200 and not reply.in_channel
    assert said in reply.text and "grafana" in reply.text
    assert live(bot) == []
    with bot.services.sessions() as session:
        assert session.scalars(select(RoleAssignment)).all() == []


def test_a_role_for_slackbot_is_refused_though_slack_does_not_call_it_a_bot(bot: Bot) -> None:
    # Slack's user object: "Slackbot is special, so is_bot will be false for it"; it can be
    # mentioned like anyone, and users.info describes it as a member with a name and a zone.
    bot.command("start Outage")

    reply = bot.command("role scribe <@USLACKBOT|slackbot>", escaped=True)

    assert reply.status == 200 and not reply.in_channel
    assert "is an app" in reply.text and "slackbot" in reply.text
    assert live(bot) == []
    with bot.services.sessions() as session:
        assert session.scalars(select(RoleAssignment)).all() == []


@pytest.mark.parametrize("refusal", ["user_not_found", "user_not_visible"])
def test_a_role_for_someone_slack_does_not_know_is_refused(bot: Bot, refusal: str) -> None:
    bot.command("start Outage")
    if refusal != "user_not_found":  # FakeSlack says user_not_found of anyone it was not told of
        bot.fake.fail("users.info", Fault(error=refusal))

    reply = bot.command("role scribe <@U0GHOST001|ghost>", escaped=True)

    assert reply.status == 200 and not reply.in_channel
    assert "ghost" in reply.text and "does not know" in reply.text
    assert live(bot) == []
    with bot.services.sessions() as session:
        assert session.scalars(select(RoleAssignment)).all() == []


@pytest.mark.parametrize(
    "fault",
    [Fault(status=500, times=5), Fault(status=429, error="ratelimited", retry_after=30)],
    ids=["server_error", "rate_limited"],
)
def test_a_role_is_given_under_the_id_when_slack_cannot_say_who_it_is(
    bot: Bot, fault: Fault
) -> None:
    bot.command("start Outage")
    bot.fake.fail("users.info", fault)

    reply = bot.command("commander <@U0GHOST001>", escaped=True)

    assert reply.in_channel and "<@U0GHOST001>" in reply.visible
    assert [text for _, text, _ in live(bot)] == ["U0GHOST001 is now the commander"]


@pytest.mark.parametrize("typed", ["commander bob", "role janitor <@U0BOB00001>", "role scribe"])
def test_bad_role_assignments_are_refused(bot: Bot, typed: str) -> None:
    bot.command("start Outage")
    reply = bot.command(typed, escaped=True)
    assert reply.status == 200 and not reply.in_channel
    assert live(bot) == []


@pytest.mark.parametrize(
    ("arrived", "why"),
    [
        ("role scribe <!subteam^S0ONCALL01|@oncall>", "“@oncall” is a user group"),
        ("commander <!subteam^S0ONCALL01>", "That is a user group"),
        ("commander <#C0GENERAL1|general>", "“#general” is a channel"),
        ("role scribe <#C0GENERAL1>", "That is a channel"),
        ("commander <!here>", "“@here” is everyone in the channel"),
        ("commander <!channel>", "“@channel” is everyone in the channel"),
        ("commander <@U0BOB00001|bob> <@U0ALICE001|alice>", "one person at a time"),
        ("role scribe <@U0BOB00001> and <@U0ALICE001>", "one person at a time"),
        ("commander <@U0BOB00001|bob> taking over", "only the person's mention"),
    ],
)
def test_a_role_for_a_group_a_channel_or_several_people_says_why_it_is_refused(
    bot: Bot, arrived: str, why: str
) -> None:
    # The person did mention someone from the list: "mention the person" would not tell
    # them what was wrong.
    bot.command("start Outage")
    reply = bot.command(arrived, escaped=True)

    assert reply.status == 200 and not reply.in_channel
    # What it quotes is escaped: the refusal cannot ping the channel it names.
    assert why in reply.text.replace("\u200b", "") and "Nothing was recorded" in reply.text
    assert "<!" not in reply.visible and "<#" not in reply.visible
    assert "@here" not in reply.visible and "@channel" not in reply.visible
    assert live(bot) == []
    with bot.services.sessions() as session:
        assert session.scalars(select(RoleAssignment)).all() == []


@pytest.mark.parametrize(
    ("arrived", "named"),
    [
        ("role r&amp;d <@U0BOB00001>", "“r&amp;d”"),
        ("role <@U0BOB00001|bob> scribe", "“@bob”"),
    ],
)
def test_a_role_that_is_not_one_is_named_as_typed(bot: Bot, arrived: str, named: str) -> None:
    # The role is read from the text as Slack sent it (escaped, mentions as markup): the
    # refusal must name it as the person typed it, escaped once.
    bot.command("start Outage")
    reply = bot.command(arrived, escaped=True)

    assert named in reply.body["blocks"][0]["text"]["text"]
    assert "&amp;amp;" not in reply.visible and "U0BOB00001" not in reply.visible


# --- reopen and list ------------------------------------------------------------------------


def test_reopen_keeps_the_reason_on_the_timeline_and_closes_again(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    reply = bot.command("reopen errors are back")
    assert reply.in_channel and "INC-1" in reply.text
    assert incident(bot).status == "open" and incident(bot).closed_at is None
    # The first close stays on the timeline: closed_at is cleared, and it had no text.
    assert [text for _, text, _ in live(bot)] == ["Closed", "Reopened: errors are back"]
    bot.command("close")
    bot.wait()
    uploaded = bot.fake.uploaded_text()
    assert uploaded.index("- Closed") < uploaded.index("Reopened: errors are back"), uploaded
    with bot.services.sessions() as session:
        statuses = session.scalars(select(FieldChange.value).where(FieldChange.field == "status"))
        assert list(statuses) == ["reopened"]


def test_reopen_reopens_the_incident_the_channel_was_told_about(bot: Bot) -> None:
    bot.clock.now = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)  # 10:00 AM in Nairobi
    bot.command("start Checkout down")
    bot.command("close - fixed")  # INC-1 closed at 10:00
    bot.clock.advance(minutes=30)
    # An earlier outage, recorded after the fact: INC-2 is closed at a time before INC-1's.
    bot.command("start 8:00 AM - Login errors overnight")
    bot.command("close 9:00 AM - resolved by restart")
    assert "INC-2" in bot.command("status").text

    reply = bot.command("reopen the login errors came back")

    assert "INC-2" in reply.text, reply.text
    with bot.services.sessions() as session:
        statuses = dict(session.execute(select(Incident.number, Incident.status)).all())
    assert statuses == {1: "closed", 2: "open"}
    bot.wait()  # the closes' uploads, before the stand-in stops


def test_reopen_is_refused_when_something_is_open_or_nothing_was_closed(bot: Bot) -> None:
    assert "no incident to reopen" in bot.command("reopen why").text.lower()
    bot.command("start Outage")
    assert "open" in bot.command("reopen why").text
    assert "reopen" in bot.command("reopen").text  # missing reason: the usage


def test_reopen_where_there_was_never_an_incident_says_so_and_how_to_start_one(
    bot: Bot,
) -> None:
    # Not "There is no open incident": the person knows that, and wants a closed one back.
    reply = bot.command("reopen the errors came back")

    assert not reply.in_channel
    assert "no incident to reopen" in reply.text.lower()
    assert "no open incident" not in reply.visible.lower()
    assert "/incident start" in reply.visible
    with bot.services.sessions() as session:
        assert session.scalars(select(Incident)).first() is None
        assert session.scalars(select(TimelineEntry)).first() is None


def test_reopen_in_a_direct_message_points_to_the_channel(bot: Bot) -> None:
    reply = bot.command("reopen the errors came back", channel="D0DIRECT01")

    assert not reply.in_channel
    assert "in the incident's channel" in reply.text


def test_list_of_many_incidents_shows_them_all_newest_first(bot: Bot) -> None:
    for n in range(1, 31):  # each line about 200 characters: more than one section holds
        bot.command(f"start Outage {n} " + "x" * 150, channel=f"C0LIST{n:04d}")

    reply = bot.command("list", channel="C0LIST0001")

    sections = [block["text"]["text"] for block in reply.body["blocks"][1:]]
    assert len(sections) > 1 and all(len(text) <= 3000 for text in sections)
    shown = re.findall(r"\*INC-(\d+)\*", "\n".join(sections))
    assert shown == [str(n) for n in range(30, 0, -1)]


def test_list_says_how_many_it_leaves_out() -> None:
    started = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    many = [
        Incident(
            number=n,
            team_id="T1",
            channel_id=f"C{n:09d}",
            title="x" * 200,
            timezone="UTC",
            started_at=started,
        )
        for n in range(1000, 0, -1)
    ]

    reply = replies.incident_list(many, now=started)

    blocks = reply.as_ack()["blocks"]
    assert len(blocks) <= 50
    assert blocks[-1]["text"]["text"].startswith("…and ")
    said = re.search(r"and (\d+) older", blocks[-1]["text"]["text"])
    assert said is not None
    hidden = int(said.group(1))
    shown = re.findall(r"\*INC-(\d+)\*", "\n".join(b["text"]["text"] for b in blocks[1:-1]))
    assert shown == [str(n) for n in range(1000, hidden, -1)]


def test_list_shows_the_workspaces_open_incidents_only(bot: Bot) -> None:
    bot.command("start First", channel="C0AAAAAAA1")
    bot.command("start Second", channel="C0BBBBBBB1")
    bot.command("close", channel="C0AAAAAAA1")
    bot.command("start Elsewhere", channel="C0AAAAAAA1", team="T0OTHER001")
    bot.wait()
    reply = bot.command("list", channel="C0CCCCCCC1")
    assert reply.status == 200 and not reply.in_channel
    assert "Second" in reply.visible and "First" not in reply.visible
    assert "Elsewhere" not in reply.visible


def test_help_lists_the_new_subcommands(bot: Bot) -> None:
    text = bot.command("help").text
    for usage in (
        "timeline",
        "edit <n>",
        "delete <n>",
        "detected [<when>]",
        "mitigated [<when>]",
        "severity <level>",
        "commander @person",
        "role <role> @person",
        "reopen <reason>",
        "list",
    ):
        assert usage.replace("<", "&lt;").replace(">", "&gt;") in text, usage  # as Slack needs


# --- a channel per incident -----------------------------------------------------------------


def test_channel_names_follow_slacks_rules() -> None:
    base = Incident(
        number=7,
        title="Checkout: 500s & timeouts!",
        timezone="Africa/Nairobi",
        started_at=datetime(2026, 11, 19, 22, 30, tzinfo=UTC),
    )
    assert channel_name(base) == "inc-20261120-checkout-500s-timeouts"
    assert channel_name(base, 3) == "inc-20261120-checkout-500s-timeouts-3"
    long = replace_title(base, "x" * 200)
    assert len(channel_name(long, 12)) == 80 and channel_name(long, 12).endswith("-12")
    assert channel_name(replace_title(base, "💥💥")) == "inc-20261120-inc7"


def replace_title(incident: Incident, title: str) -> Incident:
    return Incident(
        number=incident.number,
        title=title,
        timezone=incident.timezone,
        started_at=incident.started_at,
    )


def test_start_can_open_a_dedicated_channel(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    settings = replace(make_settings(database.url, fake_slack.api_url), incident_channels=True)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    fake_slack.channel_names["inc-20261120-checkout-down"] = "C0TAKEN001"

    reply = bot.command("start Checkout down")
    bot.wait()

    assert reply.in_channel
    names = [c.params["name"] for c in fake_slack.calls_to("conversations.create")]
    assert names == ["inc-20261120-checkout-down", "inc-20261120-checkout-down-2"]
    new_channel = fake_slack.channel_names["inc-20261120-checkout-down-2"]
    [invite] = fake_slack.calls_to("conversations.invite")
    assert invite.params["channel"] == new_channel and invite.params["users"] == ALICE
    [header] = fake_slack.calls_to("chat.postMessage")
    assert header.params["channel"] == new_channel and "INC-1" in header.params["text"]
    assert incident(bot).channel_id == new_channel
    assert "INC-1" in bot.command("note in the new room", channel=new_channel).text
    assert "no open incident" in bot.command("note old room", channel=CHANNEL).text.lower()


@pytest.mark.parametrize("error", ["missing_scope", "restricted_action", "account_inactive"])
def test_a_channel_slack_refuses_to_create_is_explained_and_the_incident_stays(
    database: Database, fake_slack: FakeSlack, clock: Clock, error: str
) -> None:
    settings = replace(make_settings(database.url, fake_slack.api_url), incident_channels=True)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    fake_slack.fail("conversations.create", Fault(error=error))

    bot.command("start Checkout down")
    bot.wait()

    [told] = fake_slack.wait_for_responses(1)
    assert "could not create a channel" in told["text"] and f"({error})" in told["text"]
    assert incident(bot).channel_id == CHANNEL
    assert "INC-1" in bot.command("note still here").text


def test_a_channel_the_app_lacks_the_scope_to_create_names_the_scope(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    # An install made before channels:manage was asked for: Slack says which scope it needs.
    settings = replace(make_settings(database.url, fake_slack.api_url), incident_channels=True)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    needed = {"needed": "channels:manage", "provided": "commands,chat:write"}
    fake_slack.fail("conversations.create", Fault(error="missing_scope", details=needed))

    bot.command("start Checkout down https://status.example.com/incidents/42")
    bot.wait()

    [told] = fake_slack.wait_for_responses(1)
    assert "the app lacks channels:manage; reinstall it" in told["text"]
    assert incident(bot).channel_id == CHANNEL


def test_the_header_in_the_incidents_own_channel_unfurls_no_link(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    settings = replace(make_settings(database.url, fake_slack.api_url), incident_channels=True)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)

    bot.command("start Checkout down https://status.example.com/incidents/42")
    bot.wait()

    [header] = fake_slack.calls_to("chat.postMessage")
    assert header.params["unfurl_links"] is False


def test_a_refused_invite_still_leaves_the_header_in_the_new_channel(
    database: Database, fake_slack: FakeSlack, clock: Clock
) -> None:
    settings = replace(make_settings(database.url, fake_slack.api_url), incident_channels=True)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    bot = Bot(app=build_app(settings, services), services=services, fake=fake_slack, clock=clock)
    fake_slack.fail("conversations.invite", Fault(error="user_is_restricted"))  # e.g. a guest

    bot.command("start Checkout down")
    bot.wait()

    new_channel = fake_slack.channel_names["inc-20261120-checkout-down"]
    [header] = fake_slack.calls_to("chat.postMessage")
    assert header.params["channel"] == new_channel and "INC-1" in header.params["text"]
    assert any(f"<#{new_channel}>" in r["text"] for r in fake_slack.wait_for_responses(1))


# --- typed text among the bot's own mrkdwn ----------------------------------------------

ZWSP = "\u200b"
MARKERS = "*_~`"


def formatting_markers(mrkdwn: str) -> list[int]:
    """Where Slack could open or close bold, italics, a strike or code in `mrkdwn`: a marker
    at a word's edge (a space or punctuation on one side, not a space on the other), with a
    zero-width space read both as a space and as part of a word."""
    found: set[int] = set()
    for zwsp_is_space in (True, False):

        def space(c: str, zwsp_is_space: bool = zwsp_is_space) -> bool:
            return c.isspace() or (zwsp_is_space and c == ZWSP)

        def edge(c: str, zwsp_is_space: bool = zwsp_is_space) -> bool:
            return space(c) or not (c.isalnum() or (not zwsp_is_space and c == ZWSP))

        for at, char in enumerate(mrkdwn):
            if char not in MARKERS:
                continue
            before = mrkdwn[at - 1] if at else " "
            after = mrkdwn[at + 1] if at + 1 < len(mrkdwn) else " "
            if char == "`" or (edge(before) and not space(after)):
                found.add(at)
            if edge(after) and not space(before):
                found.add(at)
    return sorted(found)


def test_typed_formatting_cannot_change_how_other_entries_or_the_bots_text_look(
    bot: Bot,
) -> None:
    typed = [
        "```kubectl logs",
        "*unclosed bold",
        "_half italic",
        "~gone",
        "one `tick",
        "two\n>>> quoted from here on",
        "snake_case_name and 2*3*4 stay",
    ]
    bot.command("start Outage")
    for note in typed:
        bot.command(f"note {note}")

    for command in ("timeline", "status"):
        sections = [
            block["text"]["text"]
            for block in bot.command(command).body["blocks"]
            if block["type"] == "section" and "`#1`" in block["text"]["text"]
        ]
        assert len(sections) == 1, command
        shown = sections[0]
        # The bot's own code spans, `#1` to `#7`, are the only formatting left.
        ours = re.compile(r"`#\d+`")
        assert len(ours.findall(shown)) == len(typed)
        rest = ours.sub(lambda m: "#" * len(m.group()), shown)
        rest = rest.replace("*Timeline*", "#" * len("*Timeline*"))
        assert formatting_markers(rest) == [], (command, rest)
        assert re.search(r"^\s*&gt;", shown, re.MULTILINE) is None
        # Readable as typed once the zero-width spaces, which Slack does not show, are gone.
        # A backtick shows as U+02CB, which looks like one and cannot start code.
        visible = shown.replace(ZWSP, "").replace("&gt;", ">").replace("\u02cb", "`")
        for note in typed:
            assert note in visible, (command, note)


# --- typed text quoted in a refusal -----------------------------------------------------------

# As Slack sends it: what was typed is `*bold* _x_ ... @channel @here &amp; >>> quoted`.
SENT = "*bold* _x_ one `tick ```block ~s~ <!channel> @here &amp;amp;\n&gt;&gt;&gt; quoted"
WORD = "*b*_x_`t```~s~&amp;amp;"  # one word, for what any whitespace ends


@pytest.mark.parametrize(
    ("sent", "quoted", "ours"),
    [
        (f"severity {SENT}", SENT, []),
        (f"role {WORD} <@U0BOB00001>", WORD, []),
        (
            f"edit {WORD} new text",
            WORD,
            ["`/incident timeline`", "`/incident edit 3 1:10 AM - new text`"],
        ),
        (f"detected {SENT}", " ".join(SENT.split()), ["`1:06 AM`", "`2026-11-20 01:06`"]),
        ("note 25:00 - db down", "25:00", ["`1:06 AM`", "`13:06`", "`2026-11-20 01:06`"]),
        ("start 8:00 AM", "8:00 AM", ["`/incident start 8:00 AM - &lt;title&gt;`"]),
        (f"{WORD} now", WORD, []),
        ("*stauts*` x", "*stauts*`", ["`/incident status`"]),
    ],
    ids=[
        "severity",
        "role",
        "entry_number",
        "detected",
        "note_time",
        "start_time_only",
        "subcommand",
        "subcommand_typo",
    ],
)
def test_typed_text_in_a_refusal_cannot_format_it(
    bot: Bot, sent: str, quoted: str, ours: list[str]
) -> None:
    if not sent.startswith("start"):
        bot.command("start Outage")
    reply = bot.command(sent, escaped=True)

    assert not reply.in_channel and len(live(bot)) == 0
    section = reply.body["blocks"][0]["text"]["text"]
    for shown in (reply.text.split("\n*Incident commands*")[0], section):
        # The bot's own code spans are whole; besides them, nothing can format.
        rest = shown
        for span in ours:
            assert span in rest, (span, shown)
            rest = rest.replace(span, "#" * len(span))
        assert formatting_markers(rest) == [], rest
        assert re.search(r"^\s*&gt;", shown, re.MULTILINE) is None, shown
        assert re.search(r"@(channel|here)\b", shown) is None, shown
        # What was typed shows as typed, escaped once, the zero-width spaces aside.
        visible = shown.replace(ZWSP, "").replace("\u02cb", "`")
        assert f"“{quoted.replace('<!channel>', '@channel')}" in visible, shown
        assert "&amp;amp;amp;" not in shown and "\ufdd0" not in shown, shown


NAME = "*Graf* _ana_ `x` ~s~"  # a display name, which its owner typed


@pytest.mark.parametrize("kind", ["bots", "deactivated", "holder"])
def test_a_name_in_a_refusal_cannot_format_it(bot: Bot, kind: str) -> None:
    bot.fake.users["U0GRAFANA1"] = "UTC"
    bot.fake.names["U0GRAFANA1"] = NAME
    bot.command("start Outage")
    if kind == "holder":
        bot.command("commander <@U0GRAFANA1>", escaped=True)
    else:
        getattr(bot.fake, kind).add("U0GRAFANA1")

    reply = bot.command("commander <@U0GRAFANA1>", escaped=True)

    assert not reply.in_channel
    section = reply.body["blocks"][0]["text"]["text"]
    for shown in (reply.text, section):
        assert formatting_markers(shown) == [], shown
        assert NAME in shown.replace(ZWSP, "").replace("\u02cb", "`"), shown


def test_a_close_before_the_latest_reopen_is_refused_and_nothing_changes(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")  # 09:00 in Nairobi now
    bot.command("close 8:00 AM - fixed")
    bot.wait()
    bot.clock.advance(minutes=30)  # 09:30
    bot.command("reopen errors are back")
    before = live(bot)

    reply = bot.command("close 7:40 AM - fixed")

    assert reply.status == 200 and not reply.in_channel
    assert "reopened at 2026-11-20 09:30 EAT" in reply.text, reply.text
    assert "cannot close before that (2026-11-20 07:40 EAT)" in reply.text, reply.text
    assert reply.text.endswith("Nothing was recorded."), reply.text
    assert incident(bot).status == "open" and incident(bot).closed_at is None
    assert live(bot) == before
    bot.wait()
    assert len(bot.fake.uploads) == 1  # the first close's postmortem only


def test_deleting_a_severity_entry_puts_back_the_severity_the_timeline_leaves(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("severity SEV2")  # #1
    bot.command("note looking")  # #2
    bot.command("severity SEV1")  # #3

    reply = bot.command("delete 3")

    assert reply.in_channel, reply.text
    assert "INC-1 is SEV2 again (entry #3 deleted)" in reply.text, reply.text
    assert incident(bot).severity == "SEV2"
    assert "Severity:* SEV2" in bot.command("status").visible

    reply = bot.command("delete 1")

    assert "INC-1 has no severity now (entry #1 deleted)" in reply.text, reply.text
    assert incident(bot).severity is None
    assert "Severity:*" not in bot.command("status").visible
    bot.command("severity SEV3")
    assert incident(bot).severity == "SEV3"
    bot.command("close")
    bot.wait()
    assert "SEV3" in bot.fake.uploaded_text()


def test_deleting_a_role_entry_puts_back_the_previous_holder_or_none(bot: Bot) -> None:
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")
    bot.command("commander <@U0BOB00001>", escaped=True)  # #1
    bot.command("commander <@U0ALICE001|alice>", escaped=True)  # #2

    reply = bot.command("delete 2")

    assert reply.in_channel, reply.text
    assert "<@U0BOB00001> is the commander of INC-1 again (entry #2 deleted)" in reply.text
    assert "Commander:* Bob" in bot.command("status").visible

    reply = bot.command("delete 1")

    assert "INC-1 has no commander now (entry #1 deleted)" in reply.text, reply.text
    assert "Commander" not in bot.command("status").visible
    bot.command("close")
    bot.wait()
    assert "Bob" not in bot.fake.uploaded_text()


def test_deleting_an_earlier_role_entry_leaves_the_holder_and_says_nothing_of_it(
    bot: Bot,
) -> None:
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")
    bot.command("commander <@U0ALICE001|alice>", escaped=True)  # #1
    bot.command("commander <@U0BOB00001>", escaped=True)  # #2

    reply = bot.command("delete 1")

    assert not reply.in_channel and "again" not in reply.text, reply.text
    assert "Commander:* Bob" in bot.command("status").visible


@pytest.mark.parametrize(
    "typed", ["role commander none", "commander nobody", "role Commander No one", "ic clear"]
)
def test_a_role_can_be_taken_away_and_the_timeline_says_so(bot: Bot, typed: str) -> None:
    bot.fake.names[BOB] = "Bob"
    bot.command("start Outage")
    bot.command("commander <@U0BOB00001>", escaped=True)  # #1

    reply = bot.command(typed)

    assert reply.in_channel, reply.text
    assert "<@U0BOB00001> is no longer the commander of *INC-1*" in reply.visible, reply.visible
    assert [text for _, text, _ in live(bot)] == [
        "Bob is now the commander",
        "Bob is no longer the commander",
    ]
    assert "Commander" not in bot.command("status").visible
    refused = bot.command("role commander none")
    assert "Nobody is the commander of INC-1" in refused.text, refused.text
    assert refused.text.endswith("Nothing was recorded.") and not refused.in_channel
    assert len(live(bot)) == 2

    bot.command("delete 2")  # taking it away is undone: Bob is back
    assert "Commander:* Bob" in bot.command("status").visible


def test_taking_away_a_role_nobody_holds_is_refused(bot: Bot) -> None:
    bot.command("start Outage")

    reply = bot.command("role scribe none")

    assert "Nobody is the scribe of INC-1; there is no one to take the role from." in reply.text
    assert reply.text.endswith("Nothing was recorded.")
    assert live(bot) == []


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("edit 1 - new text", "new text"),
        ("edit #1 -  new text", "new text"),
        ("edit 1 8:06 AM - - a dash the text starts with", "- a dash the text starts with"),
        ("edit 1 -5% errors", "-5% errors"),
    ],
)
def test_an_edit_with_no_time_before_the_separator_keeps_the_separator_out_of_the_text(
    bot: Bot, typed: str, stored: str
) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("note 8:10 AM - old text")

    reply = bot.command(typed)

    assert "is now" in reply.text, reply.text
    assert [text for _, text, _ in live(bot)] == [stored]


def test_an_edit_of_a_separator_alone_is_refused(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("note 8:10 AM - old text")

    reply = bot.command("edit 1 -")

    assert "Give a new time" in reply.text and reply.text.endswith("Nothing was recorded.")
    assert [text for _, text, _ in live(bot)] == ["old text"]


@pytest.mark.parametrize(
    "typed",
    [
        "note 2016-11-22 10:00 - x",
        "close 2016-11-22 10:00 - fixed",
        "edit 1 2016-11-22 10:00 -",
        "detected 2016-11-22 10:00",
        "mitigated Nov 12 2026 6:59 AM",
    ],
)
def test_a_typed_time_more_than_a_week_before_the_start_is_refused(bot: Bot, typed: str) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("note 8:10 AM - first")
    before = live(bot)

    reply = bot.command(typed)

    assert "INC-1 began at 2026-11-20 07:00 EAT" in reply.text, reply.text
    assert "more than 7 days before that" in reply.text, reply.text
    assert reply.text.endswith("Nothing was recorded.") and not reply.in_channel
    assert live(bot) == before
    assert incident(bot).status == "open" and incident(bot).detected_at is None


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        ("start 2016-11-22 10:00 - Checkout down", "2016-11-22 10:00 EAT"),
        ("start Oct 21 2026 8:59 AM - Checkout down", "2026-10-21 08:59 EAT"),
    ],
)
def test_a_start_typed_more_than_30_days_ago_is_refused(bot: Bot, typed: str, read: str) -> None:
    reply = bot.command(typed)

    assert f"{read} is more than 30 days ago" in reply.text, reply.text
    assert f"`/incident start &lt;title&gt; (began {read})`" in reply.text  # Slack shows <title>
    assert reply.text.endswith("Nothing was recorded.") and not reply.in_channel
    assert incident(bot) is None


def test_a_start_typed_within_30_days_ago_is_recorded_after_the_fact(bot: Bot) -> None:
    reply = bot.command("start Oct 21 2026 9:00 AM - Checkout down")

    assert "INC-1" in reply.text, reply.text
    assert incident(bot).started_at == datetime(2026, 10, 21, 6, 0, tzinfo=UTC)


def test_a_typed_time_within_a_week_before_the_start_widens_the_window(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")

    reply = bot.command("note Nov 13 7:00 AM - first errors in the logs")

    assert "cannot" not in reply.text and "days before" not in reply.text, reply.text
    assert [text for _, text, _ in live(bot)] == ["first errors in the logs"]
