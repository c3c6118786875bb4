"""Time zone edges: the repeated hour still ahead, and today or yesterday in another zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.models import Incident, TimelineEntry
from bot.timeparse import TimeParseError, parse_time
from tests.conftest import BOB, CHANNEL, Bot

NAIROBI = ZoneInfo("Africa/Nairobi")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")  # 1 Nov 2026: 1:00-1:59 AM PDT, then again PST
NEW_YORK = ZoneInfo("America/New_York")  # 1 Nov 2026: 1:00-1:59 AM EDT, then again EST


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- the second pass of a repeated hour, named, must not be in the future ------------------


@pytest.mark.parametrize(
    ("typed", "zone", "now"),
    [
        ("1:50 AM PST", LOS_ANGELES, utc(2026, 11, 1, 9, 10)),  # at 1:10 AM PST
        ("1:50 AM EST", NEW_YORK, utc(2026, 11, 1, 6, 10)),  # at 1:10 AM EST
        ("1:30 AM EST", NEW_YORK, utc(2026, 11, 1, 5, 40)),  # at 1:40 AM EDT, the first pass
    ],
)
def test_a_named_second_pass_still_ahead_is_refused(
    typed: str, zone: ZoneInfo, now: datetime
) -> None:
    # The first pass of the wall time has gone by, so it was "today"; but the writer named
    # the second pass, and that one has not come yet.
    with pytest.raises(TimeParseError, match="future"):
        parse_time(typed, zone=zone, now=now)


def test_a_note_at_a_named_second_pass_still_ahead_is_not_stored(bot: Bot) -> None:
    bot.clock.now = utc(2026, 11, 1, 9, 10)  # 1:10 AM PST, after the clocks went back
    bot.command("start Outage", user=BOB)
    reply = bot.command("note 1:50 AM PST - typo for 1:05", user=BOB)

    assert reply.status == 200
    assert "future" in reply.text
    with bot.services.sessions() as session:
        assert list(session.scalars(select(TimelineEntry))) == []


# --- today / yesterday are the writer's days, also with a zone named -----------------------


@pytest.mark.parametrize(
    ("typed", "zone", "now", "expected"),
    [
        # 5:00 PM PST on Thursday 19 November is 01:00 UTC on the 20th: "today 23:00 UTC" is
        # Bob's Thursday, two hours ago.
        ("today 23:00 UTC", LOS_ANGELES, utc(2026, 11, 20, 1, 0), utc(2026, 11, 19, 23, 0)),
        ("yesterday 23:00 UTC", LOS_ANGELES, utc(2026, 11, 20, 1, 0), utc(2026, 11, 18, 23, 0)),
        # 1:00 AM EAT on Friday 20 November is 22:00 UTC on the 19th: Alice's yesterday is
        # Thursday 19th, not Wednesday.
        ("yesterday 14:05 UTC", NAIROBI, utc(2026, 11, 19, 22, 0), utc(2026, 11, 19, 14, 5)),
        ("yesterday 14:05 +00:00", NAIROBI, utc(2026, 11, 19, 22, 0), utc(2026, 11, 19, 14, 5)),
    ],
)
def test_today_and_yesterday_are_the_writers_days_when_a_zone_is_named(
    typed: str, zone: ZoneInfo, now: datetime, expected: datetime
) -> None:
    assert parse_time(typed, zone=zone, now=now) == expected


def test_start_today_at_a_utc_time_in_the_evening_in_los_angeles(bot: Bot) -> None:
    bot.clock.now = utc(2026, 11, 20, 1, 0)  # 5:00 PM PST on Thursday 19 November
    reply = bot.command("start today 23:00 UTC - Outage", user=BOB)

    assert reply.status == 200 and reply.in_channel, reply.text
    with bot.services.sessions() as session:
        incident = session.scalars(select(Incident).where(Incident.channel_id == CHANNEL)).one()
    assert incident.started_at == utc(2026, 11, 19, 23, 0)


# --- a time read in the writer's zone is shown in the incident's, and as it was read ------


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        # Bob, in Los Angeles, at 10 PM on Thursday: his 2:05 PM is 1:05 AM on Friday in
        # Nairobi, the incident's zone.
        ("note 14:05 - deploy started", "1:05 AM EAT (2:05 PM PST where you are)"),
        ("edit 1 2:05 PM - deploy started", "1:05 AM EAT (2:05 PM PST where you are)"),
        ("detected 2:05 PM", "1:05 AM EAT (2:05 PM PST where you are)"),
        (
            "note yesterday 21:00 - alert",
            "8:00 AM EAT, Thu 19 Nov 2026 (9:00 PM PST, Wed 18 Nov 2026 where you are)",
        ),
    ],
)
def test_a_time_typed_in_another_zone_than_the_incidents_is_shown_in_both(
    bot: Bot, typed: str, shown: str
) -> None:
    bot.command("start 1:00 AM - Outage")  # Alice, in Nairobi: the incident's zone is hers
    bot.command("note 1:02 AM - first")

    reply = bot.command(typed, user=BOB)

    assert shown in reply.text, reply.text


@pytest.mark.parametrize("typed", ["note 8:30 AM - x", "note 10 min ago - x", "note x"])
def test_a_time_in_the_incidents_own_zone_is_shown_once(bot: Bot, typed: str) -> None:
    bot.command("start 8:00 AM - Outage")
    assert "where you are" not in bot.command(typed).text


@pytest.mark.parametrize("zone", [None, "Mars/Olympus_Mons"])
def test_a_time_read_in_the_fallback_zone_says_so(bot: Bot, zone: str | None) -> None:
    # Slack does not know the writer (user_not_found), or gives a zone that is none: the time
    # is read in INCIDENT_TIMEZONE (UTC here), and the writer must be able to tell.
    writer = "U0CAROL001"
    if zone is not None:
        bot.fake.users[writer] = zone
    bot.command("start 8:00 AM - Outage")

    reply = bot.command("note 5:30 - db restarted", user=writer)

    assert "8:30 AM EAT" in reply.text, reply.text
    assert "read as 5:30 AM UTC" in reply.text and "time zone" in reply.text, reply.text
