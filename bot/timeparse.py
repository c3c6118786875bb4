"""The optional leading `<when> - ` of a command's text, read as an aware datetime.

Only this module knows python-dateutil. The rules, in short:

* `<when>` is whatever stands before the first " - ", and only when every word of it is a
  word of a date or time and it holds a clock time (`1:06 AM`, `01:06`, `13:06:30`, `1 PM`).
  `500 errors - checkout` or `Deploy at 10:30 failed - rollback` stay plain text.
* A bare time of day is read in the writer's zone and is today, or yesterday if that
  would lie in the future. A weekday (`Wed 23:50`) is the latest such day likewise;
  `today`/`yesterday` are taken as said, as days of the writer's calendar even when the
  time names another zone. A date without a year is this year, or last year likewise,
  except that one less than a week ahead is refused (more likely a slip than last year).
  A full date in the future is refused, and so is part of a date (`Nov 1:06`) and a date
  of numbers that reads two ways (`03/11`: March or November?).
* `now`, and a time counted back from it (`10 min ago`, `an hour ago`, `1h30m ago`), are
  read as said; they need no clock time and name no zone.
* A zone may be given: an offset (`+03:00`, `UTC+3`, meaning ahead of UTC), `UTC`/`GMT`
  (in any case)/`Z`, or the writer's own zone's abbreviations (`EAT`; `PST` and `PDT`).
  Other names are refused.
* A wall time that does not exist (the hour skipped when clocks go forward) is refused;
  one that happens twice (clocks going back) is the first of the two, unless the writer
  named the second by its abbreviation (refused while that one is still ahead). A time of
  day alone is the second when that has already come (at 2 AM, `1:30` is half an hour ago).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from dateutil import parser as dateutil_parser

from bot import bidi

SEPARATOR = " - "
# Slack trims a command's text, so `10:00 - ` with nothing after it arrives as `10:00 -`.
_TRIMMED_SEPARATOR = SEPARATOR.rstrip()

# A few seconds of disagreement between a person's clock and ours is not "the future".
FUTURE_TOLERANCE = timedelta(minutes=2)
# A date without a year less than this far ahead is refused as in the future, not taken for
# last year's: a day typed wrong, or a colleague's date already tomorrow, is far likelier in
# an incident's timeline than a moment almost a year back.
YEARLESS_AHEAD = timedelta(days=7)

_CLOCK = re.compile(
    r"(?<![\d.])\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?!\d)"
    r"|(?<![\d.])\d{1,2}\s*[ap]\.?m\.?(?![a-z])",
    re.IGNORECASE,
)
_MERIDIEM = re.compile(r"(?<![a-z])[ap]\.?m(?![a-z])", re.IGNORECASE)
# dateutil reads `A.M.` as A, then a zone named M: it is given to it as `AM`.
_DOTTED_MERIDIEM = re.compile(r"(?<![a-z])([ap])\.m(?![a-z])\.?", re.IGNORECASE)
_MONTHS = (
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
).split()
_WEEKDAY_NAMES = (
    ("monday", "mon"),
    ("tuesday", "tue", "tues"),
    ("wednesday", "wed"),
    ("thursday", "thu", "thur", "thurs"),
    ("friday", "fri"),
    ("saturday", "sat"),
    ("sunday", "sun"),
)
_WEEKDAYS = {name: number for number, names in enumerate(_WEEKDAY_NAMES) for name in names}
_WORDS = frozenset([*_MONTHS, *_WEEKDAYS, "at", "on", "today", "yesterday", "am", "pm"])
_NUMERIC_TOKEN = re.compile(
    r"[\d:./+-]+(?:t[\d:.+-]+)?z?"  # 01:06, 2026-11-20, 20/11/2026, 2026-11-20T01:06Z, +03:00
    r"|\d{1,2}(?:st|nd|rd|th)"
    r"|\d{1,2}(?::\d{2}){0,2}[ap]\.?m\.?"
    r"|[ap]\.m\.?"
    r"|(?:utc|gmt)[+-]\d{1,2}(?::?\d{2})?",
    re.IGNORECASE,
)
_ZONE_ABBREVIATION = re.compile(r"[A-Z]{2,5}|Z")
# Read in any case, as they are in `utc+3`: no other zone has these names.
_UTC_NAMES = frozenset({"utc", "gmt"})
# An offset after an ISO time (`T01:06-08:00`), on its own (`01:06 -08:00`), or with a plus
# (`01:06+03:00`). `10:30-11:00` is left alone: that is more likely a range of two times.
_ISO_OFFSET = re.compile(r"(t\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)[+-]\d{1,2}(?::?\d{2})?", re.I)
_OTHER_OFFSET = re.compile(
    r"(?:(?<=\s)|^)[+-]\d{1,2}(?::?\d{2})?(?!\S)|(?<=\d)\+\d{1,2}(?::?\d{2})?(?![\d:])"
)
_LONE_OFFSET = re.compile(r"[+-]\d{1,2}(?::?\d{2})?")
# What people set a time off with when not " - ": hyphens, en and em dashes.
_DASHES = re.compile(r"[-\u2013\u2014]+")
_RELATIVE_DAYS = {"today": 0, "yesterday": 1}
# A date of numbers alone (`03/11/2026`, `3.11.`, `03-11`), but not year-first (`2026-11-03`).
_NUMERIC_DATE = re.compile(
    r"(?<![\d/.:-])(\d{1,2})([/.-])(\d{1,2})(?:\2\d{2}(?:\d{2})?)?(?![\d/:-])"
)
# People mean "UTC+3" as three hours ahead of UTC; dateutil reads it the POSIX way (behind),
# so it is rewritten as a plain offset first.
_UTC_OFFSET = re.compile(
    r"(?<![a-z])(?:utc|gmt)\s*([+-])(\d{1,2})(?::?(\d{2}))?(?!\d)", re.IGNORECASE
)


# `now`, `just now`, `10 min ago`, `an hour ago`, `1h30m ago`, `2 days 3 hours ago`.
_AGO_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_AGO_PART = re.compile(r"(an?|\d{1,4})\s*([a-z]+)", re.IGNORECASE)
_AGO = re.compile(
    r"(?:(?:an?|\d{1,4})\s*[a-z]+\s*){1,3}ago|(?:just\s+)?now|right\s+now", re.IGNORECASE
)
# Further back than this is more likely a slip (`90 hours ago` for `90 minutes ago`) than
# meant, and a date says it better.
_AGO_LIMIT = timedelta(days=7)


class TimeParseError(bidi.QuotingError, ValueError):
    """The text starts with something meant as a time that cannot be read as one."""


@dataclass(frozen=True)
class Leading:
    """A command's text split into its optional time and the rest."""

    when: datetime | None
    rest: str


