"""Postmortems: a plain context built from an incident, rendered by Jinja templates.

One `Environment` is built at start-up. HTML templates are autoescaped; Markdown ones are
not, so every typed text goes through the `md` filter. Templates receive only the frozen
dataclasses below, never an ORM object, and typed text is only ever template *data*.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from bot import bidi, incidents, timeline
from bot.incidents import whole_minute, zone_abbreviation
from bot.models import Incident


class Format(StrEnum):
    MARKDOWN = "md"
    HTML = "html"


TEMPLATE_NAMES = {Format.MARKDOWN: "postmortem.md.j2", Format.HTML: "postmortem.html.j2"}
# `{% include "builtin/postmortem.md.j2" %}` is the built-in template, whatever TEMPLATES_DIR holds.
BUILTIN_PREFIX = "builtin"


def builtin_templates_dir() -> Path:
    """The shipped templates: inside the installed package, or at the top of a checkout."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "templates", package_dir.parent / "templates"):
        if (candidate / TEMPLATE_NAMES[Format.MARKDOWN]).is_file():
            return candidate
    raise FileNotFoundError(f"the built-in templates are missing from {package_dir}")


def build_environment(templates_dir: Path | None = None) -> Environment:
    """The Jinja environment: the user's templates first (if any), then the built-in ones,
    which are also named `builtin/...` so that a template of the same name can include them."""
    builtin = FileSystemLoader(builtin_templates_dir())
    loaders: list[BaseLoader] = [builtin, PrefixLoader({BUILTIN_PREFIX: builtin})]
    if templates_dir is not None:
        loaders.insert(0, FileSystemLoader(templates_dir))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(
            enabled_extensions=("html", "htm", "html.j2", "htm.j2"), default_for_string=False
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_escape
    env.filters["md_item"] = markdown_item
    env.filters["md_line"] = markdown_line
    env.filters["br"] = html_lines
    env.filters["continues"] = continue_sentence
    env.filters["sentence"] = end_sentence
    return env


@dataclass(frozen=True)
class FileLink:
    """A file that came with a captured message; `url` only when it is a web link."""

    name: str
    url: str | None


@dataclass(frozen=True)
class Line:
    """One timeline entry as the reader sees it; captured messages carry author, link, files."""

    when: str
    text: str
    author: str | None = None
    link: str | None = None
    files: Sequence[FileLink] = ()


@dataclass(frozen=True)
class Moments:
    """Key moments and the times to reach them, counted from the impact's start."""

    detected: str | None
    mitigated: str | None
    time_to_detect: str | None
    time_to_mitigate: str | None
    time_to_resolve: str | None


@dataclass(frozen=True)
class Role:
    role: str
    name: str


@dataclass(frozen=True)
class Window:
    """When the impact began and ended, in the incident's zone."""

    phrase: str
    start: str
    end: str
    zone: str
    duration: str
    ongoing: bool
    spans_days: bool


@dataclass(frozen=True)
class PostmortemContext:
    reference: str
    title: str
    channel_id: str
    status: str
    timezone: str
    date: str
    window: Window
    impact: str | None
    cause: str | None
    resolution: str | None
    summary: str | None
    timeline: Sequence[Line]
    actions: Sequence[str]
    generated_on: str
    severity: str | None = None
    roles: Sequence[Role] = ()
    moments: Moments = Moments(None, None, None, None, None)


def build_context(session: Session, *, incident: Incident, now: datetime) -> PostmortemContext:
    """Read everything a postmortem shows about an incident into plain values.

    Typed text is as typed, but with the direction controls it opens closed where it ends
    (`bidi.contained`), so that no template can let it reorder what follows it.
    """
    shown = bidi.contained
    entries = incidents.timeline(session, incident=incident)
    zone = ZoneInfo(incident.timezone)
    start = min([incident.started_at, *(e.occurred_at for e in entries[:1])])
    end = incident.closed_at or now
    ongoing = incident.closed_at is None
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    days = {local_start.date(), local_end.date()} | {
        e.occurred_at.astimezone(zone).date() for e in entries
    }
    spans_days = len(days) > 1
    # Across New Year, or a year apart (a year typed wrong), a date needs its year.
    spans_years = len({day.year for day in days}) > 1
    zone_name = zone_abbreviation(local_start)

    lines = []
    previous_day: date | None = None
    for entry in entries:
        local = entry.occurred_at.astimezone(zone)
        show_date = spans_days and local.date() != previous_day
        lines.append(
            Line(
                when=_clock(local, zone_name, with_date=show_date, with_year=spans_years),
                text=shown(entry.text),
                author=shown(entry.author_name) if entry.author_name else None,
                link=_web_link(entry.permalink),
                files=[
                    FileLink(name=shown(f.name), url=_web_link(f.permalink))
                    for f in timeline.decode_files(entry.files)
                ],
            )
        )
        previous_day = local.date()

    def since_start(moment: datetime | None) -> str | None:
        return format_duration(whole_minute(moment) - whole_minute(start)) if moment else None

    def clock_of(moment: datetime | None) -> str | None:
        if moment is None:
            return None
        local = moment.astimezone(zone)
        return _clock(local, zone_name, with_date=spans_days, with_year=spans_years)

    moments = Moments(
        detected=clock_of(incident.detected_at),
        mitigated=clock_of(incident.mitigated_at),
        time_to_detect=since_start(incident.detected_at),
        time_to_mitigate=since_start(incident.mitigated_at),
        time_to_resolve=since_start(incident.closed_at),
    )
    roles = [
        Role(role=role, name=shown(holder.user_name))
        for role, holder in incidents.current_roles(session, incident=incident).items()
    ]

    return PostmortemContext(
        reference=incident.reference,
        title=shown(incident.title),
        channel_id=incident.channel_id,
        status="ongoing" if ongoing else "resolved",
        timezone=incident.timezone,
        date=_days(min(days), max(days)),
        window=Window(
            phrase=_window_phrase(local_start, local_end, zone_name, spans_days, ongoing),
            start=_clock(local_start, zone_name, with_date=spans_days, with_year=spans_years),
            end=_clock(local_end, zone_name, with_date=spans_days, with_year=spans_years),
            zone=zone_name,
            duration=format_duration(whole_minute(end) - whole_minute(start)),
            ongoing=ongoing,
            spans_days=spans_days,
        ),
        impact=shown(incident.impact) if incident.impact else None,
        cause=shown(incident.cause) if incident.cause else None,
        resolution=shown(incident.resolution) if incident.resolution else None,
        summary=shown(incident.summary) if incident.summary else None,
        timeline=lines,
        actions=[shown(action) for action in incidents.actions(session, incident=incident)],
        generated_on=now.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        severity=shown(incident.severity) if incident.severity else None,
        roles=roles,
        moments=moments,
    )


def _web_link(url: str | None) -> str | None:
    """A link safe to put in a template: http(s) only, with nothing that ends a link early."""
    if not url or not url.startswith(("https://", "http://")):
        return None
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def render(env: Environment, context: PostmortemContext, fmt: Format = Format.MARKDOWN) -> str:
    return env.get_template(TEMPLATE_NAMES[fmt]).render(pm=context)


class TemplateCheckError(ValueError):
    """A template that cannot render a postmortem: its file, its line and the error."""


def check_templates(env: Environment) -> None:
    """Render every format with a sample that fills every field and with one of an open
    incident where nothing was recorded, so that a template that cannot render (bad syntax,
    a name `pm` does not have, in either branch of an `if`) is found before a close."""
    samples = {
        "a sample with every field filled": sample_context(),
        "a sample of an open incident with nothing recorded": empty_sample_context(),
    }
    for fmt in Format:
        for sample_name, sample in samples.items():
            try:
                rendered = render(env, sample, fmt)
            except Exception as error:
                name, line = _where(env, error, fmt)
                at = f", line {line}" if line is not None else ""
                raise TemplateCheckError(
                    f"{name}{at}: {_explained(error)} (while rendering {sample_name})"
                ) from None
            if not rendered.strip():
                name = env.get_template(TEMPLATE_NAMES[fmt]).filename or TEMPLATE_NAMES[fmt]
                raise TemplateCheckError(
                    f"{name}: renders an empty postmortem ({sample_name}); the close would "
                    "upload an empty file. Give it text outside any `if`, such as the title."
                )


def failure(env: Environment, error: Exception, fmt: Format) -> str:
    """A template's failure to render `fmt`, for people: its file, its line, and why."""
    name, line = _where(env, error, fmt)
    at = f" at line {line}" if line is not None else ""
    return f"{name} failed{at}: {_explained(error)}"


def _explained(error: Exception) -> str:
    """Jinja's message, with what to do where it says too little."""
    if isinstance(error, TemplateNotFound):
        return (
            f"there is no template {error.name!r} in TEMPLATES_DIR nor among the built-in "
            f"ones (those are {BUILTIN_PREFIX}/{TEMPLATE_NAMES[Format.MARKDOWN]} and "
            f"{BUILTIN_PREFIX}/{TEMPLATE_NAMES[Format.HTML]})"
        )
    if isinstance(error, UnicodeDecodeError):
        return (
            f"the file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        )
    if isinstance(error, RecursionError):
        return (
            "the template includes or extends itself; a template in TEMPLATES_DIR has the "
            f"built-in one's name, so to use the built-in one name it {BUILTIN_PREFIX}/..."
        )
    return str(error)


def _where(env: Environment, error: Exception, fmt: Format) -> tuple[str, int | None]:
    """The template file and line an error of rendering `fmt` comes from."""
    name = getattr(error, "filename", None)
    if name is not None:
        return name, getattr(error, "lineno", None)
    # A runtime error: Jinja puts the template's lines in the traceback.
    frames = traceback.extract_tb(error.__traceback__)
    where = [(f.filename, f.lineno) for f in frames if f.filename.endswith(".j2")]
    if where:
        return where[-1]
    # None of it ran (the file could not be read): the file the template is loaded from.
    return _source_file(env, TEMPLATE_NAMES[fmt]), None


def _source_file(env: Environment, name: str) -> str:
    """The file a template `name` is loaded from: the first of the loaders' folders with it."""
    loader = env.loader
    for each in loader.loaders if isinstance(loader, ChoiceLoader) else [loader]:
        if isinstance(each, FileSystemLoader):
            for folder in each.searchpath:
                if (Path(folder) / name).is_file():
                    return str(Path(folder) / name)
    return name


def sample_context() -> PostmortemContext:
    """A postmortem with every field filled in, to try templates on."""
    return PostmortemContext(
        reference="INC-1",
        title="Checkout is failing",
        channel_id="C0SAMPLE01",
        status="resolved",
        timezone="UTC",
        date="Friday 20 November 2026",
        window=Window(
            phrase="From 1:06 AM to 2:46 AM UTC",
            start="1:06 AM",
            end="2:46 AM",
            zone="UTC",
            duration="1 hour 40 minutes",
            ongoing=False,
            spans_days=False,
        ),
        impact="Requests to checkout returned 503 errors",
        cause="A deploy exhausted the connection pool",
        resolution="Rolled the deploy back",
        summary="Checkout was down for 1 hour 40 minutes",
        timeline=[
            Line(
                when="1:06 AM",
                text="Alert: 503s on checkout",
                author="ann",
                link="https://example.slack.com/archives/C0SAMPLE01/p1",
                files=[FileLink(name="graph.png", url="https://example.com/g.png")],
            ),
            Line(when="2:46 AM", text="Resolved"),
        ],
        actions=["Alert on the pool's size"],
        generated_on="2026-11-20 03:00 UTC",
        severity="SEV1",
        roles=[Role(role="commander", name="ann")],
        moments=Moments(
            detected="1:10 AM",
            mitigated="2:30 AM",
            time_to_detect="4 minutes",
            time_to_mitigate="1 hour 24 minutes",
            time_to_resolve="1 hour 40 minutes",
        ),
    )


def empty_sample_context() -> PostmortemContext:
    """An open incident where nothing was recorded: every optional field empty."""
    full = sample_context()
    return replace(
        full,
        status="ongoing",
        window=replace(
            full.window,
            phrase="Since 1:06 AM UTC",
            end="1:36 AM",
            duration="30 minutes",
            ongoing=True,
        ),
        impact=None,
        cause=None,
        resolution=None,
        summary=None,
        timeline=[],
        actions=[],
        generated_on="2026-11-20 01:36 UTC",
        severity=None,
        roles=(),
        moments=Moments(None, None, None, None, None),
    )


def format_duration(span: timedelta) -> str:
    """`1 hour 40 minutes`, `2 days 3 hours`, `less than a minute`."""
    minutes = max(0, int(span.total_seconds() // 60))
    if minutes == 0:
        return "less than a minute"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [
        f"{n} {unit}{'' if n == 1 else 's'}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if n
    ]
    return " ".join(parts)


def _time_of_day(local: datetime) -> str:
    return f"{local.hour % 12 or 12}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


def _clock(local: datetime, zone_name: str, *, with_date: bool, with_year: bool) -> str:
    text = _time_of_day(local)
    if with_date:
        year = f" {local.year}" if with_year else ""
        text = f"{local.day} {local:%b}{year} {text}"
    own_zone = zone_abbreviation(local)
    if own_zone != zone_name:  # daylight saving changed during the incident
        text = f"{text} {own_zone}"
    return text


def _long_date(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def _days(first: date, last: date) -> str:
    """`Friday 20 November 2026`, or the span: `Friday 20 – Monday 23 November 2026`."""
    if first == last:
        return _long_date(first)
    if first.year != last.year:
        return f"{_long_date(first)} – {_long_date(last)}"
    if first.month != last.month:
        return f"{first:%A} {first.day} {first:%B} – {_long_date(last)}"
    return f"{first:%A} {first.day} – {_long_date(last)}"


def _window_phrase(
    start: datetime, end: datetime, zone_name: str, spans_days: bool, ongoing: bool
) -> str:
    def point(moment: datetime, *, named: bool) -> str:
        text = _time_of_day(moment)
        if named:
            text = f"{text} {zone_abbreviation(moment)}"
        return f"{text} on {moment.day} {moment:%B %Y}" if spans_days else text

    if ongoing:
        return f"Since {point(start, named=False)} {zone_name}"
    if zone_abbreviation(start) != zone_abbreviation(end):
        # Daylight saving began or ended in between: each end is named by its own zone.
        return f"From {point(start, named=True)} to {point(end, named=True)}"
    return f"From {point(start, named=False)} to {point(end, named=False)} {zone_name}"


# --- filters -------------------------------------------------------------------------------

# Markdown's own line endings; str.splitlines() would also split on \x1c, \x85, \u2028 and
# others that Markdown shows as characters.
_LINE_END = re.compile(r"\r\n|\r|\n")
# Backslash-escaped anywhere: code spans, emphasis (* always; _ see below), links and images,
# autolinks and HTML, entity references; and GitHub's extensions, which most viewers of a .md
# file have: ~~strikethrough~~ (and ~~~ fences), | table cells | and $math$ ($PATH and $HOME
# would be one formula).
_MD_INLINE = re.compile(r"[\\`*\[\]<>~|$]|&(?=#?\w+;)|_+")
# What would start a block at the beginning of a line: a heading, a quote, a list item, a
# thematic break or setext underline. (A table needs an unescaped |, and there is none.)
_MD_BLOCK_START = re.compile(r"^([#+=>-])")
_MD_ORDERED = re.compile(r"^(\d+)([.)])")
_TRAILING_HASHES = re.compile(r"(?<!\\)#+$")


def _lines(text: str) -> list[str]:
    return _LINE_END.split(text)


def _escape_inline(line: str) -> str:
    def escape_one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token[0] != "_":
            return "\\" + token
        # A run of underscores between two letters or digits (snake_case) can neither open
        # nor close emphasis, so it reads better left alone; any other is escaped.
        before = line[match.start() - 1 : match.start()]
        after = line[match.end() : match.end() + 1]
        if before.isalnum() and after.isalnum():
            return token
        return "\\_" * len(token)

    return _MD_INLINE.sub(escape_one, line)


def markdown_escape(text: str) -> str:
    """Escape typed text so that Markdown shows it as typed; each line break a hard break.

    Markdown drops spaces and tabs at the ends of lines and ends a paragraph at a blank
    line, so those are left out rather than let a blank line end a list item early.
    """
    lines = []
    for line in _lines(text):
        line = line.strip(" \t")
        if not line:
            continue
        line = _escape_inline(line)
        line = _MD_BLOCK_START.sub(r"\\\1", line)
        line = _MD_ORDERED.sub(r"\1\\\2", line)
        lines.append(line)
    return "  \n".join(lines)


def markdown_item(text: str) -> str:
    """Escape text for a list item: continuation lines are indented to stay in the item."""
    return markdown_escape(text).replace("\n", "\n  ")


def markdown_line(text: str) -> str:
    """Escape text for one line of its own, such as a heading: its lines joined by spaces."""
    line = markdown_escape(" ".join(filter(None, (part.strip(" \t") for part in _lines(text)))))
    # A heading's trailing run of # would be taken for its optional closing sequence.
    return _TRAILING_HASHES.sub(lambda match: "\\#" * len(match.group(0)), line)


def html_lines(text: str) -> Markup:
    """Escape text for HTML, keeping its line breaks."""
    return Markup("<br>\n").join(escape(line) for line in _lines(text))


# Words that start a sentence only because they are common, so they can be lowercased when
# the text continues a sentence ("From 1:06 AM to 2:46 AM EAT, requests ..."). Anything
# else may be a name ("Stripe", "DNS") and keeps its capital.
_COMMON_OPENERS = frozenset(
    "a an the all any some most many every each no our their its this that these those about "
    "around roughly approximately nearly almost half one two three users customers requests "
    "traffic clients people visitors there it we they".split()
)


def continue_sentence(text: str) -> str:
    """Typed text continuing a sentence: a common first word lowercased, a final stop."""
    text = text.strip()
    text = text if _has_stop(text) else text + "."
    first, _, rest = text.partition(" ")
    if first.lower() in _COMMON_OPENERS and first[:1].isupper() and first[1:] == first[1:].lower():
        text = first.lower() + (" " + rest if rest else "")
    return text


def end_sentence(text: str) -> str:
    """Typed text as a sentence of its own: a common first word capitalised, a final stop."""
    text = text.strip()
    first, _, rest = text.partition(" ")
    if first in _COMMON_OPENERS:
        text = first.capitalize() + (" " + rest if rest else "")
    return text if _has_stop(text) else text + "."


def _has_stop(text: str) -> bool:
    # Pops that close the text's direction (`bidi.contained`) come after its own stop.
    shown = text.rstrip(bidi.POP_EMBEDDING + bidi.POP_ISOLATE)
    return not shown or shown[-1] in ".!?…)\"'”’"
