"""The leading `<when> - ` of a command's text: forms, zones, midnight, DST, and plain text.

Every test passes its own fixed `now`; nothing here reads the wall clock.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.timeparse import (
    FUTURE_TOLERANCE,
    Leading,
    TimeParseError,
    looks_like_time,
    parse_time,
    split_leading_time,
    unseparated_time,
)

NAIROBI = ZoneInfo("Africa/Nairobi")  # EAT, UTC+3, no daylight saving
LOS_ANGELES = ZoneInfo("America/Los_Angeles")  # 2026: 8 Mar 02:00 -> 03:00; 1 Nov 02:00 -> 01:00
KOLKATA = ZoneInfo("Asia/Kolkata")  # IST, UTC+5:30
CHATHAM = ZoneInfo("Pacific/Chatham")  # UTC+13:45 in November (its summer)
UTC_ZONE = ZoneInfo("UTC")

# Friday 20 November 2026, 06:00 UTC: 09:00 in Nairobi, 22:00 on Thursday in Los Angeles,
# 11:30 in Kolkata, 19:45 in Chatham.
NOW = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def parse(text: str, zone: ZoneInfo = NAIROBI, now: datetime = NOW) -> datetime:
    return parse_time(text, zone=zone, now=now)


# --- the forms the module docstring lists ------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        # A time of day not later than now (09:00 EAT) is today.
        ("1:06 AM", utc(2026, 11, 19, 22, 6)),
        ("1:06 am", utc(2026, 11, 19, 22, 6)),
        ("1:06AM", utc(2026, 11, 19, 22, 6)),
        ("1:06 a.m.", utc(2026, 11, 19, 22, 6)),
        ("01:06", utc(2026, 11, 19, 22, 6)),
        ("8:59:59", utc(2026, 11, 20, 5, 59, 59)),
        ("12 AM", utc(2026, 11, 19, 21, 0)),  # the midnight that began today
        # A time of day later than now is yesterday.
        ("13:06:30", utc(2026, 11, 19, 10, 6, 30)),
        ("1 PM", utc(2026, 11, 19, 10, 0)),
        ("1pm", utc(2026, 11, 19, 10, 0)),
        ("12 PM", utc(2026, 11, 19, 9, 0)),
        # With a date.
        ("2026-11-20 01:06", utc(2026, 11, 19, 22, 6)),
        ("2026-11-19 13:06", utc(2026, 11, 19, 10, 6)),
        ("Nov 20 1:06 AM", utc(2026, 11, 19, 22, 6)),
        ("November 20, 1:06 AM", utc(2026, 11, 19, 22, 6)),
        ("20 Nov 1:06", utc(2026, 11, 19, 22, 6)),
        ("Nov 20th 1:06 AM", utc(2026, 11, 19, 22, 6)),
        ("Nov 20 2026 1:06 AM", utc(2026, 11, 19, 22, 6)),
        ("on Nov 19 at 1 PM", utc(2026, 11, 19, 10, 0)),
        # ISO 8601 with its own offset: the writer's zone does not apply.
        ("2026-11-20T01:06:00Z", utc(2026, 11, 20, 1, 6)),
        ("2026-11-20T01:06Z", utc(2026, 11, 20, 1, 6)),
        ("2026-11-20T01:06:00+03:00", utc(2026, 11, 19, 22, 6)),
        ("2026-11-20T01:06:00+05:30", utc(2026, 11, 19, 19, 36)),
        ("2026-11-19T21:06:00-08:00", utc(2026, 11, 20, 5, 6)),
        # A bare time with an offset or a UTC name.
        ("1:06 AM UTC", utc(2026, 11, 20, 1, 6)),
        ("1:06 AM GMT", utc(2026, 11, 20, 1, 6)),
        ("01:06 +03:00", utc(2026, 11, 19, 22, 6)),
        ("01:06 +0530", utc(2026, 11, 19, 19, 36)),
        ("01:06+03:00", utc(2026, 11, 19, 22, 6)),
        ("04:06 -00:00", utc(2026, 11, 20, 4, 6)),
        # Relative days.
        ("yesterday 23:50", utc(2026, 11, 19, 20, 50)),
        ("yesterday at 1:06 AM", utc(2026, 11, 18, 22, 6)),
        ("today 1:06", utc(2026, 11, 19, 22, 6)),
        ("Today at 08:30", utc(2026, 11, 20, 5, 30)),
    ],
)
def test_reads_each_documented_form(typed: str, expected: datetime) -> None:
    result = parse(typed)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1:06 A.M. UTC", utc(2026, 11, 20, 1, 6)),
        ("1:06A.M. UTC", utc(2026, 11, 20, 1, 6)),
        ("1 A.M UTC", utc(2026, 11, 20, 1, 0)),
        ("1:06 A.M. EAT", utc(2026, 11, 19, 22, 6)),
        ("Nov 19 1:06 P.M. UTC", utc(2026, 11, 19, 13, 6)),
        ("9:05 A.M.", utc(2026, 11, 19, 6, 5)),
        ("Nov 19 1:06 P.M.", utc(2026, 11, 19, 10, 6)),
    ],
)
def test_a_meridiem_in_capitals_with_dots_is_read_as_in_lower_case(
    typed: str, expected: datetime
) -> None:
    # dateutil took the M of `A.M.` for a zone: refused beside another zone, warned alone.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse(typed) == expected


def test_extra_spaces_do_not_matter() -> None:
    assert parse("  Nov   20    1:06   AM ") == utc(2026, 11, 19, 22, 6)


# --- offsets written as UTC+n -----------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        # People mean "three hours ahead of UTC", not dateutil's POSIX reading (three behind).
        ("01:06 UTC+3", utc(2026, 11, 19, 22, 6)),
        ("01:06 UTC+03:00", utc(2026, 11, 19, 22, 6)),
        ("01:06 GMT+0530", utc(2026, 11, 19, 19, 36)),
        ("00:30 UTC-5", utc(2026, 11, 20, 5, 30)),
        ("00:30 UTC -5", utc(2026, 11, 20, 5, 30)),
        ("00:30 utc-05:00", utc(2026, 11, 20, 5, 30)),
    ],
)
def test_utc_plus_offsets_mean_ahead_of_utc(typed: str, expected: datetime) -> None:
    assert parse(typed) == expected


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        # Read as 01:06 in Nairobi, the offset dropped: dateutil takes one only after a time.
        ("GMT-3 01:06", utc(2026, 11, 20, 4, 6)),
        ("-03:00 01:06", utc(2026, 11, 20, 4, 6)),
        ("Nov 19 UTC-5 22:00", utc(2026, 11, 20, 3, 0)),
        ("GMT-3 2026-11-20T01:06", utc(2026, 11, 20, 4, 6)),
        # Refused as not a time, or read as the year 300.
        ("UTC+5:30 08:00", utc(2026, 11, 20, 2, 30)),
        ("+03:00 01:06", utc(2026, 11, 19, 22, 6)),
        ("-0300 01:06", utc(2026, 11, 20, 4, 6)),
    ],
)
def test_an_offset_before_the_time_is_the_times(typed: str, expected: datetime) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse(typed) == expected


@pytest.mark.parametrize(
    "typed",
    ["01:06 utc - db failover", "1:06 am gmt - db failover", "Nov 20 01:06 Utc - db failover"],
)
def test_utc_and_gmt_in_lower_case_date_the_note(typed: str) -> None:
    # `utc-05:00` was read, but `utc` alone made the whole text a note stamped now, its
    # time an hour (or more) from the one typed.
    assert split_leading_time(typed, zone=NAIROBI, now=NOW) == Leading(
        when=utc(2026, 11, 20, 1, 6), rest="db failover"
    )


# --- weekdays ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("Wed 23:50", utc(2026, 11, 18, 20, 50)),  # Wednesday 18 November, EAT
        ("Wednesday at 23:50", utc(2026, 11, 18, 20, 50)),
        ("Thu 1:06 AM", utc(2026, 11, 18, 22, 6)),
        ("Thur 1:06 AM", utc(2026, 11, 18, 22, 6)),
        ("Thurs 1:06 AM", utc(2026, 11, 18, 22, 6)),
        ("Tues 1:06 AM", utc(2026, 11, 16, 22, 6)),
        ("sat. 10:00", utc(2026, 11, 14, 7, 0)),
        ("Friday 08:00", utc(2026, 11, 20, 5, 0)),  # today is Friday and 08:00 has passed
        ("Friday 10:00", utc(2026, 11, 13, 7, 0)),  # today's 10:00 is ahead: last Friday
        ("Friday, Nov 20, 1:06 AM", utc(2026, 11, 19, 22, 6)),
        ("yesterday Thursday 1:06 AM", utc(2026, 11, 18, 22, 6)),
    ],
)
def test_a_weekday_is_the_latest_such_day(typed: str, expected: datetime) -> None:
    assert parse(typed) == expected


@pytest.mark.parametrize(
    "typed",
    ["Mon Nov 20 1:06 AM", "Monday 2026-11-20 01:06", "yesterday Monday 1:06", "today Sat 1:06"],
)
def test_a_weekday_that_contradicts_the_day_is_refused(typed: str) -> None:
    with pytest.raises(TimeParseError, match="is a (Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day"):
        parse(typed)


# --- zones ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "zone", "expected"),
    [
        ("1:06 AM", NAIROBI, utc(2026, 11, 19, 22, 6)),
        ("1:06 AM EAT", NAIROBI, utc(2026, 11, 19, 22, 6)),
        # 22:00 Thursday in Los Angeles: 1:06 AM Thursday is PST, UTC-8.
        ("1:06 AM", LOS_ANGELES, utc(2026, 11, 19, 9, 6)),
        ("1:06 AM PST", LOS_ANGELES, utc(2026, 11, 19, 9, 6)),
        ("21:59", LOS_ANGELES, utc(2026, 11, 20, 5, 59)),
        ("22:30", LOS_ANGELES, utc(2026, 11, 19, 6, 30)),  # later than 22:00: Wednesday
        ("10:00", KOLKATA, utc(2026, 11, 20, 4, 30)),
        ("10:00 IST", KOLKATA, utc(2026, 11, 20, 4, 30)),
        ("11:45", KOLKATA, utc(2026, 11, 19, 6, 15)),  # later than 11:30: yesterday
        ("10:00", CHATHAM, utc(2026, 11, 19, 20, 15)),
        ("19:45", CHATHAM, utc(2026, 11, 20, 6, 0)),
        ("2026-06-20 10:00", CHATHAM, utc(2026, 6, 19, 21, 15)),  # winter: UTC+12:45
        ("01:06", UTC_ZONE, utc(2026, 11, 20, 1, 6)),
        ("06:01", UTC_ZONE, utc(2026, 11, 20, 6, 1)),  # a minute ahead is clock skew, not future
        ("06:05", UTC_ZONE, utc(2026, 11, 19, 6, 5)),  # five minutes ahead is yesterday
    ],
)
def test_read_in_the_writers_zone(typed: str, zone: ZoneInfo, expected: datetime) -> None:
    assert parse(typed, zone) == expected


@pytest.mark.parametrize(
    ("typed", "zone"),
    [
        ("1:06 AM XYZ", NAIROBI),
        ("1:06 AM PST", NAIROBI),  # a real zone, but not the writer's: which PST-ish zone?
        ("1:06 AM EAT", UTC_ZONE),
        ("2026-11-20 01:06 CET", LOS_ANGELES),
    ],
)
def test_unknown_zone_abbreviation_is_refused(typed: str, zone: ZoneInfo) -> None:
    abbreviation = typed.split()[-1]
    with pytest.raises(TimeParseError, match=f"“{abbreviation}”"):
        parse(typed, zone)


def test_the_refusal_of_a_zone_names_the_writers_zone() -> None:
    with pytest.raises(TimeParseError, match="Africa/Nairobi"):
        parse("1:06 AM PST", NAIROBI)


@pytest.mark.parametrize("abbreviation", ["PST", "PDT"])
def test_writers_own_abbreviations_in_either_season_are_accepted(abbreviation: str) -> None:
    # In November Los Angeles is on PST; PDT is its summer name, and reads as the zone too.
    assert parse(f"1:06 AM {abbreviation}", LOS_ANGELES) == utc(2026, 11, 19, 9, 6)
    summer_now = utc(2026, 7, 1, 12, 0)
    assert parse(f"1:06 AM {abbreviation}", LOS_ANGELES, summer_now) == utc(2026, 7, 1, 8, 6)


# --- midnight ---------------------------------------------------------------------------

# 00:30 on Friday 20 November in Nairobi.
JUST_AFTER_MIDNIGHT = utc(2026, 11, 19, 21, 30)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("23:50", utc(2026, 11, 19, 20, 50)),  # later than 00:30: Thursday's 23:50
        ("11:50 PM", utc(2026, 11, 19, 20, 50)),
        ("00:10", utc(2026, 11, 19, 21, 10)),  # Friday's 00:10
        ("12:10 AM", utc(2026, 11, 19, 21, 10)),
        ("yesterday 23:50", utc(2026, 11, 19, 20, 50)),
        ("Nov 19 23:50", utc(2026, 11, 19, 20, 50)),
        ("Nov 20 00:10", utc(2026, 11, 19, 21, 10)),
    ],
)
def test_time_of_day_in_the_future_is_yesterday_across_midnight(
    typed: str, expected: datetime
) -> None:
    assert parse(typed, NAIROBI, JUST_AFTER_MIDNIGHT) == expected


def test_midnight_is_judged_in_the_writers_zone_not_utc() -> None:
    # 06:00 UTC is already Friday in Nairobi but still Thursday in Los Angeles.
    assert parse("05:00", NAIROBI) == utc(2026, 11, 20, 2, 0)
    assert parse("05:00", LOS_ANGELES) == utc(2026, 11, 19, 13, 0)


def test_today_later_than_now_is_refused_not_moved_to_yesterday() -> None:
    with pytest.raises(TimeParseError, match="future"):
        parse("today 23:50")


def test_yesterday_with_a_date_is_refused() -> None:
    with pytest.raises(TimeParseError, match="both a date and a day"):
        parse("yesterday Nov 19 23:50")


def test_today_with_a_date_is_refused() -> None:
    with pytest.raises(TimeParseError, match="both a date and a day"):
        parse("today Nov 19 23:50")


# --- dates and years --------------------------------------------------------------------


def test_date_without_year_in_the_future_is_last_year() -> None:
    assert parse("Dec 25 1:00") == utc(2025, 12, 24, 22, 0)
    assert parse("Nov 27 10:00 AM") == utc(2025, 11, 27, 7, 0)  # a week ahead of now


@pytest.mark.parametrize("typed", ["Nov 20 10:00 AM", "Nov 21 1:06", "20/11 10:00", "Nov 26 23:00"])
def test_date_without_year_just_ahead_is_refused_not_taken_for_last_year(typed: str) -> None:
    # An hour to a week ahead (a day typed wrong, a colleague's date already tomorrow): taken
    # for last year's, the note landed a year back and stretched the impact window to a year.
    with pytest.raises(TimeParseError, match="in the future; give the year for 2025"):
        parse(typed)


def test_date_without_year_in_the_past_is_this_year() -> None:
    assert parse("Jan 2 1:00") == utc(2026, 1, 1, 22, 0)


@pytest.mark.parametrize(
    "typed",
    [
        "2026-12-25 01:00",
        "Dec 25 2026 1:00",
        "2027-01-01 00:00",
        "2026-11-20 10:00",  # an hour ahead of now, today
        "2026-11-20T06:30:00Z",
    ],
)
def test_full_date_in_the_future_is_refused(typed: str) -> None:
    with pytest.raises(TimeParseError, match="future"):
        parse(typed)


def test_full_date_within_the_clock_skew_tolerance_is_accepted() -> None:
    assert parse("2026-11-20 09:01") == utc(2026, 11, 20, 6, 1)


@pytest.mark.parametrize("typed", ["Feb 30 1:00", "2026-02-29 01:00", "Nov 31 1:00"])
def test_impossible_dates_are_refused(typed: str) -> None:
    with pytest.raises(TimeParseError):
        parse(typed)


@pytest.mark.parametrize("typed", ["20 1:06", "Nov 1:06", "2026 1:06", "1:06 20"])
def test_part_of_a_date_is_refused_rather_than_dropped(typed: str) -> None:
    with pytest.raises(TimeParseError, match="month and the day"):
        parse(typed)


@pytest.mark.parametrize(
    ("typed", "readings"),
    [
        ("03/11/2026 1:06", "Mar 11 or Nov 3"),
        ("11/03 1:06 AM", "Nov 3 or Mar 11"),
        ("3.11. 01:06", "Mar 11 or Nov 3"),
        ("1:06 AM 11-3-26", "Nov 3 or Mar 11"),
    ],
)
def test_a_numeric_date_that_reads_two_ways_is_refused(typed: str, readings: str) -> None:
    # Month first in the United States, day first in most of the world: never guess.
    with pytest.raises(TimeParseError, match=f"could be {readings}; write the month as a word"):
        parse(typed)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("20/11/2026 1:06", utc(2026, 11, 19, 22, 6)),
        ("11/20 1:06", utc(2026, 11, 19, 22, 6)),
        ("20.11.2026 01:06", utc(2026, 11, 19, 22, 6)),
        ("11/11 1:06", utc(2026, 11, 10, 22, 6)),
        ("2026-11-03 1:06", utc(2026, 11, 2, 22, 6)),
        ("13:06:05.10", utc(2026, 11, 19, 10, 6, 5) + timedelta(milliseconds=100)),
    ],
)
def test_a_numeric_date_that_reads_one_way_is_read(typed: str, expected: datetime) -> None:
    assert parse(typed) == expected


@pytest.mark.parametrize(
    "typed", ["20/11 1:06", "20-11 1:06", "20.11. 01:06", "20.11 01:06", "1:06 AM 20/11"]
)
def test_a_day_first_numeric_date_without_a_year_is_read(typed: str) -> None:
    # Day first is the order of most of the world; 20 cannot be a month, so there is one
    # reading, as for `11/20 1:06` (month first), which was read while these were refused.
    assert parse(typed) == utc(2026, 11, 19, 22, 6)


@pytest.mark.parametrize("typed", ["NOV 20 1:06 AM", "DEC 25 1:00", "SEPT 5 1:06"])
def test_upper_case_month_names_are_not_taken_for_zones(typed: str) -> None:
    expected = {"NOV": utc(2026, 11, 19, 22, 6), "DEC": utc(2025, 12, 24, 22, 0)}
    result = parse(typed)
    assert result == expected.get(typed.split()[0], utc(2026, 9, 4, 22, 6))


# --- daylight saving --------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["2026-03-08 02:30", "Mar 8 2:30 AM", "2026-03-08 02:00"])
def test_spring_forward_gap_is_refused(typed: str) -> None:
    with pytest.raises(TimeParseError, match="skipped"):
        parse(typed, LOS_ANGELES)


def test_spring_forward_edges_exist() -> None:
    assert parse("2026-03-08 01:59", LOS_ANGELES) == utc(2026, 3, 8, 9, 59)  # PST
    assert parse("2026-03-08 03:00", LOS_ANGELES) == utc(2026, 3, 8, 10, 0)  # PDT


def test_time_of_day_in_todays_gap_is_refused() -> None:
    four_am_pdt = utc(2026, 3, 8, 11, 0)
    with pytest.raises(TimeParseError, match="skipped"):
        parse("2:30", LOS_ANGELES, four_am_pdt)


def test_time_of_day_in_the_gap_just_after_it_is_refused_not_moved_to_yesterday() -> None:
    # At 3:10 AM PDT, 2:30 is 40 minutes ago on a clock not yet put forward; it is not
    # yesterday's 2:30.
    three_ten_am_pdt = utc(2026, 3, 8, 10, 10)
    with pytest.raises(TimeParseError, match="skipped"):
        parse("2:30", LOS_ANGELES, three_ten_am_pdt)


def test_time_of_day_whose_gap_is_still_ahead_is_yesterday() -> None:
    # At 1:00 AM PST on 8 March, 2:30 has not come (and will not): it is 7 March's 2:30.
    one_am_pst = utc(2026, 3, 8, 9, 0)
    assert parse("2:30", LOS_ANGELES, one_am_pst) == utc(2026, 3, 7, 10, 30)


@pytest.mark.parametrize("typed", ["2026-11-01 01:30", "Nov 1 1:30 AM", "Nov 1 1:30 AM PDT"])
def test_fall_back_ambiguous_time_is_the_first_occurrence(typed: str) -> None:
    assert parse(typed, LOS_ANGELES) == utc(2026, 11, 1, 8, 30)  # 1:30 PDT, UTC-7


def test_fall_back_time_of_day_is_the_latest_pass_already_come() -> None:
    # At 2:00 AM PST both passes of 1:30 are past: 1:30 PST, half an hour ago, is meant, as a
    # time of day is always its latest past occurrence (not 1:30 PDT, an hour and a half ago).
    two_am_pst = utc(2026, 11, 1, 10, 0)
    assert parse("1:30", LOS_ANGELES, two_am_pst) == utc(2026, 11, 1, 9, 30)


def test_fall_back_time_of_day_during_the_second_pass() -> None:
    # At 1:40 AM PST, "1:30" is ten minutes ago, not seventy.
    second_pass = utc(2026, 11, 1, 9, 40)
    assert parse("1:30", LOS_ANGELES, second_pass) == utc(2026, 11, 1, 9, 30)
    # 1:55 of the second pass is still ahead; the first pass's 1:55 has come.
    assert parse("1:55", LOS_ANGELES, second_pass) == utc(2026, 11, 1, 8, 55)


def test_fall_back_time_of_day_with_its_first_pass_named() -> None:
    two_am_pst = utc(2026, 11, 1, 10, 0)
    assert parse("1:30 AM PDT", LOS_ANGELES, two_am_pst) == utc(2026, 11, 1, 8, 30)


def test_fall_back_second_occurrence_when_the_writer_names_it() -> None:
    assert parse("Nov 1 1:30 AM PST", LOS_ANGELES) == utc(2026, 11, 1, 9, 30)


def test_fall_back_first_occurrence_still_ahead_is_yesterday() -> None:
    # At 1:20 AM PDT (the first pass), 1:50 has not happened yet today.
    first_pass = utc(2026, 11, 1, 8, 20)
    assert parse("1:50", LOS_ANGELES, first_pass) == utc(2026, 10, 31, 8, 50)


# --- numbers that are not times ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "500 errors - checkout",
        "3 - 2 servers down",
        "v1.2 - deploy",
        "Deploy at 10:30 went wrong - rollback",
        "1 - x",
        "2026 - release",
        "Nov 20 - no clock time in it",
        "10.30 - dots are not a clock",
        "16:9 - an aspect ratio",
        "1:06 AM -no space after the dash",
        "1:06 AM-no spaces",
        "checkout returned 503 - at 10:30",
        "100% - traffic back",
        "$10:30 - fee",
        "v10:30 - x",
        "HTTP 503 at 10:30 - upper-case words before the clock are not zones",
        "API 10:30 - x",
    ],
)
def test_numbers_that_are_not_times_stay_text(text: str) -> None:
    assert split_leading_time(text, zone=NAIROBI, now=NOW) == Leading(when=None, rest=text)


@pytest.mark.parametrize(
    "head", ["500 errors", "3", "v1.2", "Deploy at 10:30 went wrong", "2026-11-20", "at 10"]
)
def test_looks_like_time_is_false_for_text(head: str) -> None:
    assert not looks_like_time(head)


@pytest.mark.parametrize(
    "head",
    [
        "1:06 AM",
        "01:06",
        "13:06:30",
        "1 PM",
        "2026-11-20 01:06",
        "Nov 20 1:06 AM",
        "1 PM EAT",
        "2026-11-20T01:06Z",
    ],
)
def test_looks_like_time_is_true_for_times(head: str) -> None:
    assert looks_like_time(head)


@pytest.mark.parametrize("text", ["25:99 - x", "13:75 - x", "24:00 - x", "12:00:00:00 - x"])
def test_impossible_clock_times_are_refused(text: str) -> None:
    with pytest.raises(TimeParseError, match="not a time"):
        split_leading_time(text, zone=NAIROBI, now=NOW)


@pytest.mark.parametrize("typed", ["01:06 +25:00", "01:06 UTC+99", "01:06 -24:00"])
def test_offsets_of_a_day_or_more_are_refused(typed: str) -> None:
    with pytest.raises(TimeParseError, match="not a time"):
        parse(typed)


@pytest.mark.parametrize(
    "typed", ["1:06 AM 2 PM", "1:06 AM PM", "10:30 11:00", "1pm 2pm", "10:30-11:00"]
)
def test_two_times_are_refused(typed: str) -> None:
    with pytest.raises(TimeParseError, match="more than one time"):
        parse(typed)


def test_parse_time_refuses_text_that_is_not_a_time() -> None:
    with pytest.raises(TimeParseError, match="not a time"):
        parse("500 errors")


# --- splitting --------------------------------------------------------------------------


def test_split_takes_the_time_and_the_rest() -> None:
    assert split_leading_time("1:06 AM - Outage begins", zone=NAIROBI, now=NOW) == Leading(
        when=utc(2026, 11, 19, 22, 6), rest="Outage begins"
    )


def test_split_only_at_the_first_separator() -> None:
    leading = split_leading_time("10:30 - 11:00 - a window", zone=UTC_ZONE, now=NOW)
    assert leading == Leading(when=utc(2026, 11, 19, 10, 30), rest="11:00 - a window")


def test_split_without_a_time_keeps_the_text_stripped() -> None:
    assert split_leading_time("  Outage begins  ", zone=NAIROBI, now=NOW) == Leading(
        when=None, rest="Outage begins"
    )


def test_split_with_a_time_and_nothing_after() -> None:
    assert split_leading_time("1:06 AM - ", zone=NAIROBI, now=NOW) == Leading(
        when=utc(2026, 11, 19, 22, 6), rest=""
    )


def test_now_in_another_zone_means_the_same_instant() -> None:
    now_in_la = NOW.astimezone(LOS_ANGELES)
    assert parse("1:06 AM", NAIROBI, now_in_la) == parse("1:06 AM", NAIROBI, NOW)


# --- properties -------------------------------------------------------------------------

ZONES = [
    NAIROBI,
    LOS_ANGELES,
    KOLKATA,
    CHATHAM,
    UTC_ZONE,
    ZoneInfo("Europe/London"),
    ZoneInfo("Australia/Sydney"),  # daylight saving in the southern summer
    ZoneInfo("Australia/Lord_Howe"),  # clocks move by half an hour
    ZoneInfo("America/Sao_Paulo"),  # no letter abbreviation ("-03")
]
NOWS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
WORDS = st.sampled_from(
    "1:06 01:06 13:06:30 25:99 23:59:59.5 12:00am 2pm AM pm a.m. 1 20 1st 2026 2026-11-20 "
    "2026-11-20T01:06Z 0001 9999 Nov nov Feb 29 31 yesterday today Mon Friday at on , - "
    "UTC UTC+3 GMT-14 +03:00 +25:00 Z EAT PST PDT IST x errors".split()
)


@settings(max_examples=300)
@given(words=st.lists(WORDS, min_size=1, max_size=6), zone=st.sampled_from(ZONES), now=NOWS)
def test_a_leading_time_is_never_in_the_future_and_nothing_else_is_raised(
    words: list[str], zone: ZoneInfo, now: datetime
) -> None:
    text = " ".join(words) + " - rest"
    try:
        leading = split_leading_time(text, zone=zone, now=now)
    except TimeParseError:
        return
    if leading.when is None:
        assert leading.rest == text
    else:
        assert leading.when.tzinfo is UTC
        assert leading.when <= now + FUTURE_TOLERANCE


def _readings(moment: datetime, zone: ZoneInfo) -> set[datetime]:
    """What a person who reads `moment` off a wall clock in `zone` can be taken to mean.

    Its own instant; and, in the hour that happens twice, the first occurrence of it.
    """
    wall = moment.astimezone(zone).replace(tzinfo=None)
    return {moment, wall.replace(tzinfo=zone, fold=0).astimezone(UTC)}


@settings(max_examples=300)
@given(
    zone=st.sampled_from(ZONES),
    now=NOWS,
    minutes_ago=st.integers(min_value=0, max_value=22 * 60),
)
def test_a_time_of_day_from_the_last_22_hours_reads_back(
    zone: ZoneInfo, now: datetime, minutes_ago: int
) -> None:
    moment = (now - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    typed = moment.astimezone(zone).strftime("%H:%M")
    assert parse(typed, zone, now) in _readings(moment, zone)


@settings(max_examples=300)
@given(
    zone=st.sampled_from(ZONES),
    now=NOWS,
    # Not the last week of the year before: that date is less than a week ahead this year.
    minutes_ago=st.integers(min_value=0, max_value=357 * 24 * 60),
)
def test_a_date_and_time_from_the_last_year_reads_back(
    zone: ZoneInfo, now: datetime, minutes_ago: int
) -> None:
    moment = (now - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    local = moment.astimezone(zone)
    assert parse(local.strftime("%Y-%m-%d %H:%M"), zone, now) in _readings(moment, zone)
    # Without the year: this year's, or last year's when this year's is still ahead.
    assert parse(local.strftime("%b %d %H:%M"), zone, now) in _readings(moment, zone)


@pytest.mark.parametrize(
    ("typed", "zone"),
    [
        ("0001-01-01 00:30", NAIROBI),  # a year before year 1 once moved into UTC
        ("9999-12-31 23:59", LOS_ANGELES),  # a year after 9999 once moved into UTC
        ("0001-01-01 00:30 +05:00", UTC_ZONE),
    ],
)
def test_a_date_at_the_edge_of_the_calendar_is_refused(typed: str, zone: ZoneInfo) -> None:
    with pytest.raises(TimeParseError, match="too far from today"):
        parse(typed, zone)


@pytest.mark.parametrize(
    ("typed", "back"),
    [
        ("now", timedelta(0)),
        ("Now", timedelta(0)),
        ("just now", timedelta(0)),
        ("right now", timedelta(0)),
        ("10 min ago", timedelta(minutes=10)),
        ("10min ago", timedelta(minutes=10)),
        ("5m ago", timedelta(minutes=5)),
        ("45 seconds ago", timedelta(seconds=45)),
        ("an hour ago", timedelta(hours=1)),
        ("a minute ago", timedelta(minutes=1)),
        ("1h30m ago", timedelta(hours=1, minutes=30)),
        ("1 hour 30 minutes ago", timedelta(hours=1, minutes=30)),
        ("2 days 3 hours ago", timedelta(days=2, hours=3)),
        ("7 days ago", timedelta(days=7)),
        ("10  MIN   AGO", timedelta(minutes=10)),
    ],
)
def test_now_and_times_counted_back_from_it(typed: str, back: timedelta) -> None:
    for zone in (NAIROBI, LOS_ANGELES, CHATHAM):
        assert parse_time(typed, zone=zone, now=NOW) == NOW - back
    assert split_leading_time(f"{typed} - db restarted", zone=NAIROBI, now=NOW) == Leading(
        when=NOW - back, rest="db restarted"
    )


def test_counted_back_across_a_daylight_saving_change_is_elapsed_time() -> None:
    # 1 Nov 2026, 09:30 UTC is 01:30 PST, the second 1:30 of that night in Los Angeles: an
    # hour ago is 08:30 UTC, the first 1:30 (PDT), not the same wall time.
    now = utc(2026, 11, 1, 9, 30)
    assert parse_time("an hour ago", zone=LOS_ANGELES, now=now) == utc(2026, 11, 1, 8, 30)


@pytest.mark.parametrize(
    "typed",
    ["5 apples ago", "ago", "10 minutes", "5 min 3 min ago", "1h 1h ago", "nowhere", "a ago"],
)
def test_what_only_resembles_a_time_counted_back_is_refused(typed: str) -> None:
    with pytest.raises(TimeParseError, match="is not a time I can read"):
        parse_time(typed, zone=NAIROBI, now=NOW)


def test_further_back_than_a_week_asks_for_the_date() -> None:
    with pytest.raises(TimeParseError, match="more than 7 days ago; give the date"):
        parse_time("8 days ago", zone=NAIROBI, now=NOW)


@pytest.mark.parametrize("text", ["now is the time - go", "10 minutes - of downtime", "ago - x"])
def test_text_that_only_mentions_now_stays_text(text: str) -> None:
    assert split_leading_time(text, zone=NAIROBI, now=NOW) == Leading(when=None, rest=text)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("10:05 db back up", ("10:05", "db back up")),
        ("at  10:00 PM   yesterday  db failover", ("at 10:00 PM yesterday", "db failover")),
        ("10 min ago we restarted", ("10 min ago", "we restarted")),
        ("Nov 20 1:06 AM alerts fired", ("Nov 20 1:06 AM", "alerts fired")),
        ("8:50 PM: rolled back", ("8:50 PM", "rolled back")),  # not `8:50` and `PM: …`
        ("10:05 \u2014 db back up", ("10:05", "db back up")),
        ("10:05 --", None),
        ("10:05", None),  # a time and nothing else: no text to date
        ("10:05 - db back up", None),  # dated as asked
        ("now it works", None),  # stamped now anyway
        ("500 errors on checkout", None),
        ("Deploy at 10:30 failed", None),
    ],
)
def test_unseparated_time_finds_a_leading_time_without_the_dash(
    text: str, found: tuple[str, str] | None
) -> None:
    assert unseparated_time(text) == found