def partition(text: str) -> tuple[str, str, str]:
    """`text.partition(SEPARATOR)`, also finding a separator that ends the text (`10:00 -`)."""
    head, separator, tail = text.partition(SEPARATOR)
    if not separator and text.endswith(_TRIMMED_SEPARATOR):
        return text.removesuffix(_TRIMMED_SEPARATOR), SEPARATOR, ""
    return head, separator, tail


def split_leading_time(text: str, *, zone: ZoneInfo, now: datetime) -> Leading:
    """Split `"<when> - rest"` into an aware datetime and the rest; plain text has no time."""
    head, separator, tail = partition(text)
    if not separator or not looks_like_time(head):
        return Leading(when=None, rest=text.strip())
    return Leading(when=parse_time(head, zone=zone, now=now), rest=tail.strip())


def unseparated_time(text: str) -> tuple[str, str] | None:
    """The time that `text` starts with but did not set off with " - " (`10:05 db back up`),
    which was likely meant to date it, and the rest; None when there is none or it is."""
    opening = text[:80]
    if not (_CLOCK.search(opening) or "ago" in opening.lower()) or partition(text)[1]:
        return None  # the first test alone spares most notes the search below
    words = text.split(maxsplit=5)
    for count in range(min(len(words) - 1, 5), 0, -1):
        # What set the time off instead of " - " (`10:05: db`, `10:05 -- db`, an en or em
        # dash) belongs to neither the time nor the text: the edit given back must read.
        time_words = [*words[: count - 1], words[count - 1].rstrip(",:;")]
        while time_words and _DASHES.fullmatch(time_words[-1]):
            time_words.pop()
        head = " ".join(time_words)
        if looks_like_time(head) and _counted_back(head) != timedelta(0):
            rest = text.split(maxsplit=count)[count]
            first, _, after = rest.partition(" ")
            if _DASHES.fullmatch(first):
                rest = after.strip()
            return (head, rest) if rest else None
    return None


