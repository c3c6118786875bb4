"""Postmortems rendered from incidents recorded by the real use cases, on SQLite and PostgreSQL.

The Markdown is read back with a CommonMark parser (markdown-it-py) and the HTML with the
standard library's parser, so the tests check what a reader would see, not template source.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2 import Environment
from markdown_it import MarkdownIt
from markdown_it.token import Token
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot import bidi, db, incidents, postmortem
from bot.config import Settings
from bot.incidents import has_visible_text
from bot.models import Field, Incident
from tests.conftest import ALICE, BOB, CHANNEL, TEAM, Bot, Database
from tests.slack.test_capture import reaction

# Copies of ../shared/reference-postmortems, so that a clone on its own can run the tests.
REFERENCES = Path(__file__).resolve().parent / "reference-postmortems"
HUM = REFERENCES / "hum-ddos-outage.md"
PAYMENT = REFERENCES / "payment-site-outage.html"

# When the postmortems are rendered: after every incident below.
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

# CommonMark with GitHub's extensions that typed text could set off (GitHub, GitLab and most
# viewers of a .md file have them): ~~strikethrough~~ and | tables |.
COMMONMARK = MarkdownIt("commonmark").enable(["strikethrough", "table"])


def at(zone: str, wall_time: str) -> datetime:
    """A wall time in a zone ("2026-11-20 01:06") as aware UTC (the first, if it is twice)."""
    return datetime.fromisoformat(wall_time).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


# --- reading what was rendered ----------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A heading, paragraph or list item, with the text a reader sees in it."""

    kind: str  # "h1", "h2", "p", "li", "title"; anything else is a block typed text must not make
    text: str


def _inline_text(inline: Token) -> str:
    """The text of an inline token; anything but plain text and hard breaks shows as <type>."""
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "text_special"):
            parts.append(child.content)
        elif child.type == "hardbreak":
            parts.append("\n")
        else:  # emphasis, a link, code, raw HTML, a soft break...
            parts.append(f"<{child.type}>")
    return "".join(parts)


def markdown_blocks(markdown: str) -> list[Block]:
    """The top-level blocks of a Markdown document as CommonMark reads them."""
    tokens = COMMONMARK.parse(markdown)
    blocks: list[Block] = []
    depth = 0  # how deep in list items
    item: list[str] = []
    for index, token in enumerate(tokens):
        if token.type == "list_item_open":
            depth += 1
            if depth == 1:
                item = []
        elif token.type == "list_item_close":
            depth -= 1
            if depth == 0:
                blocks.append(Block("li", "\n\n".join(item)))  # two paragraphs: visibly wrong
        elif token.type == "inline":
            opener = tokens[index - 1]
            text = _inline_text(token)
            if depth:
                item.append(text if opener.type == "paragraph_open" else f"<{opener.type}>{text}")
            else:
                blocks.append(Block(opener.tag if opener.type == "heading_open" else "p", text))
        elif token.type in ("bullet_list_open", "ordered_list_open") and depth:
            item.append(f"<{token.type}>")  # a list nested inside an item
        elif token.nesting != -1 and token.type not in (
            "paragraph_open",
            "heading_open",
            "bullet_list_open",
            "ordered_list_open",
        ):
            if depth:
                item.append(f"<{token.type}>")
            else:
                blocks.append(Block(token.type, token.content))
    return blocks


