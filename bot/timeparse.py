"""The optional leading `<when> - ` of a command's text, read as an aware datetime.

Only this module knows python-dateutil. The rules, in short:

* `<when>` is whatever stands before the first " - ", and only when every word of it is a
  word of a date or time and it holds a clock time (`1:06 AM`, `01:06`, `13:06:30`, `1 PM`).
  `500 errors - checkout` or `Deploy at 10:30 failed - rollback` stay plain text.
* A bare time of day is read in the writer's zone and is today, or yesterday if that
  would lie in the future. A date without a year is this year, or last year likewise.
  A full date in the future is refused.
* A wall time that does not exist (the hour skipped when clocks go forward) is refused;
  one that happens twice (clocks going back) is the first of the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from dateutil import parser as dateutil_parser

SEPARATOR = " - "

# A few seconds of disagreement between a person's clock and ours is not "the future".
FUTURE_TOLERANCE = timedelta(minutes=2)

_CLOCK = re.compile(
    r"(?<![\d.])\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?!\d)"
    r"|(?<![\d.])\d{1,2}\s*[ap]\.?m\.?(?![a-z])",
    re.IGNORECASE,
)
_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
).split()
_WEEKDAYS = (
    "monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs "
    "fri sat sun"
).split()
_WORDS = frozenset(_MONTHS + _WEEKDAYS + ["at", "on", "today", "yesterday", "am", "pm"])
_NUMERIC_TOKEN = re.compile(
    r"[\d:./+-]+(?:t[\d:.+-]+)?z?"  # 01:06, 2026-11-20, 20/11/2026, 2026-11-20T01:06Z, +03:00
    r"|\d{1,2}(?:st|nd|rd|th)"
    r"|\d{1,2}(?::\d{2}){0,2}[ap]\.?m\.?"
    r"|[ap]\.m\.?"
    r"|(?:utc|gmt)[+-]\d{1,2}(?::?\d{2})?",
    re.IGNORECASE,
)
_ZONE_ABBREVIATION = re.compile(r"[A-Z]{2,5}|Z")
_RELATIVE_DAYS = {"today": 0, "yesterday": 1}


class TimeParseError(ValueError):
    """The text starts with something meant as a time that cannot be read as one."""


@dataclass(frozen=True)
class Leading:
    """A command's text split into its optional time and the rest."""

    when: datetime | None
    rest: str


def split_leading_time(text: str, *, zone: ZoneInfo, now: datetime) -> Leading:
    """Split `"<when> - rest"` into an aware datetime and the rest; plain text has no time."""
    head, separator, tail = text.partition(SEPARATOR)
    if not separator or not looks_like_time(head):
        return Leading(when=None, rest=text.strip())
    return Leading(when=parse_time(head, zone=zone, now=now), rest=tail.strip())


def looks_like_time(text: str) -> bool:
    """True when `text` is made only of date and time words and holds a clock time."""
    text = text.strip()
    if not text or len(text) > 64 or not _CLOCK.search(text):
        return False
    return all(_is_time_word(token) for token in re.split(r"[\s,]+", text) if token)


def _is_time_word(token: str) -> bool:
    return (
        token.lower().rstrip(".") in _WORDS
        or _NUMERIC_TOKEN.fullmatch(token) is not None
        or _ZONE_ABBREVIATION.fullmatch(token) is not None
    )


def parse_time(text: str, *, zone: ZoneInfo, now: datetime) -> datetime:
    """Read `text` (a clock time, perhaps with a date) as an aware UTC datetime."""
    text = " ".join(text.split())
    if not looks_like_time(text):
        raise TimeParseError(
            f"“{text}” is not a time I can read; try `1:06 AM` or `2026-11-20 01:06`."
        )
    days_back = 0
    words = []
    for word in text.split(" "):
        key = word.lower().rstrip(",")
        if key in _RELATIVE_DAYS:
            days_back = _RELATIVE_DAYS[key]
        elif key not in ("at", "on"):
            words.append(word)
    cleaned = " ".join(words)

    # Parse twice with different defaults: a field that changes with the default was not typed.
    first_default, second_default = datetime(2000, 1, 1), datetime(2004, 3, 3)
    try:
        first = _parse(cleaned, first_default, zone=zone, now=now)
        second = _parse(cleaned, second_default, zone=zone, now=now)
    except TimeParseError:
        raise
    except (ValueError, OverflowError):
        raise TimeParseError(
            f"“{text}” is not a time I can read; try `1:06 AM`, `13:06` or `2026-11-20 01:06`."
        ) from None
    has_year = first.year == second.year
    has_date = first.month == second.month and first.day == second.day
    if days_back and has_date:
        raise TimeParseError(f"“{text}” gives both a date and a day; give one or the other.")

    target_zone: tzinfo = first.tzinfo or zone
    local_now = now.astimezone(target_zone)
    clock = first.time().replace(tzinfo=None)
    if has_date:
        year = first.year if has_year else local_now.year
        try:
            candidate = datetime.combine(first.date().replace(year=year), clock)
        except ValueError:
            raise TimeParseError(f"“{text}” is not a date in {year}.") from None
        result = _localize(candidate, target_zone, text)
        if result > now + FUTURE_TOLERANCE:
            if has_year:
                raise TimeParseError(f"“{text}” is in the future.")
            try:
                candidate = candidate.replace(year=year - 1)
            except ValueError:
                raise TimeParseError(f"“{text}” is in the future.") from None
            result = _localize(candidate, target_zone, text)
    else:
        day = local_now.date() - timedelta(days=days_back)
        result = _localize(datetime.combine(day, clock), target_zone, text)
        if result > now + FUTURE_TOLERANCE:
            if days_back:
                raise TimeParseError(f"“{text}” is in the future.")
            result = _localize(datetime.combine(day - timedelta(days=1), clock), target_zone, text)
    return result.astimezone(UTC)


def _parse(text: str, default: datetime, *, zone: ZoneInfo, now: datetime) -> datetime:
    tzinfos = _known_abbreviations(zone, now)
    unknown = [
        token
        for token in text.replace(",", " ").split()
        if _ZONE_ABBREVIATION.fullmatch(token)
        and token not in tzinfos
        and token not in ("AM", "PM")
    ]
    if unknown:
        raise TimeParseError(
            f"I don't know which zone “{unknown[0]}” is. Leave it out and the time is read "
            f"in yours ({zone.key}), or write an offset such as +03:00."
        )
    return dateutil_parser.parse(text, default=default, tzinfos=tzinfos)


def _known_abbreviations(zone: ZoneInfo, now: datetime) -> dict[str, tzinfo]:
    known: dict[str, tzinfo] = {"UTC": UTC, "GMT": UTC, "Z": UTC}
    # The writer's own zone by its names across the year (e.g. PST and PDT), so that
    # "1:06 AM EAT" means the same as "1:06 AM" to someone in Africa/Nairobi.
    for months in range(0, 12, 3):
        name = (now + timedelta(days=30 * months)).astimezone(zone).tzname()
        if name and name.isalpha() and name not in known:
            known[name] = zone
    return known


def _localize(naive: datetime, zone: tzinfo, typed: str) -> datetime:
    aware = naive.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise TimeParseError(
            f"“{typed}” does not exist on {naive:%d %B %Y} in {_zone_name(zone)}: "
            "the clocks skipped that hour."
        )
    return aware


def _zone_name(zone: tzinfo) -> str:
    return zone.key if isinstance(zone, ZoneInfo) else str(zone)