def looks_like_time(text: str) -> bool:
    """True when `text` is made only of date and time words and holds a clock time, or is
    `now` or a time counted back from it (`10 min ago`)."""
    text = text.strip()
    if _counted_back(text) is not None:
        return True
    clock = _CLOCK.search(text) if text and len(text) <= 64 else None
    if clock is None:
        return False
    # A zone name ("EAT", "UTC") follows the time it qualifies; an upper-case word before
    # the clock ("HTTP 503 at 10:30 - ...") makes the text a note, not a time.
    return all(
        _is_time_word(token.group(), zone_allowed=token.end() > clock.start())
        for token in re.finditer(r"[^\s,]+", text)
    )


def _is_time_word(token: str, *, zone_allowed: bool) -> bool:
    return (
        token.lower().rstrip(".") in _WORDS
        or _NUMERIC_TOKEN.fullmatch(token) is not None
        or (zone_allowed and _ZONE_ABBREVIATION.fullmatch(token) is not None)
        or (zone_allowed and token.lower() in _UTC_NAMES)
    )


def parse_time(text: str, *, zone: ZoneInfo, now: datetime) -> datetime:
    """Read `text` (a clock time, perhaps with a date or a day) as an aware UTC datetime."""
    text = " ".join(text.split())
    back = _counted_back(text)
    if back is not None:
        if back > _AGO_LIMIT:
            raise TimeParseError(
                f"{bidi.quoted(text)} is more than 7 days ago; "
                "give the date, as in `Nov 20 1:06 AM`."
            )
        return now.astimezone(UTC) - back
    if not looks_like_time(text):
        raise TimeParseError(
            f"{bidi.quoted(text)} is not a time I can read; try `1:06 AM` or `2026-11-20 01:06`."
        )
    if _count_clocks(text) > 1 or len(_MERIDIEM.findall(text)) > 1:
        raise TimeParseError(f"{bidi.quoted(text)} holds more than one time; give just one.")
    _refuse_ambiguous_date(text)
    # dateutil would take a weekday as the *next* such day and "today" not at all, so the
    # words that name a day are read here and the rest is left to dateutil.
    relative_day: int | None = None
    weekday: int | None = None
    words = []
    for word in text.split(" "):
        key = word.lower().rstrip(",.")
        if key in _RELATIVE_DAYS:
            relative_day = _RELATIVE_DAYS[key]
        elif key in _WEEKDAYS:
            weekday = _WEEKDAYS[key]
        elif key in _UTC_NAMES:
            words.append(word.upper())  # dateutil knows only UTC and GMT as zones
        elif key not in ("at", "on"):
            words.append(word)
    cleaned = _offset_last(_UTC_OFFSET.sub(_plain_offset, " ".join(words)))
    cleaned = _DOTTED_MERIDIEM.sub(lambda match: f"{match.group(1).upper()}M", cleaned)
    cleaned = _NUMERIC_DATE.sub(_month_named, cleaned)
    tzinfos = _known_abbreviations(zone, now)

    # Parse twice with different defaults: a field that changes with the default was not typed.
    first_default, second_default = datetime(2000, 1, 1), datetime(2004, 3, 3)
    try:
        first = _parse(cleaned, first_default, zone=zone, tzinfos=tzinfos)
        second = _parse(cleaned, second_default, zone=zone, tzinfos=tzinfos)
        first.utcoffset()  # an offset of a day or more (`+25:00`) fails here, not later
    except TimeParseError:
        raise
    except (ValueError, OverflowError):
        raise TimeParseError(
            f"{bidi.quoted(text)} is not a time I can read; "
            "try `1:06 AM`, `13:06` or `2026-11-20 01:06`."
        ) from None
    has_year = first.year == second.year
    has_month = first.month == second.month
    has_date = first.day == second.day
    if has_month != has_date or (has_year and not has_date):
        raise TimeParseError(
            f"{bidi.quoted(text)} gives only part of a date; give the month and the day too, "
            "as in `Nov 20 1:06 AM` or `2026-11-20 01:06`."
        )
    if relative_day is not None and has_date:
        raise TimeParseError(
            f"{bidi.quoted(text)} gives both a date and a day; give one or the other."
        )

    try:
        return _resolve(
            first,
            text=text,
            cleaned=cleaned,
            parts=(has_year, has_date),
            relative_day=relative_day,
            weekday=weekday,
            zone=zone,
            now=now,
            tzinfos=tzinfos,
        )
    except OverflowError:  # year 1 or 9999 moved into UTC
        raise TimeParseError(
            f"{bidi.quoted(text)} is too far from today to be read as a time."
        ) from None


