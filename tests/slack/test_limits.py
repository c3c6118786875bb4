"""Big incidents and big texts against Slack's documented message limits: whatever the size,
every message the bot sends is one Slack takes (conftest checks each command's answer, and
FakeSlack refuses what Slack refuses in chat.postMessage and response URLs)."""

from __future__ import annotations

import json
import re

import pytest

from bot.demo import RESPONSE_URL, message_refusal
from tests.conftest import ALICE, CHANNEL, Bot, add_entries


def section(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"text": "ok", "blocks": [section("x" * 3000)] * 50}, None),
        ({"text": "ok", "blocks": [section("x")] * 51}, "invalid_blocks"),
        ({"text": "ok", "blocks": [section("x" * 3001)]}, "invalid_blocks"),
        ({"text": "ok", "blocks": [section("")]}, "invalid_blocks"),
        (
            {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]},
            "invalid_blocks",
        ),
        (
            {"blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "x"}] * 11}]},
            "invalid_blocks",
        ),
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": "x" * 40_000}, None),
    ],
)
def test_fake_slack_refuses_what_slack_documents_it_refuses(
    message: dict[str, object], error: str | None
) -> None:
    assert message_refusal(message) == error


# 4,000 characters on many lines, of those that escaping lengthens and a broadcast.
EXPANDING = ("&<>@here a\n" * 400)[:3980]


@pytest.mark.parametrize("count", [1, 50, 2_000])
def test_every_answer_about_a_big_incident_is_one_slack_takes(bot: Bot, count: int) -> None:
    assert bot.command("start " + "&<>" * 1333).status == 200
    add_entries(bot, count, EXPANDING)
    for field in ("impact", "cause", "resolution", "summary"):
        assert bot.command(f"{field} {'&' * 4000}").status == 200
    for role in ("commander", "communications", "scribe"):
        bot.command(f"role {role} <@{ALICE}>", escaped=True)
    for typed in ("status", "timeline", "help", "list", "note " + "&" * 4000, "sev " + "<" * 4000):
        assert bot.command(typed).status == 200, typed
    for _ in range(100):
        bot.command("action " + "<" * 4000)

    assert bot.command("close " + "&" * 3999).status == 200
    bot.wait()

    assert bot.fake.refused == []
    assert len(bot.fake.calls_to("chat.postMessage")) == 1


def test_the_close_summary_through_the_response_url_is_one_slack_takes(bot: Bot) -> None:
    bot.fake.members_only.add(CHANNEL)
    bot.fake.private.add(CHANNEL)
    bot.command("start " + "&" * 4000)
    bot.command("impact " + "<" * 4000)
    bot.command("cause " + "&" * 4000)
    bot.command("close")
    bot.wait()
    responses = bot.fake.wait_for_responses(2)
    assert [where for where, _, _ in bot.fake.refused if where == RESPONSE_URL] == []
    assert any(r.get("response_type") == "in_channel" for r in responses)


def test_a_list_of_many_open_incidents_with_long_titles_is_one_slack_takes(bot: Bot) -> None:
    for n in range(200):
        bot.command("start " + "&" * 4000, channel=f"C0LIM{n:05d}")
    reply = bot.command("list")
    assert reply.status == 200 and "…and " in reply.visible


def test_a_title_that_opens_directions_where_the_header_is_cut_is_announced(bot: Bot) -> None:
    # The header is cut to Slack's 150 characters, then each direction the title opened is
    # closed: the closes must fit in the 150 too.
    reply = bot.command("start " + "x" * 100 + "\u202e" * 100)

    assert reply.status == 200 and reply.in_channel
    [header] = [b["text"]["text"] for b in reply.body["blocks"] if b["type"] == "header"]
    assert len(header) <= 150 and header.startswith("INC-1: " + "x" * 100)
    assert header.count("\u202e") == header.count("\u202c")


def shown_numbers(visible: str) -> list[int]:
    # An entry's line: `#12` 9:01 AM EAT - ...
    return [int(n) for n in re.findall(r"`#(\d+)` \d", visible)]


def test_every_entry_of_a_long_timeline_can_be_reached(bot: Bot) -> None:
    # `timeline` is how people find the number to edit or delete: on a long incident the
    # later entries must be reachable too, by the command each part ends with.
    bot.command("start Long outage")
    add_entries(bot, 2_000, "the queue is still growing,\n" * 4)

    seen: list[int] = []
    typed = "timeline"
    for _ in range(40):
        reply = bot.command(typed)
        assert reply.status == 200
        seen += shown_numbers(reply.visible)
        following = re.search(r"/incident timeline (\d+)`", reply.visible)
        if following is None:
            break
        typed = f"timeline {following.group(1)}"
    assert seen == list(range(1, 2_001))

    reply = bot.command("timeline #1500")
    assert shown_numbers(reply.visible)[0] == 1500


@pytest.mark.parametrize("typed", ["timeline 2001", "timeline soon", "timeline 5 6"])
def test_a_timeline_from_an_entry_that_is_not_there_is_refused(bot: Bot, typed: str) -> None:
    bot.command("start Long outage")
    add_entries(bot, 2_000, "x")
    reply = bot.command(typed)
    assert reply.status == 200 and ":warning:" in reply.visible
    assert shown_numbers(reply.visible) == []


