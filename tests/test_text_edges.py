"""Text people type, at its edges, end to end: a bare time, the limit, names, invisible text."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, select

from bot import postmortem
from bot.incidents import MAX_TEXT_LENGTH
from bot.models import Incident, TimelineEntry
from tests.conftest import Bot


def entry_texts(bot: Bot) -> list[str]:
    with bot.services.sessions() as session:
        return list(session.scalars(select(TimelineEntry.text).order_by(TimelineEntry.id)))


def incident_count(bot: Bot) -> int:
    with bot.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(Incident)) or 0


# --- a time with nothing after it --------------------------------------------------------
# Slack trims the command's text, so `note 10:00 - ` arrives as `note 10:00 -`.


@pytest.mark.parametrize("typed", ["note 10:00 - ", "note 8:00 AM -"])
def test_a_note_with_a_time_and_no_text_is_refused_and_stores_nothing(bot: Bot, typed: str) -> None:
    bot.command("start Outage")
    reply = bot.command(typed)

    assert "empty" in reply.text
    assert entry_texts(bot) == []


def test_a_start_with_a_time_and_no_title_is_refused_and_stores_nothing(bot: Bot) -> None:
    reply = bot.command("start 8:00 AM - ")

    assert "empty" in reply.text
    assert incident_count(bot) == 0


@pytest.mark.parametrize("typed", ["note 10:00", "note 8:00 AM", "note 10 min ago"])
def test_a_note_that_is_only_a_time_is_refused_and_stores_nothing(bot: Bot, typed: str) -> None:
    # Not a note whose text is "8:00 AM" (with a hint to date it by "8:00" and keep "AM").
    bot.command("start Outage")
    reply = bot.command(typed)

    assert "only a time" in reply.text, reply.text
    assert "/incident note " in reply.text and " - &lt;text&gt;" in reply.text
    assert entry_texts(bot) == []


def test_a_start_that_is_only_a_time_opens_no_incident(bot: Bot) -> None:
    # Not an incident titled "8:00 AM", announced to the channel.
    reply = bot.command("start 8:00 AM")

    assert not reply.in_channel
    assert "only a time" in reply.text, reply.text
    assert "/incident start 8:00 AM - &lt;title&gt;" in reply.text
    assert incident_count(bot) == 0


def test_an_edit_with_a_time_and_no_text_moves_the_entry_and_keeps_its_text(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")
    bot.command("note hello")

    reply = bot.command("edit 1 8:00 AM - ")

    assert "8:00 AM EAT - hello" in reply.text
    assert entry_texts(bot) == ["hello"]


def test_a_close_with_a_time_and_no_text_adds_no_entry(bot: Bot) -> None:
    bot.command("start 7:00 AM - Outage")

    reply = bot.command("close 8:00 AM - ")
    bot.wait()

    assert "closed" in reply.text
    assert entry_texts(bot) == []


# --- the length limit counts the text, not the time or number before it -------------------


def test_a_note_at_the_limit_after_a_time_is_kept(bot: Bot) -> None:
    bot.command("start Outage")
    text = "x" * MAX_TEXT_LENGTH

    bot.command(f"note 8:00 AM - {text}")
    reply = bot.command(f"note 8:00 AM - {text}y")

    assert entry_texts(bot) == [text]
    assert "4,001" in reply.text


def test_an_edit_to_text_at_the_limit_is_kept(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("note hello")
    text = "z" * MAX_TEXT_LENGTH

    bot.command(f"edit 1 {text}")

    assert entry_texts(bot) == [text]


# --- an unknown subcommand is named as it was typed -----------------------------------------


def test_an_unknown_subcommand_is_named_as_typed_not_as_slack_escaped_it(bot: Bot) -> None:
    reply = bot.command("r&d <b>")

    # Escaped once for Slack, which shows `r&d`; escaped twice it would show `r&amp;d`.
    assert "I don't know `r&amp;d`" in reply.text
    assert "&amp;amp;" not in reply.visible


def test_an_unknown_subcommand_with_a_backtick_is_named_without_a_broken_code_span(
    bot: Bot,
) -> None:
    # Nothing in mrkdwn escapes a backtick inside `…`: it would end the span early.
    reply = bot.command("xy`zzy x")

    # Quoted instead, its backtick shown as U+02CB, which cannot open code.
    assert "I don't know “xy\u02cbzzy”. Here is what I can do:" in reply.text
    assert "`xy`zzy`" not in reply.visible


# --- text with nothing visible is empty ---------------------------------------------------
# Zero-width spaces and joiners, direction marks and control characters are not whitespace
# to `str.strip`, but they show nothing: an entry of them would be a blank line.

INVISIBLE = ["\u200b", "\u2060\u200d", "\x01", "\u202e", "\u200b \u00a0\u200e"]


@pytest.mark.parametrize("invisible", INVISIBLE)
def test_a_note_with_nothing_visible_is_refused_and_stores_nothing(
    bot: Bot, invisible: str
) -> None:
    bot.command("start Outage")
    reply = bot.command(f"note {invisible}")

    assert "empty" in reply.text
    assert entry_texts(bot) == []


@pytest.mark.parametrize("subcommand", ["impact", "action"])
def test_fields_and_actions_with_nothing_visible_are_refused(bot: Bot, subcommand: str) -> None:
    bot.command("start Outage")
    reply = bot.command(f"{subcommand} \u200b\u2060")

    assert "empty" in reply.text
    assert bot.command("status").text.count("\u200b") == 0


def test_a_start_with_nothing_visible_opens_no_incident(bot: Bot) -> None:
    reply = bot.command("start \u200b\u202e")

    assert "empty" in reply.text
    assert incident_count(bot) == 0


def test_invisible_characters_beside_visible_text_are_kept_as_typed(bot: Bot) -> None:
    bot.command("start Outage")
    bot.command("note \u200bcheckout\u200d is \u202edown")

    assert entry_texts(bot) == ["\u200bcheckout\u200d is \u202edown"]


# --- direction controls end where the typed text ends ---------------------------------------
# An override (U+202E), embedding (U+202B) or isolate (U+2067) left open in typed text
# reorders everything after it on the line: our words, the next field, the link. Every output
# closes what each typed text opened, right after it; the text is stored as typed.

PDF, PDI = "\u202c", "\u2069"
OPENED_AND_CLOSED = [("\u202eevil", PDF), ("\u202bevil", PDF), ("\u2067evil", PDI)]


def left_open(shown: str) -> list[str]:
    """The lines of `shown` that end with a direction control still open."""
    found = []
    for line in re.split(r"\r\n|\r|\n", shown):
        depth = 0
        for char in line:
            if char in "\u202a\u202b\u202d\u202e\u2066\u2067\u2068":
                depth += 1
            elif char in (PDF, PDI) and depth:
                depth -= 1
        if depth:
            found.append(line)
    return found


def assert_closed_right_after(shown: str, typed: str, closer: str) -> None:
    assert f"{typed}{closer}" in shown, shown
    assert left_open(shown) == [], shown


@pytest.mark.parametrize(("typed", "closer"), OPENED_AND_CLOSED)
def test_direction_controls_in_typed_text_are_closed_in_every_slack_reply(
    bot: Bot, typed: str, closer: str
) -> None:
    started = bot.command(f"start {typed}")
    noted = bot.command(f"note {typed}")
    impact = bot.command(f"impact {typed}")
    action = bot.command(f"action {typed}")
    replies = [started, noted, impact, action, bot.command("status"), bot.command("list")]
    edited = bot.command(f"edit 1 more {typed}")

    for reply in [*replies, edited, bot.command("timeline")]:
        assert_closed_right_after(reply.visible, typed, closer)
    assert entry_texts(bot) == [f"more {typed}"]  # stored as typed


@pytest.mark.parametrize(("typed", "closer"), OPENED_AND_CLOSED)
def test_direction_controls_in_typed_text_are_closed_in_the_summary_and_postmortems(
    bot: Bot, typed: str, closer: str
) -> None:
    bot.command(f"start {typed}")
    bot.command(f"note {typed}")
    for field in ("impact", "cause", "resolution", "summary", "action"):
        bot.command(f"{field} {typed}")
    bot.command(f"close {typed}")
    bot.wait()

    [summary] = bot.fake.calls_to("chat.postMessage")
    assert_closed_right_after(json.dumps(summary.params, ensure_ascii=False), typed, closer)
    [completed] = bot.fake.calls_to("files.completeUploadExternal")
    [uploaded] = json.loads(completed.params["files"])
    assert_closed_right_after(uploaded["title"], typed, closer)
    markdown = bot.fake.uploaded_text()
    assert_closed_right_after(markdown, typed, closer)
    # The title, the note, the four fields (the cause twice), the measure, the closing note.
    assert markdown.count(f"{typed}{closer}") == 9
    with bot.services.sessions() as session:
        incident = session.scalars(select(Incident)).one()
        context = postmortem.build_context(session, incident=incident, now=bot.clock.now)
        assert incident.title == typed  # stored as typed
    page = postmortem.render(bot.services.templates, context, postmortem.Format.HTML)
    assert_closed_right_after(page, typed, closer)
    assert page.count(f"{typed}{closer}") == 9  # the title twice, the cause once


def test_closes_the_text_did_not_open_are_left_out_and_balanced_ones_kept(bot: Bot) -> None:
    # A pop with nothing of its own to close would end the reply's or page's own direction.
    bot.command("start Outage")
    bot.command(f"note a{PDF}b{PDI}c")
    balanced = f"see \u202bשלום{PDF} and \u2067مرحبا{PDI} — الخادم متوقف"
    bot.command(f"note {balanced}")

    shown = bot.command("timeline").visible
    bot.command("close")
    bot.wait()
    markdown = bot.fake.uploaded_text()

    for output in (shown, markdown):
        assert "abc" in output
        assert balanced in output
        assert left_open(output) == []
    assert entry_texts(bot) == [f"a{PDF}b{PDI}c", balanced]


@pytest.mark.parametrize(
    "typed",
    [
        "detected \u202eoops",  # read as a time
        "severity \u202eoops",
        "edit \u202eoops new text",  # read as an entry number
        "role \u202eoops <@U0BOB00001>",
        "\u202eoops",  # read as a subcommand
    ],
)
def test_a_refusal_closes_the_direction_of_the_text_it_quotes(bot: Bot, typed: str) -> None:
    # The text is quoted mid-sentence: what follows it must not be reordered.
    if not typed.startswith("start"):
        bot.command("start Outage")

    reply = bot.command(typed)

    assert f"\u202eoops{PDF}" in reply.visible, reply.visible