def _resolve(
    first: datetime,
    *,
    text: str,
    cleaned: str,
    parts: tuple[bool, bool],
    relative_day: int | None,
    weekday: int | None,
    zone: ZoneInfo,
    now: datetime,
    tzinfos: dict[str, tzinfo],
) -> datetime:
    """The moment `first` means; `parts` says whether its year and its date were typed."""
    has_year, has_date = parts
    target_zone: tzinfo = first.tzinfo or zone
    local_now = now.astimezone(target_zone)
    clock = first.time().replace(tzinfo=None)
    if has_date:
        year = first.year if has_year else local_now.year
        try:
            candidate = datetime.combine(first.date().replace(year=year), clock)
        except ValueError:
            raise TimeParseError(f"{bidi.quoted(text)} is not a date in {year}.") from None
        if _is_future(candidate, target_zone, now):
            if has_year:
                raise TimeParseError(f"{bidi.quoted(text)} is in the future.")
            last_years = f"{bidi.quoted(text)} is in the future; give the year for {year - 1}."
            if candidate - local_now.replace(tzinfo=None) < YEARLESS_AHEAD:
                raise TimeParseError(last_years)
            try:
                candidate = candidate.replace(year=year - 1)
            except ValueError:
                raise TimeParseError(last_years) from None
    elif relative_day is not None:
        # "today" and "yesterday" are the writer's days, even when the clock time is given in
        # another zone (`today 23:00 UTC` at 5 PM in Los Angeles, when UTC is already tomorrow).
        writers_today = now.astimezone(zone).date()
        candidate = datetime.combine(writers_today - timedelta(days=relative_day), clock)
        if _is_future(candidate, target_zone, now):
            raise TimeParseError(f"{bidi.quoted(text)} is in the future.")
    elif weekday is not None:
        days_back = (local_now.weekday() - weekday) % 7
        candidate = datetime.combine(local_now.date() - timedelta(days=days_back), clock)
        if _is_future(candidate, target_zone, now):
            candidate -= timedelta(days=7)
    else:
        candidate = datetime.combine(local_now.date(), clock)
        if _is_future(candidate, target_zone, now):
            candidate -= timedelta(days=1)
    if weekday is not None and candidate.weekday() != weekday:
        raise TimeParseError(
            f"{bidi.quoted(text)} says {_WEEKDAY_NAMES[weekday][0].capitalize()}, "
            f"but {candidate.day} {candidate:%B %Y} is a {candidate:%A}."
        )
    typed_names = [token for token in cleaned.split() if tzinfos.get(token) is zone]
    named = typed_names[-1] if typed_names else None
    time_of_day_alone = not has_date and relative_day is None and weekday is None
    moment = _localize(
        candidate,
        target_zone,
        text,
        named=named,
        latest_by=now + FUTURE_TOLERANCE if time_of_day_alone else None,
    ).astimezone(UTC)
    # The day was chosen by the earlier pass of the wall time; the second pass of an hour the
    # clocks repeat, named by its abbreviation (`1:50 AM PST` at 1:10 AM PST), can still be
    # ahead. Yesterday has no such second pass, so it is refused rather than moved.
    if moment > now.astimezone(UTC) + FUTURE_TOLERANCE:
        raise TimeParseError(f"{bidi.quoted(text)} is in the future.")
    return moment


def _refuse_ambiguous_date(text: str) -> None:
    """`03/11` is 11 March to some and 3 November to others: the writer must say which."""
    for match in _NUMERIC_DATE.finditer(text):
        first, second = int(match.group(1)), int(match.group(3))
        if first != second and 1 <= first <= 12 and 1 <= second <= 12:
            raise TimeParseError(
                f"{bidi.quoted(match.group())} could be {calendar.month_abbr[first]} {second} or "
                f"{calendar.month_abbr[second]} {first}; write the month as a word, as in "
                f"`{calendar.month_abbr[first]} {second}`, or the date as year-month-day."
            )