class _HtmlBlocks(HTMLParser):
    """Headings, paragraphs, list items and the title of a page; <br> is a line break."""

    BLOCKS = frozenset({"title", "h1", "h2", "p", "li"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.tags: list[str] = []
        self._open: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, _attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "footer":
            self.blocks.append(Block("footer", ""))
        elif tag == "br" and self._open:
            self._open[-1][1].append("\n")
        elif tag in self.BLOCKS:
            self._open.append((tag, []))
        elif self._open:
            self._open[-1][1].append(f"<{tag}>")  # an element inside typed text

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            kind, parts = self._open.pop()
            self.blocks.append(Block(kind, "".join(parts)))

    def handle_data(self, data: str) -> None:
        if self._open:
            # Line endings in the source are layout (after a <br>); typed ones are <br>.
            self._open[-1][1].append(_flat(data))


def _flat(text: str) -> str:
    return re.sub(r"\r\n|\r|\n", "", text)


def html_blocks(page: str) -> _HtmlBlocks:
    parser = _HtmlBlocks()
    parser.feed(page)
    parser.close()
    return parser


def sections(blocks: list[Block]) -> dict[str, list[Block]]:
    """The blocks under each h2, by the h2's text, up to the next h2 or the closing rule."""
    found: dict[str, list[Block]] = {}
    current: list[Block] | None = None
    for block in blocks:
        if block.kind == "h2":
            current = found.setdefault(block.text, [])
        elif block.kind in ("hr", "footer"):
            current = None
        elif current is not None:
            current.append(block)
    return found


def headings(blocks: list[Block]) -> list[tuple[str, str]]:
    return [(block.kind, block.text) for block in blocks if block.kind in ("h1", "h2")]


def shown_by_markdown(text: str) -> str:
    """`text` as any Markdown renderer shows a paragraph of it, whatever the escaping.

    Markdown itself (CommonMark, "Paragraphs" and "Hard line breaks") treats `\\r\\n`, `\\r`
    and `\\n` alike as line endings; drops the spaces and tabs at the start and end of each
    line; and ends a paragraph at a line of nothing but spaces and tabs. So: lines split at
    those endings, stripped of spaces and tabs only (not of other Unicode spaces, which
    Markdown keeps), and empty lines dropped. Nothing else is normalised.
    """
    lines = (line.strip(" \t") for line in re.split(r"\r\n|\r|\n", text))
    return "\n".join(line for line in lines if line)


def html_text(text: str) -> str:
    """`text` as the HTML's text content holds it: line endings become <br>, nothing else."""
    return "\n".join(re.split(r"\r\n|\r|\n", text))


# --- recording incidents with the real use cases ----------------------------------------


@dataclass
class Rendered:
    context: postmortem.PostmortemContext
    markdown: str
    html: str

    @cached_property
    def md(self) -> list[Block]:
        return markdown_blocks(self.markdown)

    @cached_property
    def page(self) -> _HtmlBlocks:
        return html_blocks(self.html)

    def md_section(self, heading: str) -> list[Block]:
        return sections(self.md)[heading]

    def html_section(self, heading: str) -> list[Block]:
        return sections(self.page.blocks)[heading]

    def md_summary(self) -> str:
        [paragraph] = self.md_section("Issue summary")
        assert paragraph.kind == "p"
        return paragraph.text

    def html_summary(self) -> str:
        [paragraph] = self.html_section("Issue Summary:")
        assert paragraph.kind == "p"
        return paragraph.text

    def md_timeline(self) -> list[str]:
        return [block.text for block in self.md_section("Timeline") if block.kind == "li"]

    def html_timeline(self) -> list[str]:
        return [block.text for block in self.html_section("Timeline:") if block.kind == "li"]


@dataclass
class Story:
    """An incident told through the use cases in bot.incidents, one session throughout."""

    session: Session
    sessions: sessionmaker[Session]
    incident: Incident
    env: Environment = field(default_factory=postmortem.build_environment)

    def note(self, when: datetime, text: str, *, author: str = ALICE) -> Story:
        incidents.add_entry(
            self.session,
            incident=self.incident,
            text=text,
            occurred_at=when,
            author_id=author,
            now=when,
        )
        self.session.flush()
        return self

    def set(self, which: Field, value: str) -> Story:
        incidents.set_field(
            self.session, incident=self.incident, field=which, value=value, user_id=ALICE, now=NOW
        )
        return self

    def action(self, text: str) -> Story:
        incidents.add_action(self.session, incident=self.incident, text=text, user_id=BOB, now=NOW)
        self.session.flush()
        return self

    def close(self, when: datetime, text: str | None = None) -> Story:
        incidents.close_incident(
            self.session, incident=self.incident, closed_at=when, user_id=ALICE, text=text, now=when
        )
        return self

    def render(self, now: datetime = NOW) -> Rendered:
        """Commit, then read the incident back in a new session and render both formats."""
        self.session.commit()
        with self.sessions() as session:
            incident = session.get(Incident, self.incident.id)
            assert incident is not None
            context = postmortem.build_context(session, incident=incident, now=now)
        # The session is closed: the context must stand on its own.
        return Rendered(
            context=context,
            markdown=postmortem.render(self.env, context),
            html=postmortem.render(self.env, context, postmortem.Format.HTML),
        )


class Stories:
    def __init__(self, database: Database) -> None:
        self.sessions = db.make_session_factory(database.engine)
        self.opened: list[Session] = []

    def start(self, title: str, *, zone: str, when: datetime, channel: str = CHANNEL) -> Story:
        session = self.sessions()
        self.opened.append(session)
        incident = incidents.start_incident(
            session,
            team_id=TEAM,
            channel_id=channel,
            user_id=ALICE,
            title=title,
            started_at=when,
            timezone=zone,
            now=when,
        )
        return Story(session=session, sessions=self.sessions, incident=incident)


@pytest.fixture
def stories(database: Database) -> Iterator[Stories]:
    made = Stories(database)
    yield made
    for session in made.opened:  # before the database is dropped
        session.close()


# --- the two reference postmortems ------------------------------------------------------


def reference_bullets(markdown: str, heading: str) -> list[str]:
    """The `* ` lines of a section of the Markdown reference, as its author wrote them."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [line[2:].strip() for line in section.splitlines() if line.startswith("* ")]


def reference_html_dashes(page: str, heading: str) -> list[str]:
    """The `- ` lines of a section of the HTML reference."""
    section = page.split(f"<h2>{heading}</h2>", 1)[1].split("<h2>", 1)[0]
    return [line[2:].strip() for line in section.splitlines() if line.startswith("- ")]


def _split_clock(line: str) -> tuple[str, str]:
    clock, _, text = line.partition(" - ")
    return clock, text


HUM_DAY = "2026-11-20"
HUM_ZONE = "Africa/Nairobi"


def tell_hum(stories: Stories) -> Story:
    """The Hum outage as its timeline and measures say, recorded through the use cases."""
    reference = HUM.read_text(encoding="utf-8")
    timeline = [_split_clock(line) for line in reference_bullets(reference, "Timeline")]
    times = [
        datetime.strptime(f"{HUM_DAY} {clock}", "%Y-%m-%d %I:%M %p")
        .replace(tzinfo=ZoneInfo(HUM_ZONE))
        .astimezone(UTC)
        for clock, _ in timeline
    ]
    story = stories.start("Hum DDoS outage", zone=HUM_ZONE, when=times[0])
    for when, (_, text) in zip(times[:-1], timeline[:-1], strict=True):
        story.note(when, text)
    story.set(
        Field.IMPACT,
        "Requests to the company's servers resulted in 503 error response messages",
    )
    story.set(Field.CAUSE, "a DDoS attack that overloaded the servers' RAM")
    story.set(Field.RESOLUTION, "IP-based ACLs blocked the traffic from the attack's source")
    for measure in reference_bullets(reference, "Corrective and preventative measures"):
        story.action(measure)
    return story.close(times[-1], timeline[-1][1])


def test_the_references_are_where_the_tests_expect_them() -> None:
    assert HUM.is_file() and PAYMENT.is_file()


def test_markdown_has_the_hum_reference_sections_in_the_same_order(stories: Stories) -> None:
    reference = headings(markdown_blocks(HUM.read_text(encoding="utf-8")))
    ours = headings(tell_hum(stories).render().md)

    assert reference[0] == ("h1", "Postmortem")
    assert ours[0] == ("h1", "Postmortem: Hum DDoS outage")
    assert [kind for kind, _ in ours].count("h1") == 1
    assert ours[1:] == reference[1:]
    assert [text for _, text in ours[1:]] == [
        "Issue summary",
        "Timeline",
        "Root cause and resolution",
        "Corrective and preventative measures",
    ]


def test_markdown_timeline_and_measures_are_the_hum_references(stories: Stories) -> None:
    reference = HUM.read_text(encoding="utf-8")
    rendered = tell_hum(stories).render()

    assert rendered.md_timeline() == reference_bullets(reference, "Timeline")
    assert [b.text for b in rendered.md_section("Corrective and preventative measures")] == (
        reference_bullets(reference, "Corrective and preventative measures")
    )
    assert all(
        block.kind == "li"
        for name in ("Timeline", "Corrective and preventative measures")
        for block in rendered.md_section(name)
    )
    # The Markdown source itself has the reference's `* 1:06 AM - Outage begins` lines.
    assert "\n* 1:06 AM - Outage begins\n" in rendered.markdown


def test_markdown_issue_summary_reads_like_the_references(stories: Stories) -> None:
    rendered = tell_hum(stories).render()

    summary = rendered.md_summary()
    assert summary.startswith("From 1:06 AM to 2:46 AM EAT, ")
    assert "From 1:06 AM to 2:46 AM EAT, " in HUM.read_text(encoding="utf-8")
    assert summary == (
        "From 1:06 AM to 2:46 AM EAT, requests to the company's servers resulted in 503 error "
        "response messages. The outage lasted 1 hour 40 minutes. The root cause of this "
        "outage was a DDoS attack that overloaded the servers' RAM."
    )
    assert rendered.context.window.duration == "1 hour 40 minutes"
    assert [b.text for b in rendered.md_section("Root cause and resolution")] == [
        "A DDoS attack that overloaded the servers' RAM.",
        "IP-based ACLs blocked the traffic from the attack's source.",
    ]


def test_the_zone_is_named_once_and_timeline_lines_carry_no_zone(stories: Stories) -> None:
    rendered = tell_hum(stories).render()

    assert rendered.md_summary().count("EAT") == 1
    assert rendered.html_summary().count("EAT") == 1
    assert not any("EAT" in line for line in rendered.md_timeline())
    assert not any("EAT" in line for line in rendered.html_timeline())


PAYMENT_DAY = "2022-12-25"
PAYMENT_ZONE = "Africa/Lagos"


def tell_payment(stories: Stories) -> Story:
    page = PAYMENT.read_text(encoding="utf-8")
    timeline = [_split_clock(line) for line in reference_html_dashes(page, "Timeline:")]
    times = [
        datetime.strptime(f"{PAYMENT_DAY} {clock}", "%Y-%m-%d %I:%M %p")
        .replace(tzinfo=ZoneInfo(PAYMENT_ZONE))
        .astimezone(UTC)
        for clock, _ in timeline
    ]
    story = stories.start("Payment website experience outage", zone=PAYMENT_ZONE, when=times[0])
    for when, (_, text) in zip(times, timeline, strict=True):
        story.note(when, text)
    story.set(Field.IMPACT, "All users could not reach the payment site")
    story.set(Field.CAUSE, "a distributed denial of service attack by a botnet")
    story.set(Field.RESOLUTION, "Traffic was routed through a DDoS mitigation service")
    story.set(Field.SUMMARY, "A DDoS attack took the site offline; mitigation brought it back")
    for measure in reference_html_dashes(page, "Corrective and Preventative Measures:"):
        story.action(measure)
    return story.close(times[-1])


def test_html_has_the_payment_reference_sections_in_the_same_order(stories: Stories) -> None:
    reference = headings(html_blocks(PAYMENT.read_text(encoding="utf-8")).blocks)
    ours = headings(tell_payment(stories).render().page.blocks)

    assert reference[0] == ("h1", "Postmortem : Payment website experience outage")
    assert ours[0] == ("h1", "Postmortem : Payment website experience outage")
    assert ours[1:] == reference[1:]
    assert [text for _, text in ours[1:]] == [
        "Issue Summary:",
        "Root Cause:",
        "Timeline:",
        "Resolution:",
        "Corrective and Preventative Measures:",
        "In summary",
    ]


def test_html_timeline_and_measures_are_the_payment_references(stories: Stories) -> None:
    page = PAYMENT.read_text(encoding="utf-8")
    rendered = tell_payment(stories).render()

    def clock_and_text(line: str) -> tuple[str, str]:
        clock, text = _split_clock(line)
        return clock.lstrip("0"), text  # the reference writes "05:30 AM"; we write "5:30 AM"

    assert [clock_and_text(line) for line in rendered.html_timeline()] == [
        clock_and_text(line) for line in reference_html_dashes(page, "Timeline:")
    ]
    measures = rendered.html_section("Corrective and Preventative Measures:")
    assert [block.text for block in measures] == reference_html_dashes(
        page, "Corrective and Preventative Measures:"
    )
    assert rendered.html_summary().startswith("From 12:02 AM to 5:30 AM WAT, ")
    assert rendered.context.window.duration == "5 hours 28 minutes"
    assert [b.text for b in rendered.html_section("In summary")] == [
        "A DDoS attack took the site offline; mitigation brought it back."
    ]


def test_html_issue_summary_opens_with_the_window_and_gives_the_duration(
    stories: Stories,
) -> None:
    rendered = tell_hum(stories).render()

    assert rendered.html_summary() == (
        "From 1:06 AM to 2:46 AM EAT, requests to the company's servers resulted in 503 error "
        "response messages. The outage lasted 1 hour 40 minutes."
    )
    assert [b.text for b in rendered.html_section("Root Cause:")] == [
        "A DDoS attack that overloaded the servers' RAM."
    ]
    assert rendered.html_timeline()[0] == "1:06 AM - Outage begins"


# --- the window: midnight, daylight saving, zones, back-dating ---------------------------


def test_a_window_across_midnight_shows_dates(stories: Stories) -> None:
    zone = "Africa/Nairobi"
    story = stories.start("Night outage", zone=zone, when=at(zone, "2026-11-19 23:30"))
    story.note(at(zone, "2026-11-19 23:30"), "Alerts fire")
    story.note(at(zone, "2026-11-19 23:50"), "Failover started")
    story.note(at(zone, "2026-11-20 00:10"), "Failover done")
    story.note(at(zone, "2026-11-20 00:40"), "Traffic drained")
    rendered = story.close(at(zone, "2026-11-20 01:10"), "Recovered").render()

    expected_summary = "From 11:30 PM on 19 November 2026 to 1:10 AM on 20 November 2026 EAT, "
    assert rendered.md_summary().startswith(expected_summary)
    assert rendered.html_summary().startswith(expected_summary)
    expected_timeline = [
        "19 Nov 11:30 PM - Alerts fire",
        "11:50 PM - Failover started",
        "20 Nov 12:10 AM - Failover done",  # the day changes here
        "12:40 AM - Traffic drained",
        "1:10 AM - Recovered",
    ]
    assert rendered.md_timeline() == expected_timeline
    assert rendered.html_timeline() == expected_timeline
    assert rendered.context.window.duration == "1 hour 40 minutes"


def test_a_timeline_across_years_dates_its_entries_with_the_year(stories: Stories) -> None:
    # A year typed wrong (2025 for 2026) makes the window a year long; the timeline must
    # show why, not two entries both at "20 Nov 1:10 AM".
    zone = "Africa/Nairobi"
    story = stories.start("Year typo", zone=zone, when=at(zone, "2026-11-20 01:00"))
    story.note(at(zone, "2025-11-20 01:10"), "Alerts fire")
    story.note(at(zone, "2026-11-20 01:10"), "Failover done")
    rendered = story.close(at(zone, "2026-11-20 01:20"), "Recovered").render()

    expected = [
        "20 Nov 2025 1:10 AM - Alerts fire",
        "20 Nov 2026 1:10 AM - Failover done",
        "1:20 AM - Recovered",
    ]
    assert rendered.md_timeline() == expected
    assert rendered.html_timeline() == expected
    assert rendered.md_summary().startswith(
        "From 1:10 AM on 20 November 2025 to 1:20 AM on 20 November 2026 EAT, "
    )
    assert rendered.context.window.duration == "365 days 10 minutes"


def test_a_window_across_new_year_dates_its_entries_with_the_year(stories: Stories) -> None:
    zone = "Pacific/Kiritimati"  # UTC+14, the first to see the new year
    story = stories.start("New Year", zone=zone, when=at(zone, "2026-12-31 23:30"))
    story.note(at(zone, "2026-12-31 23:50"), "Traffic spike")
    rendered = story.close(at(zone, "2027-01-01 00:10"), "Recovered").render()

    assert rendered.md_timeline() == [
        "31 Dec 2026 11:50 PM - Traffic spike",
        "1 Jan 2027 12:10 AM - Recovered",
    ]
    assert rendered.context.window.start == "31 Dec 2026 11:30 PM"
    assert rendered.context.window.end == "1 Jan 2027 12:10 AM"


def test_a_window_within_one_day_shows_no_dates(stories: Stories) -> None:
    rendered = tell_hum(stories).render()

    assert " on " not in rendered.md_summary().split(",")[0]
    assert not any(re.match(r"\d+ [A-Z][a-z]{2} ", line) for line in rendered.md_timeline())


def test_a_window_across_the_end_of_daylight_saving_names_both_zones(stories: Stories) -> None:
    # Los Angeles, 1 November 2026: 1:00-1:59 AM happens twice, first PDT (UTC-7), then PST.
    zone = "America/Los_Angeles"
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)  # 1:00 AM PDT
    story = stories.start("Clock change outage", zone=zone, when=start)
    story.note(start, "Errors begin")
    story.note(datetime(2026, 11, 1, 8, 40, tzinfo=UTC), "Rollback started")  # 1:40 AM PDT
    rendered = story.close(datetime(2026, 11, 1, 9, 30, tzinfo=UTC), "Recovered").render()

    summary = rendered.md_summary()
    assert summary.startswith("From 1:00 AM PDT to 1:30 AM PST, ")
    assert rendered.html_summary().startswith("From 1:00 AM PDT to 1:30 AM PST, ")
    assert "The outage lasted 1 hour 30 minutes." in summary  # elapsed, not wall-clock
    assert rendered.md_timeline() == [
        "1:00 AM - Errors begin",
        "1:40 AM - Rollback started",
        "1:30 AM PST - Recovered",  # after 1:40 AM PDT: the zone says why
    ]


def test_a_window_across_the_start_of_daylight_saving_and_midnight(stories: Stories) -> None:
    # London, 29 March 2026: 1:00 AM GMT becomes 2:00 AM BST.
    zone = "Europe/London"
    start = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # 11:30 PM GMT
    story = stories.start("Spring outage", zone=zone, when=start)
    rendered = story.close(datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "Recovered").render()

    assert rendered.md_summary().startswith(
        "From 11:30 PM GMT on 28 March 2026 to 2:30 AM BST on 29 March 2026, "
    )
    assert "The outage lasted 2 hours." in rendered.md_summary()
    assert rendered.md_timeline() == ["29 Mar 2:30 AM BST - Recovered"]


@pytest.mark.parametrize(
    ("zone", "name", "start_clock", "end_clock"),
    [
        ("America/Sao_Paulo", "UTC-03", "5:30 PM", "6:10 PM"),
        ("Asia/Kathmandu", "UTC+0545", "2:15 AM", "2:55 AM"),
    ],
)
def test_a_zone_without_a_letter_abbreviation_is_named_as_an_offset_from_utc(
    stories: Stories, zone: str, name: str, start_clock: str, end_clock: str
) -> None:
    story = stories.start("Outage", zone=zone, when=datetime(2026, 11, 19, 20, 30, tzinfo=UTC))
    rendered = story.close(datetime(2026, 11, 19, 21, 10, tzinfo=UTC)).render()

    opening = f"From {start_clock} to {end_clock} {name}, "
    assert rendered.md_summary().startswith(opening)
    assert rendered.html_summary().startswith(opening)
    assert f"({name})" in rendered.markdown  # the footer
    assert rendered.context.window.zone == name


def test_an_entry_back_dated_before_the_start_widens_the_window(stories: Stories) -> None:
    zone = "Africa/Nairobi"
    story = stories.start("Late start", zone=zone, when=at(zone, "2026-11-20 01:30"))
    story.note(at(zone, "2026-11-20 01:40"), "Paged the on-call")
    story.note(at(zone, "2026-11-20 01:06"), "Errors began (seen later in the logs)")
    rendered = story.close(at(zone, "2026-11-20 02:46")).render()

    assert rendered.md_summary().startswith("From 1:06 AM to 2:46 AM EAT, ")
    assert rendered.context.window.duration == "1 hour 40 minutes"
    assert rendered.md_timeline() == [
        "1:06 AM - Errors began (seen later in the logs)",
        "1:40 AM - Paged the on-call",
    ]


def test_an_entry_back_dated_to_the_day_before_brings_in_dates(stories: Stories) -> None:
    zone = "Africa/Nairobi"
    story = stories.start("Late start", zone=zone, when=at(zone, "2026-11-20 00:30"))
    story.note(at(zone, "2026-11-19 23:55"), "First errors")
    rendered = story.close(at(zone, "2026-11-20 01:00")).render()

    assert rendered.md_summary().startswith(
        "From 11:55 PM on 19 November 2026 to 1:00 AM on 20 November 2026 EAT, "
    )
    assert rendered.md_timeline() == ["19 Nov 11:55 PM - First errors"]


def test_ties_keep_the_order_they_were_recorded_in(stories: Stories) -> None:
    zone = "Africa/Nairobi"
    one_ten = at(zone, "2026-11-20 01:10")
    story = stories.start("Ties", zone=zone, when=at(zone, "2026-11-20 01:06"))
    story.note(one_ten, "Zeta recorded first")
    story.note(one_ten, "Alpha recorded second")
    story.note(at(zone, "2026-11-20 01:08"), "Recorded third, happened earlier")
    story.note(one_ten, "Middle recorded fourth")
    rendered = story.close(one_ten, "Closed at the same minute, recorded last").render()

    expected = [
        "1:08 AM - Recorded third, happened earlier",
        "1:10 AM - Zeta recorded first",
        "1:10 AM - Alpha recorded second",
        "1:10 AM - Middle recorded fourth",
        "1:10 AM - Closed at the same minute, recorded last",
    ]
    assert rendered.md_timeline() == expected
    assert rendered.html_timeline() == expected


def test_measures_keep_the_order_they_were_added_in(stories: Stories) -> None:
    zone = "UTC"
    story = stories.start("Order", zone=zone, when=at(zone, "2026-11-20 01:00"))
    for text in ["Zeta", "Alpha", "Middle"]:
        story.action(text)
    rendered = story.close(at(zone, "2026-11-20 02:00")).render()

    assert [b.text for b in rendered.md_section("Corrective and preventative measures")] == [
        "Zeta",
        "Alpha",
        "Middle",
    ]


def test_the_latest_value_of_a_field_wins(stories: Stories) -> None:
    zone = "UTC"
    story = stories.start("Fields", zone=zone, when=at(zone, "2026-11-20 01:00"))
    story.set(Field.CAUSE, "a bad config push").set(Field.CAUSE, "an expired certificate")
    rendered = story.close(at(zone, "2026-11-20 02:00")).render()

    assert "expired certificate" in rendered.md_summary()
    assert "config push" not in rendered.markdown
    assert "config push" not in rendered.html


def test_seconds_do_not_shorten_the_duration(stories: Stories) -> None:
    zone = "Africa/Nairobi"
    start = at(zone, "2026-11-20 01:06") + timedelta(seconds=59)
    story = stories.start("Seconds", zone=zone, when=start)
    rendered = story.close(at(zone, "2026-11-20 02:46")).render()

    assert rendered.md_summary().startswith("From 1:06 AM to 2:46 AM EAT, ")
    assert "The outage lasted 1 hour 40 minutes." in rendered.md_summary()


def test_an_ongoing_incident_says_since_and_so_far(stories: Stories) -> None:
    zone = "Africa/Nairobi"
    story = stories.start("Still down", zone=zone, when=at(zone, "2026-11-20 01:06"))
    story.note(at(zone, "2026-11-20 01:10"), "Investigating")
    rendered = story.render(now=at(zone, "2026-11-20 02:46"))

    assert rendered.context.status == "ongoing"
    assert rendered.md_summary().startswith("Since 1:06 AM EAT, ")
    assert "It has lasted 1 hour 40 minutes so far." in rendered.md_summary()
    assert "1 hour 40 minutes so far" in rendered.md[1].text  # the line under the title
    assert rendered.html_summary().startswith("Since 1:06 AM EAT, ")


# --- empty sections ---------------------------------------------------------------------


def test_empty_sections_say_so_plainly(stories: Stories) -> None:
    zone = "Africa/Nairobi"
    story = stories.start("Quiet incident", zone=zone, when=at(zone, "2026-11-20 01:06"))
    rendered = story.close(at(zone, "2026-11-20 01:36")).render()

    assert rendered.md_summary() == (
        "From 1:06 AM to 1:36 AM EAT, the incident “Quiet incident” was under way; no impact "
        "was recorded. The outage lasted 30 minutes. No root cause was recorded."
    )
    md = sections(rendered.md)
    assert md["Timeline"] == [Block("p", "No timeline entries were recorded.")]
    assert md["Root cause and resolution"] == [
        Block("p", "No root cause was recorded."),
        Block("p", "No resolution was recorded."),
    ]
    assert md["Corrective and preventative measures"] == [
        Block("p", "No corrective or preventative measures were recorded.")
    ]

    html = sections(rendered.page.blocks)
    assert html["Issue Summary:"] == [
        Block(
            "p",
            "From 1:06 AM to 1:36 AM EAT, the incident “Quiet incident” was under way; "
            "no impact was recorded. The outage lasted 30 minutes.",
        )
    ]
    assert html["Root Cause:"] == [Block("p", "No root cause was recorded.")]
    assert html["Timeline:"] == [Block("p", "No timeline entries were recorded.")]
    assert html["Resolution:"] == [Block("p", "No resolution was recorded.")]
    assert html["Corrective and Preventative Measures:"] == [
        Block("p", "No corrective or preventative measures were recorded.")
    ]
    assert html["In summary"] == [Block("p", "No summary was recorded.")]


# --- typed text is rendered as text -----------------------------------------------------

TYPED = [
    "{{ 7*7 }}",
    "{% raw %}",
    "{% endraw %} {{ pm.title }} {# a comment #}",
    "<script>alert(1)</script>",
    "*bold* _x_ [a](b) # h",
    "**strong** __also__ ~~struck~~ `code` ``more``",
    "![image](https://x.example/i.png) <https://x.example> [ref]: /url",
    "__init__ and snake_case_name and _leading and trailing_ and a_ b",
    "a \\ backslash \\* and \\_ and a trailing one \\",
    "&amp; &lt;b&gt; &#169; &copy; R&D AT&T",
    "<!channel> @here <@U123|ann>",
    "Issue #",
    "50% of <b>users</b> saw 5 > 3",
    "first line\n# not a heading\n- not a list\n+ nor this\n* nor this\n1. not ordered\n"
    "2) nor this\n> not a quote\n    not code\n```\nnot a fence\n~~~\n---\n===\n| not | a table |",
    "before a blank line\n\nafter it\n   \nand after spaces",
    "windows line endings\r\nstay line breaks\rtoo",
    "tabs\tinside\ta line",
    "unicode: naïve café — “quotes” 😀 \u00a0non-breaking\u3000ideographic",
]


def _story_with_everywhere(stories: Stories, typed: str) -> Rendered:
    zone = "Africa/Nairobi"
    story = stories.start(typed, zone=zone, when=at(zone, "2026-11-20 01:06"))
    story.note(at(zone, "2026-11-20 01:10"), typed)
    for which in Field:
        story.set(which, typed)
    story.action(typed)
    return story.close(at(zone, "2026-11-20 02:46")).render()


@pytest.mark.parametrize("typed", TYPED)
def test_typed_text_is_shown_as_typed_in_markdown(stories: Stories, typed: str) -> None:
    rendered = _story_with_everywhere(stories, typed)
    shown = shown_by_markdown

    assert rendered.md[0] == Block("h1", "Postmortem: " + " ".join(shown(typed).split("\n")))
    assert rendered.md_timeline() == [shown(f"1:10 AM - {typed}")]
    assert rendered.md_section("Corrective and preventative measures") == [
        Block("li", shown(typed))
    ]
    assert rendered.md_section("Root cause and resolution") == [
        Block("p", shown(postmortem.end_sentence(typed))),
        Block("p", shown(postmortem.end_sentence(typed))),
    ]
    summary = rendered.md_summary()
    assert f"EAT, {shown(postmortem.continue_sentence(typed))}" in summary
    assert f" {shown(postmortem.end_sentence(typed))} The outage lasted" in summary
    assert "49" not in rendered.markdown


# The tags the default HTML template writes itself (links and line breaks aside).
OUR_TAGS = frozenset(
    {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "strong", "ul", "li"}
)


@pytest.mark.parametrize("typed", TYPED)
def test_typed_text_is_escaped_in_html(stories: Stories, typed: str) -> None:
    rendered = _story_with_everywhere(stories, typed)
    page = rendered.page
    text = html_text

    assert set(page.tags) <= OUR_TAGS | {"br", "footer"}
    # Headings hold the title on one line, so its line breaks are only layout there.
    assert page.blocks[0] == Block("title", f"Postmortem: {_flat(typed)}")
    assert page.blocks[1] == Block("h1", f"Postmortem : {_flat(typed)}")
    assert rendered.html_timeline() == [f"1:10 AM - {text(typed)}"]
    assert rendered.html_section("Corrective and Preventative Measures:") == [
        Block("li", text(typed))
    ]
    sentence = text(postmortem.end_sentence(typed))
    assert rendered.html_section("Root Cause:") == [Block("p", sentence)]
    assert rendered.html_section("Resolution:") == [Block("p", sentence)]
    assert rendered.html_section("In summary") == [Block("p", sentence)]
    assert rendered.html_summary().startswith(
        f"From 1:06 AM to 2:46 AM EAT, {text(postmortem.continue_sentence(typed))}"
    )
    assert "49" not in rendered.html


def test_a_multi_line_title_stays_one_heading(stories: Stories) -> None:
    rendered = _story_with_everywhere(stories, "Checkout down\nfor card payments #")
    assert rendered.md[0] == Block("h1", "Postmortem: Checkout down for card payments #")
    assert rendered.md[1].kind == "p" and rendered.md[1].text.startswith("<strong_open>INC-")


def test_dollar_signs_are_escaped_so_github_shows_no_math(stories: Stories) -> None:
    # GitHub (and GitLab) read $...$ and $$...$$ in a .md file as a math formula: "$PATH and
    # $HOME" would show "PATH and " in italic math and lose both dollar signs. CommonMark has
    # no math, so it cannot see this; the check is that no $ reaches the file unescaped.
    typed = "echo $PATH and $HOME; $$x$$ costs $5"
    rendered = _story_with_everywhere(stories, typed)

    assert re.findall(r"(?<!\\)\$", rendered.markdown) == []
    assert rendered.md_timeline() == [f"1:10 AM - {typed}"]
    assert rendered.md[0] == Block("h1", f"Postmortem: {typed}")


# Any text a person can store (the use cases refuse NUL and text with nothing visible, and
# surrogates cannot be encoded).
PERSON_TEXT = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=300,
    )
    .map(str.strip)
    .filter(has_visible_text)
)
# The same, with the characters Markdown cares about made common.
MARKDOWN_HEAVY = (
    st.lists(
        st.sampled_from(list("\\`*_[]()<>!#+-=|~&;:.0123456789 \t\n\r") + ["&amp;", "a", "é"])
        | st.text(max_size=3),
        max_size=120,
    )
    .map("".join)
    .map(str.strip)
    .filter(lambda text: has_visible_text(text) and "\x00" not in text)
)
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(typed=PERSON_TEXT | MARKDOWN_HEAVY)
def test_any_note_is_shown_by_commonmark_exactly_as_typed(stories: Stories, typed: str) -> None:
    zone = "UTC"
    story = stories.start(
        "Property", zone=zone, when=at(zone, "2026-11-20 01:06"), channel=_new_channel()
    )
    with closing(story.session):  # a failing example must not hold its locks for the next
        story.note(at(zone, "2026-11-20 01:10"), typed)
        rendered = story.close(at(zone, "2026-11-20 02:46")).render()

    # As typed, with the direction controls it opens closed where it ends (bot.bidi).
    assert rendered.md_timeline() == [shown_by_markdown(f"1:10 AM - {bidi.contained(typed)}")]
    # And the rest of the document is untouched by it.
    assert [text for _, text in headings(rendered.md)][1:] == [
        "Issue summary",
        "Timeline",
        "Root cause and resolution",
        "Corrective and preventative measures",
    ]


@PROPERTY_SETTINGS
@given(typed=PERSON_TEXT | MARKDOWN_HEAVY)
def test_any_note_is_html_text_exactly_as_typed(stories: Stories, typed: str) -> None:
    zone = "UTC"
    story = stories.start(
        "Property", zone=zone, when=at(zone, "2026-11-20 01:06"), channel=_new_channel()
    )
    with closing(story.session):
        story.note(at(zone, "2026-11-20 01:10"), typed)
        rendered = story.close(at(zone, "2026-11-20 02:46")).render()

    assert rendered.html_timeline() == [f"1:10 AM - {html_text(bidi.contained(typed))}"]


def _new_channel() -> str:
    return f"C{uuid.uuid4().hex[:10].upper()}"


# --- the filters on their own -----------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "continued"),
    [
        ("Requests failed", "requests failed."),
        ("Customers could not pay", "customers could not pay."),
        ("The API returned 503s.", "the API returned 503s."),
        ("Stripe was down", "Stripe was down."),  # a name keeps its capital
        ("DNS failed!", "DNS failed!"),
        ("ALL requests failed", "ALL requests failed."),
        ("  padded  ", "padded."),
        # The typed text's own stop, then the pop that closes its direction (bot.bidi).
        ("\u202eDNS failed.\u202c", "\u202eDNS failed.\u202c"),
        ("\u2067DNS failed\u2069", "\u2067DNS failed\u2069."),
    ],
)
def test_continue_sentence(typed: str, continued: str) -> None:
    assert postmortem.continue_sentence(typed) == continued


@pytest.mark.parametrize(
    ("typed", "sentence"),
    [
        ("a DDoS attack", "A DDoS attack."),
        ("the certificate expired", "The certificate expired."),
        ("iptables was misconfigured", "iptables was misconfigured."),  # not ours to capitalise
        ("Done.", "Done."),
        ("Why?", "Why?"),
        ("\u202bDone.\u202c", "\u202bDone.\u202c"),
    ],
)
def test_end_sentence(typed: str, sentence: str) -> None:
    assert postmortem.end_sentence(typed) == sentence


@pytest.mark.parametrize(
    ("minutes", "text"),
    [
        (0, "less than a minute"),
        (1, "1 minute"),
        (59, "59 minutes"),
        (60, "1 hour"),
        (100, "1 hour 40 minutes"),
        (121, "2 hours 1 minute"),
        (24 * 60, "1 day"),
        (27 * 60 + 30, "1 day 3 hours 30 minutes"),
        (2 * 24 * 60 + 5, "2 days 5 minutes"),
        (-5, "less than a minute"),
    ],
)
def test_format_duration(minutes: int, text: str) -> None:
    assert postmortem.format_duration(timedelta(minutes=minutes)) == text


def test_a_duration_under_a_minute_ignores_seconds() -> None:
    assert postmortem.format_duration(timedelta(seconds=59)) == "less than a minute"
    assert postmortem.format_duration(timedelta(seconds=119)) == "1 minute"


# --- where the templates come from ------------------------------------------------------


def _override(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_templates_dir_overrides_markdown_and_html_falls_back(
    stories: Stories, tmp_path: Path
) -> None:
    folder = _override(
        tmp_path / "mine",
        "postmortem.md.j2",
        "OURS {{ pm.reference }}: {{ pm.title|md }} in {{ pm.window.duration }}\n",
    )
    settings = Settings.load(environ={"TEMPLATES_DIR": str(folder)}, env_file=None)
    story = stories.start("A *title*", zone="UTC", when=at("UTC", "2026-11-20 01:00"))
    story.env = postmortem.build_environment(settings.templates_dir)
    rendered = story.close(at("UTC", "2026-11-20 01:30")).render()

    assert rendered.markdown == "OURS INC-1: A \\*title\\* in 30 minutes\n"
    assert "<h2>Issue Summary:</h2>" in rendered.html  # the built-in one
    assert rendered.page.blocks[1] == Block("h1", "Postmortem : A *title*")


def test_templates_dir_may_override_html_too_and_it_is_still_escaped(
    stories: Stories, tmp_path: Path
) -> None:
    folder = _override(tmp_path / "mine", "postmortem.html.j2", "<h1>{{ pm.title }}</h1>\n")
    story = stories.start("<b>bold</b>", zone="UTC", when=at("UTC", "2026-11-20 01:00"))
    story.env = postmortem.build_environment(folder)
    rendered = story.close(at("UTC", "2026-11-20 01:30")).render()

    assert rendered.html == "<h1>&lt;b&gt;bold&lt;/b&gt;</h1>\n"
    assert rendered.markdown.startswith("# Postmortem: \\<b\\>bold\\</b\\>\n")  # built-in


def test_built_in_templates_are_found_from_any_working_directory(
    stories: Stories, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    story = stories.start("Elsewhere", zone="UTC", when=at("UTC", "2026-11-20 01:00"))
    story.env = postmortem.build_environment()
    rendered = story.close(at("UTC", "2026-11-20 01:30")).render()

    assert rendered.md[0] == Block("h1", "Postmortem: Elsewhere")
    assert (postmortem.builtin_templates_dir() / "postmortem.html.j2").is_file()


def test_template_syntax_in_a_user_template_runs_but_typed_text_never_does(
    stories: Stories, tmp_path: Path
) -> None:
    folder = _override(tmp_path / "mine", "postmortem.md.j2", "{{ 6*7 }} {{ pm.title }}\n")
    story = stories.start("{{ 7*7 }}", zone="UTC", when=at("UTC", "2026-11-20 01:00"))
    story.env = postmortem.build_environment(folder)
    rendered = story.close(at("UTC", "2026-11-20 01:30")).render()

    assert rendered.markdown == "42 {{ 7*7 }}\n"


def test_a_template_that_fails_only_at_render_time_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "postmortem.md.j2").write_text("# {{ pm.title }}\n{{ pm.timeline | length / 0 }}\n")
    env = postmortem.build_environment(tmp_path)

    with pytest.raises(postmortem.TemplateCheckError, match=r"postmortem\.md\.j2, line 2: .*zero"):
        postmortem.check_templates(env)


def test_a_template_that_is_not_utf8_is_named_by_its_file_and_told_so(tmp_path: Path) -> None:
    # Saved by an editor in Latin-1: the error comes from reading the file, before any line
    # of it runs, and the check said "postmortem.md.j2, line None: 'utf-8' codec can't ...".
    (tmp_path / "postmortem.md.j2").write_bytes("# Café {{ pm.title }}\n".encode("latin-1"))
    env = postmortem.build_environment(tmp_path)

    with pytest.raises(postmortem.TemplateCheckError) as refused:
        postmortem.check_templates(env)
    assert str(refused.value).startswith(f"{tmp_path / 'postmortem.md.j2'}: ")
    assert "line None" not in str(refused.value)
    assert "not UTF-8" in str(refused.value)
    # As a close and export tell it, when the file was saved so after start-up.
    with pytest.raises(UnicodeDecodeError) as raised:
        postmortem.render(env, postmortem.sample_context())
    failed = postmortem.failure(env, raised.value, postmortem.Format.MARKDOWN)
    assert failed.startswith(f"{tmp_path / 'postmortem.md.j2'} failed: "), failed
    assert "not UTF-8" in failed


def test_the_built_in_templates_pass_the_check() -> None:
    postmortem.check_templates(postmortem.build_environment())


def test_a_template_that_fails_only_when_nothing_was_recorded_is_found_by_the_check(
    tmp_path: Path,
) -> None:
    # Fine on the full sample; on an incident with no entries (a common close) it asks for
    # a name `pm` does not have, which the check must find before a close does.
    (tmp_path / "postmortem.md.j2").write_text(
        "# {{ pm.title }}\n"
        "{% for line in pm.timeline %}\n* {{ line.text|md_item }}\n"
        "{% else %}\n{{ pm.no_entries_text }}\n{% endfor %}\n"
    )
    env = postmortem.build_environment(tmp_path)

    with pytest.raises(
        postmortem.TemplateCheckError,
        match=r"postmortem\.md\.j2, line 5: .*no_entries_text.*nothing recorded",
    ):
        postmortem.check_templates(env)


@pytest.mark.parametrize(
    ("template", "sample"),
    [
        ("", "every field filled"),
        ("\n  \n{# a draft #}\n", "every field filled"),
        ("{% if pm.timeline %}# {{ pm.title|md_line }}\n{% endif %}", "nothing recorded"),
    ],
)
def test_a_template_that_renders_an_empty_postmortem_is_refused_by_the_check(
    tmp_path: Path, template: str, sample: str
) -> None:
    (tmp_path / "postmortem.md.j2").write_text(template)
    env = postmortem.build_environment(tmp_path)

    with pytest.raises(postmortem.TemplateCheckError) as refused:
        postmortem.check_templates(env)
    assert str(refused.value).startswith(
        f"{tmp_path / 'postmortem.md.j2'}: renders an empty postmortem"
    )
    assert sample in str(refused.value)


def test_a_template_of_the_same_name_can_include_the_built_in_one(
    stories: Stories, tmp_path: Path
) -> None:
    folder = _override(
        tmp_path / "mine",
        "postmortem.md.j2",
        '{% include "builtin/postmortem.md.j2" %}\n## Sign-off\n\nThe checkout team\n',
    )
    postmortem.check_templates(postmortem.build_environment(folder))
    story = stories.start("Included", zone="UTC", when=at("UTC", "2026-11-20 01:00"))
    story.env = postmortem.build_environment(folder)
    rendered = story.close(at("UTC", "2026-11-20 01:30")).render()

    assert rendered.md[0] == Block("h1", "Postmortem: Included")
    assert sections(rendered.md)["Timeline"] == [Block("p", "No timeline entries were recorded.")]
    assert rendered.markdown.endswith("## Sign-off\n\nThe checkout team\n")


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ('{% extends "postmortem.md.j2" %}\n', "includes or extends itself"),
        ('# x\n{% include "header.md.j2" %}\n', "there is no template 'header.md.j2'"),
    ],
)
def test_an_include_that_cannot_work_is_explained_by_the_check(
    tmp_path: Path, template: str, says: str
) -> None:
    (tmp_path / "postmortem.md.j2").write_text(template)

    with pytest.raises(postmortem.TemplateCheckError, match=re.escape(says)):
        postmortem.check_templates(postmortem.build_environment(tmp_path))


# --- what a template author is told -----------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def _documented_names(cls: type, prefix: str) -> Iterator[str]:
    """`pm.title`, ... for the context's own fields; `.start`, ... for those of its parts."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        yield f"`{prefix}{item.name}`"
        for part in (hints[item.name], *typing.get_args(hints[item.name])):
            if dataclasses.is_dataclass(part) and isinstance(part, type):
                yield from _documented_names(part, ".")


def test_the_readme_names_every_field_and_filter_a_template_can_use() -> None:
    section = README.read_text(encoding="utf-8").split("## Postmortem templates", 1)[1]
    section = section.split("\n## ", 1)[0]
    ours = set(postmortem.build_environment().filters) - set(Environment().filters)

    missing = [
        name
        for name in [
            *_documented_names(postmortem.PostmortemContext, "pm."),
            *(f"`{name}`" for name in sorted(ours)),
        ]
        if name not in section
    ]
    assert missing == []


def test_role_names_are_shown_as_configured_in_markdown(stories: Stories) -> None:
    # INCIDENT_ROLES allows underscores, which Markdown would otherwise take for emphasis.
    zone = "UTC"
    story = stories.start("Roles", zone=zone, when=at(zone, "2026-11-20 01:00"))
    for role, name in [("_on_call_", "ann"), ("comms__lead", "*bob*")]:
        incidents.assign_role(
            story.session,
            incident=story.incident,
            role=role,
            user_id=ALICE,
            user_name=name,
            assigned_by=BOB,
            now=at(zone, "2026-11-20 01:05"),
        )
    rendered = story.close(at(zone, "2026-11-20 01:30")).render()

    assert rendered.md[2] == Block("p", "_on_call_: ann · Comms__lead: *bob*")
    assert rendered.page.blocks[3] == Block("p", "_on_call_: ann · Comms__lead: *bob*")


# --- Slack's markup, from a signed command or a pinned message to both postmortems ------

# (as Slack sends it, as the person saw it)
SLACK_TEXT = [
    (
        "see <https://x.example/a?b=1&amp;c=2|the runbook> and <https://x.example/b>",
        "see the runbook (https://x.example/a?b=1&c=2) and https://x.example/b",
    ),
    ("1 &lt; 2 &amp;&amp; 3 &gt; 2; &amp;lt;b&amp;gt;", "1 < 2 && 3 > 2; &lt;b&gt;"),
    ("mail <mailto:ops@x.example|ops@x.example>", "mail ops@x.example"),
    ("deploy at <!date^1700000000^{date_short}|Nov 14>", "deploy at Nov 14"),
    ("<!here> <!channel> <!everyone> look", "@here @channel @everyone look"),
    ("`a|b&lt;c&gt;` and ```x &lt; y | z```", "`a|b<c>` and ```x < y | z```"),
    (":fire: # not *bold* _x_ | a | b | ~no~", ":fire: # not *bold* _x_ | a | b | ~no~"),
    ("1. first\n2. second\n# third\n&gt; fourth", "1. first\n2. second\n# third\n> fourth"),
    (
        '&lt;script&gt;alert(1)&lt;/script&gt; &lt;a href="javascript:alert(1)" x=\'"\'&gt;',
        '<script>alert(1)</script> <a href="javascript:alert(1)" x=\'"\'>',
    ),
]


def test_slack_markup_reaches_both_postmortems_as_the_person_saw_it(bot: Bot) -> None:
    bot.command("start Outage")
    answers = [bot.command(f"note {sent}", escaped=True) for sent, _ in SLACK_TEXT]
    # An integration may post what no person can type: a link whose target runs script.
    alert = "<javascript:alert(1)|open> the <https://x.example/d?a=1&amp;b=2|dashboard>"
    ts = bot.fake.post(CHANNEL, alert, user=BOB, ts="1795154460.000100")
    reaction(bot, ts)
    bot.wait()
    answers.append(bot.command("timeline"))  # lists every entry's text
    bot.clock.advance(minutes=5)
    answers.append(bot.command("close"))
    bot.wait()

    seen = [typed for _, typed in SLACK_TEXT]
    markdown = markdown_blocks(bot.fake.uploaded_text())
    timeline = [block.text for block in sections(markdown)["Timeline"] if block.kind == "li"]
    assert timeline[: len(seen)] == [shown_by_markdown(f"9:00 AM - {typed}") for typed in seen]
    assert timeline[len(seen)].startswith(
        "9:01 AM - u0bob00001: open (javascript:alert(1)) the dashboard "
        "(https://x.example/d?a=1&b=2)"
    )

    with bot.services.sessions() as session:
        [incident] = session.scalars(select(Incident)).all()
        context = postmortem.build_context(session, incident=incident, now=bot.clock.now)
    html = postmortem.render(bot.services.templates, context, postmortem.Format.HTML)
    page = html_blocks(html)
    assert set(page.tags) <= OUR_TAGS | {"br", "footer", "a"}
    html_timeline = [b.text for b in sections(page.blocks)["Timeline:"] if b.kind == "li"]
    assert html_timeline[: len(seen)] == [f"9:00 AM - {html_text(typed)}" for typed in seen]
    # The only link is the bot's own: the pinned message's permalink.
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == [f"https://demo.slack.com/archives/{CHANNEL}/p1795154460000100"]

    # Nothing typed pings: every message the bot sent and every answer it gave.
    sent = [
        f"{call.params.get('text', '')}{call.params.get('blocks', '')}" for call in bot.fake.calls
    ]
    sent += [json.dumps(response) for response in bot.fake.responses]
    sent += [answer.visible for answer in answers]
    for text in sent:
        assert "<!" not in text
        assert not re.search(r"(?<!\u200b)@(channel|here|everyone)\b", text), text


# --- incidents told through signed commands ---------------------------------------------


def closed_postmortems(bot: Bot) -> Rendered:
    """The Markdown the close uploaded, and the HTML of the same incident, as rendered."""
    bot.wait()
    markdown = bot.fake.uploaded_text()
    with bot.services.sessions() as session:
        [incident] = session.scalars(select(Incident)).all()
        context = postmortem.build_context(session, incident=incident, now=bot.clock.now)
    html = postmortem.render(bot.services.templates, context, postmortem.Format.HTML)
    return Rendered(context=context, markdown=markdown, html=html)


def header(rendered: Rendered) -> tuple[str, str]:
    """The line under the title, in Markdown and in HTML, without its bold."""
    md_line = rendered.md[1]
    html_line = rendered.page.blocks[2]
    assert md_line.kind == "p" and html_line.kind == "p"
    return re.sub(r"<strong(_open|_close)?>", "", md_line.text), html_line.text.replace(
        "<strong>", ""
    )


@pytest.mark.parametrize(
    ("close_at", "date", "duration"),
    [
        # Friday 11:50 PM to Saturday 12:10 AM in Nairobi.
        (
            datetime(2026, 11, 20, 21, 10, tzinfo=UTC),
            "Friday 20 – Saturday 21 November 2026",
            "20 minutes",
        ),
        (
            datetime(2026, 11, 22, 23, 50, tzinfo=UTC),
            "Friday 20 – Monday 23 November 2026",
            "2 days 3 hours",
        ),
        # Into the next month, and into the next year.
        (
            datetime(2026, 12, 1, 1, 0, tzinfo=UTC),
            "Friday 20 November – Tuesday 1 December 2026",
            "10 days 4 hours 10 minutes",
        ),
        (
            datetime(2027, 1, 1, 0, 0, tzinfo=UTC),
            "Friday 20 November 2026 – Friday 1 January 2027",
            "41 days 3 hours 10 minutes",
        ),
    ],
)
def test_the_header_gives_every_day_an_incident_spans(
    bot: Bot, close_at: datetime, date: str, duration: str
) -> None:
    bot.clock.now = datetime(2026, 11, 20, 20, 50, tzinfo=UTC)  # Friday 11:50 PM EAT
    bot.command("start Night outage")
    bot.clock.now = close_at
    assert "is closed" in bot.command("close Recovered").text

    rendered = closed_postmortems(bot)

    expected = f"INC-1 · {date} · {duration} · resolved"
    assert header(rendered) == (expected, expected)


class _Nesting(HTMLParser):
    """Every element of a page, checking that each is closed where it was opened."""

    VOID = frozenset({"br", "meta", "link", "img", "hr", "input", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.elements: list[tuple[str, tuple[str, ...], dict[str, str | None]]] = []
        self.declarations: list[str] = []
        self.styles: list[str] = []
        self.first_thing: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.first_thing = self.first_thing or f"<!{decl}>"
        self.declarations.append(decl)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.first_thing = self.first_thing or f"<{tag}>"
        self.elements.append((tag, tuple(self.open), dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] == "style":
            self.styles.append(data)
        elif data.strip():
            self.first_thing = self.first_thing or data


def test_the_html_is_a_complete_page_that_needs_nothing_else(bot: Bot) -> None:
    # A long link pasted into a note: one word of 3,000 characters.
    long_link = "https://grafana.example/d/x?" + "a=1&" * 750
    bot.command("start <b>Checkout</b> & payments")
    bot.command(f"note {long_link}")
    bot.clock.advance(minutes=5)
    bot.command("close")
    rendered = closed_postmortems(bot)

    page = _Nesting()
    page.feed(rendered.html)
    page.close()
    assert page.first_thing == "<!DOCTYPE html>"
    assert page.open == []
    elements = {tag: (parents, attrs) for tag, parents, attrs in page.elements}
    assert elements["html"] == ((), {"lang": "en"})
    # The charset first in <head> (within its first 1024 bytes), a title, and a width for
    # phones: what a browser needs to show a file opened from disk.
    assert page.elements[1] == ("head", ("html",), {})
    assert page.elements[2] == ("meta", ("html", "head"), {"charset": "utf-8"})
    assert rendered.html.index('<meta charset="utf-8">') < 1024
    assert elements["title"][0] == ("html", "head")
    assert [b.text for b in rendered.page.blocks if b.kind == "title"] == [
        "Postmortem: <b>Checkout</b> & payments"
    ]
    assert ("meta", ("html", "head"), {"name": "viewport", "content": "width=device-width"}) in (
        page.elements
    )
    # Nothing is fetched: no scripts, images, frames or stylesheets from elsewhere.
    fetched = {"script", "img", "link", "iframe", "object", "embed", "video", "audio", "source"}
    assert not fetched & {tag for tag, _, _ in page.elements}
    assert all("src" not in attrs for _, _, attrs in page.elements)
    style = "".join(page.styles)
    assert "url(" not in style and "@import" not in style
    # Its own style keeps lines readable and wraps a word wider than the page.
    assert re.search(r"body\s*\{[^}]*max-width:", style), style
    assert re.search(r"overflow-wrap:\s*anywhere", style), style
    # The long word is there, whole.
    assert html_text(long_link) in rendered.html_timeline()[0]