def test_the_uploaded_postmortem_keeps_its_title_within_250_with_directions_closed(
    bot: Bot,
) -> None:
    # The file's title is cut as the header is; the closes of what it opened must fit too.
    bot.command("start " + "x" * 200 + "\u202e" * 100)
    bot.command("close")
    bot.wait()

    [completed] = bot.fake.calls_to("files.completeUploadExternal")
    files = completed.params["files"]
    [title] = [f["title"] for f in (json.loads(files) if isinstance(files, str) else files)]
    assert len(title) <= 250 and title.startswith("Postmortem INC-1: " + "x" * 200)
    assert title.count("\u202e") == title.count("\u202c")


def test_status_shows_every_field_however_much_escaping_lengthens_them(bot: Bot) -> None:
    bot.command("start Outage")
    for field in ("impact", "cause", "resolution", "summary"):
        assert "set" in bot.command(f"{field} {field} " + "&" * 3900).text

    visible = bot.command("status").visible

    for label in ("Impact:", "Root cause:", "Resolution:", "Summary:"):
        assert label in visible, label


# What Slack reads as one piece when it shows a text: an entity, or a link or mention.
WHOLE_MARKUP = re.compile(r"&(?:amp|lt|gt);|<[^<>]*>")


def mrkdwn_texts(body: dict[str, object]) -> list[str]:
    texts: list[str] = []
    for block in body.get("blocks") or []:  # type: ignore[attr-defined]
        if block["type"] in ("section", "context"):
            elements = block.get("elements") or [block["text"]]
            texts += [e["text"] for e in elements if e["type"] == "mrkdwn"]
    return texts


def assert_no_split_markup(body: dict[str, object]) -> None:
    for text in mrkdwn_texts(body):
        left = WHOLE_MARKUP.sub("", text)
        assert not {"&", "<", ">"} & set(left), text[-60:]


@pytest.mark.parametrize("char", ["&", "<", ">", "&<"])
def test_a_section_cut_for_its_length_splits_no_entity(bot: Bot, char: str) -> None:
    # Escaped, a long title or severity is longer than a section holds; where it is cut,
    # `&amp;` must not become `&am…`, which Slack shows as those characters.
    start = bot.command("start " + char * (2000 // len(char)))
    status = bot.command("status")
    severity = bot.command("sev " + char * (4000 // len(char)))

    for reply in (start, status, severity):
        assert reply.status == 200
        assert_no_split_markup(reply.body)


def test_a_title_on_several_lines_is_one_line_in_the_header_and_the_file_title(bot: Bot) -> None:
    # A header and a file's title show one line; each typed line's direction is closed
    # where that line ends, before the next is put beside it.
    reply = bot.command("start Checkout \u202edown\n\nsecond line\r\nthird")
    bot.command("close")
    bot.wait()

    [header] = [b["text"]["text"] for b in reply.body["blocks"] if b["type"] == "header"]
    assert header == "INC-1: Checkout \u202edown\u202c second line third"
    [completed] = bot.fake.calls_to("files.completeUploadExternal")
    files = completed.params["files"]
    [title] = [f["title"] for f in (json.loads(files) if isinstance(files, str) else files)]
    assert title == "Postmortem INC-1: Checkout \u202edown\u202c second line third"


def test_a_long_title_leaves_the_lines_after_it_in_the_summary_and_the_status(bot: Bot) -> None:
    # Escaped, a title of 2,000 `&` is 10,000 characters: cut to the section's 3,000, it
    # must not take the window, the impact, the cause or who opened it with it.
    bot.command("start " + "&" * 2000)
    bot.command("impact checkout returned 503")
    bot.command("cause a bad deploy")
    status = bot.command("status").visible
    bot.command("close")
    bot.wait()

    assert "Open since" in status and f"opened by <@{ALICE}>" in status
    [posted] = bot.fake.calls_to("chat.postMessage")
    blocks = posted.params["blocks"]
    summary = json.dumps(json.loads(blocks) if isinstance(blocks, str) else blocks)
    for shown in ("*Window:*", "*Impact:* checkout returned 503", "*Root cause:* a bad deploy"):
        assert shown in summary, shown


def test_the_status_of_entries_too_long_for_its_section_says_how_many_it_leaves_out(
    bot: Bot,
) -> None:
    # Each entry escapes to about a thousand characters: a section holds two or three of the
    # latest 20, and the rest must be counted, as the entries before those 20 are.
    bot.command("start Outage")
    add_entries(bot, 3000, "&" * 300)

    reply = bot.command("status")

    timeline = next(
        block["text"]["text"]
        for block in reply.body["blocks"]
        if block["text"]["text"].startswith("*Timeline*")
    )
    shown = re.findall(r"`#(\d+)`", timeline)
    assert shown[-1] == "3000"
    said = re.search(r"(\d+) earlier entries not shown", timeline)
    assert said is not None and int(said.group(1)) == 3000 - len(shown)
    assert "`/incident timeline`" in timeline