def _month_named(match: re.Match[str]) -> str:
    """A numeric date without a year that reads one way (`20/11`, `20.11.`), as `Nov 20`:
    dateutil reads such dates month first only, and refuses or misreads them day first."""
    first, second = int(match.group(1)), int(match.group(3))
    if len(match.group()) > len(match.group(1)) + 1 + len(match.group(3)):
        return match.group()  # with a year, dateutil reads either order
    month, day = (second, first) if first > 12 else (first, second)
    if not 1 <= month <= 12:
        return match.group()  # no reading at all: dateutil refuses it
    return f"{calendar.month_abbr[month]} {day}"


def _counted_back(text: str) -> timedelta | None:
    """How long ago `text` says (`10 min ago`, `now`), or None when it says no such thing."""
    if len(text) > 64 or _AGO.fullmatch(text) is None:
        return None
    if not text.lower().endswith("ago"):
        return timedelta(0)
    seconds, units = 0, set()
    for amount, unit in _AGO_PART.findall(text.removesuffix(text[-3:])):
        size = _AGO_UNITS.get(unit.lower())
        if size is None or size in units:  # `5 apples ago`, `5 min 3 min ago`
            return None
        units.add(size)
        seconds += (1 if amount.lower() in ("a", "an") else int(amount)) * size
    return timedelta(seconds=seconds)


def _count_clocks(text: str) -> int:
    """How many clock times `text` holds, not counting zone offsets (`+03:00`, `UTC-5`)."""
    for offset, keep in ((_UTC_OFFSET, ""), (_ISO_OFFSET, r"\1"), (_OTHER_OFFSET, "")):
        text = offset.sub(keep, text)
    return len(_CLOCK.findall(text))


def _offset_last(text: str) -> str:
    """`text` with an offset standing on its own (`-03:00 01:06`) moved to its end: dateutil
    reads one only after the clock time, and drops or misreads one before it."""
    words = text.split(" ")
    offsets = [word for word in words if _LONE_OFFSET.fullmatch(word)]
    return " ".join([word for word in words if word not in offsets] + offsets)


def _plain_offset(match: re.Match[str]) -> str:
    sign, hours, minutes = match.groups()
    return f"{sign}{int(hours):02d}:{minutes or '00'}"


def _parse(text: str, default: datetime, *, zone: ZoneInfo, tzinfos: dict[str, tzinfo]) -> datetime:
    unknown = [
        token
        for token in text.replace(",", " ").split()
        if _ZONE_ABBREVIATION.fullmatch(token)
        and token not in tzinfos
        and token.lower() not in _WORDS  # NOV, AM
    ]
    if unknown:
        raise TimeParseError(
            f"I don't know which zone {bidi.quoted(unknown[0])} is. Leave it out and the time "
            f"is read in yours ({zone.key}), or write an offset such as +03:00."
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


def _is_future(naive: datetime, zone: tzinfo, now: datetime) -> bool:
    """True when even the earliest moment the wall time `naive` can mean is still ahead.

    Both readings count: a time the clocks skip (spring forward) has no moment of its own,
    and taking the earlier reading keeps "2:30" typed at 3:10 AM that day as today's (and
    so refused) instead of quietly yesterday's.
    """
    earliest = min(naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    return earliest > now.astimezone(UTC) + FUTURE_TOLERANCE


def _localize(
    naive: datetime, zone: tzinfo, typed: str, *, named: str | None, latest_by: datetime | None
) -> datetime:
    """The wall time `naive` in `zone`: refused if skipped, the first if it happens twice.

    When the writer named the zone by the abbreviation of the second (`1:30 AM PST` as the
    clocks go back), that one is meant. With `latest_by` (a time of day alone), the second
    is meant when it has come by then: a time of day is its latest past occurrence.
    """
    aware = naive.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise TimeParseError(
            f"{bidi.quoted(typed)} does not exist on {naive.day} {naive:%B %Y} in "
            f"{_zone_name(zone)}: the clocks skipped that hour."
        )
    second = naive.replace(tzinfo=zone, fold=1)
    if second.utcoffset() == aware.utcoffset():
        return aware
    if named is not None:
        return second if second.tzname() == named else aware
    if latest_by is not None and second.astimezone(UTC) <= latest_by.astimezone(UTC):
        return second
    return aware


def _zone_name(zone: tzinfo) -> str:
    return zone.key if isinstance(zone, ZoneInfo) else str(zone)
