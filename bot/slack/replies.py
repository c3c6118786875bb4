"""What people read in Slack: Block Kit with a plain-text fallback, never able to ping a channel."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot import bidi
from bot.incidents import EntryRow, Undone, zone_abbreviation
from bot.models import Incident, TimelineEntry
from bot.slack import text as slack_text

# Slack's limit on a section's text; longer typed text is shortened in replies only.
SECTION_LIMIT = 3000
# Sections of `/incident list`: with its header and the "not shown" line, within the 50
# blocks a message may hold.
LIST_SECTIONS = 45
HEADER_LIMIT = 150
# Sections of entries in one `/incident timeline`: with its title and two contexts, within 50.
TIMELINE_SECTIONS = 45


@dataclass(frozen=True)
class Reply:
    """An answer to a command: to the caller only, or to the whole channel."""

    text: str
    blocks: Sequence[Block] = field(default_factory=tuple)
    in_channel: bool = False

    def as_ack(self) -> dict[str, Any]:
        return {
            "text": _placeholders(self.text),
            "blocks": [block.to_dict() for block in self.blocks],
            "response_type": "in_channel" if self.in_channel else "ephemeral",
        }


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A line break, and the spaces around it: a header or a file's title shows one line.
_LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")


def plain(text: str, limit: int) -> str:
    """Typed text for a one-line plain_text field of at most `limit` characters: its lines
    joined by spaces, each closing the directions it opened, then cut; what the closes
    add is cut from the text first, so that they fit too."""
    line = _LINE_BREAK.sub(" ", bidi.contained(text))
    cut = limit
    while len(fitted := bidi.contained(shorten(line, cut))) > limit:
        cut = max(1, cut - (len(fitted) - limit))
    return fitted


# The longest note text the "Meant it at …?" hint repeats in the edit it suggests.
EDIT_HINT_TEXT = 300


def quoted(text: str, limit: int = 2500) -> str:
    """Typed text for mrkdwn: escaped, mention-safe, unable to format, shortened for Slack's
    block limits."""
    return slack_text.typed(shorten(text, limit))


def local_time(moment: datetime, zone: str, *, now: datetime | None = None) -> str:
    """`1:06 AM EAT`, with the date when it is not today in that zone."""
    local = moment.astimezone(ZoneInfo(zone))
    clock = f"{local.hour % 12 or 12}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"
    label = f"{clock} {zone_abbreviation(local)}"
    if now is None or now.astimezone(ZoneInfo(zone)).date() != local.date():
        label = f"{label}, {local:%a} {local.day} {local:%b %Y}"
    return label


@dataclass(frozen=True)
class ReadIn:
    """The zone a typed time was read in: the writer's, or the fallback when Slack did not
    say theirs (`known` false)."""

    zone: str
    known: bool = True


def time_as_read(moment: datetime, zone: str, *, read_in: ReadIn | None, now: datetime) -> str:
    """`local_time` in the incident's zone, and the time as the writer's own clock read it
    when that is another (`1:05 AM EAT (2:05 PM PST where you are)`), or in the fallback
    zone when Slack did not give theirs: each side can check the time against what was meant.
    """
    shown = local_time(moment, zone, now=now)
    if read_in is None:
        return shown
    as_read = local_time(moment, read_in.zone, now=now)
    if not read_in.known:
        return f"{shown} (read as {as_read}: Slack did not say your time zone)"
    if _wall(moment, read_in.zone) == _wall(moment, zone):
        return shown
    return f"{shown} ({as_read} where you are)"


def _wall(moment: datetime, zone: str) -> datetime:
    return moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


# A placeholder in our own usage hints (`/incident note <text>`, INC-<n>). Slack reads `<` and
# `>` as the edges of a link or mention, so they are sent as entities. Mentions (<@U1>),
# channels (<#C1>) and links (<https://…|…>) never match; typed text is already escaped.
_PLACEHOLDER = re.compile(r"<([a-z]+)>")


def _placeholders(markdown: str) -> str:
    return _PLACEHOLDER.sub(r"&lt;\1&gt;", markdown)


def _section(markdown: str) -> SectionBlock:
    text = slack_text.cut(_placeholders(markdown), SECTION_LIMIT)
    return SectionBlock(text=MarkdownTextObject(text=text))


def _context(markdown: str) -> ContextBlock:
    text = slack_text.cut(_placeholders(markdown), SECTION_LIMIT)
    return ContextBlock(elements=[MarkdownTextObject(text=text)])


def simple(message: str) -> Reply:
    """A one-section reply to the caller; `message` is already mrkdwn-safe."""
    return Reply(text=message, blocks=(_section(message),))


def refusal(message: str) -> Reply:
    """A request that was not carried out; `message` is plain text and gets escaped, and the
    typed text it quotes (`bidi.quoted`) cannot format it."""
    safe = slack_text.message(message)
    return Reply(text=safe, blocks=(_section(f":warning: {safe}"),))


def started(incident: Incident, *, now: datetime) -> Reply:
    title = quoted(incident.title, 2000)
    when = local_time(incident.started_at, incident.timezone, now=now)
    opener = slack_text.user(incident.opened_by)
    headline = f":rotating_light: *{incident.reference}* opened by {opener}: {title}"
    return Reply(
        text=f"{incident.reference} opened: {title}",
        blocks=(
            HeaderBlock(
                text=PlainTextObject(
                    text=plain(f"{incident.reference}: {incident.title}", HEADER_LIMIT),
                    emoji=False,
                )
            ),
            _section(headline),
            _context(
                f"Started {when} · add to the timeline with `/incident note <text>` · "
                "finish with `/incident close`"
            ),
        ),
        in_channel=True,
    )


def already_open(incident: Incident) -> Reply:
    message = (
        f"*{incident.reference}* is already open in this channel: {quoted(incident.title, 2000)}\n"
        "Add to it with `/incident note <text>`, or `/incident close` it before starting another."
    )
    return Reply(
        text=f"{incident.reference} is already open in this channel.", blocks=(_section(message),)
    )


def no_open_incident() -> Reply:
    message = (
        "There is no open incident in this channel, so nothing was recorded.\n"
        "Start one with `/incident start <title>` (or `/incident start 1:06 AM - <title>` "
        "if it began earlier)."
    )
    return Reply(text="There is no open incident in this channel.", blocks=(_section(message),))


def noted(
    reference: str,
    timezone: str,
    *,
    occurred_at: datetime,
    text: str,
    now: datetime,
    number: int,
    unseparated: tuple[str, str] | None = None,
    read_in: ReadIn | None = None,
) -> Reply:
    """`unseparated` is a time the text starts with but did not set off with " - ", and
    the rest of the text: the reply says how to date entry `number` by it. `read_in` is the
    zone a typed time was read in (none when it was not typed)."""
    when = time_as_read(occurred_at, timezone, read_in=read_in, now=now)
    said = [f"Added to *{reference}* at {when}: {quoted(text)}"]
    if unseparated:
        time, rest = unseparated
        # The edit is given whole, to be copied, only while it fits beside the echo; a
        # shortened text in it would replace the note's with the shortened one. A backtick
        # would end the code span the edit is shown in: nothing in mrkdwn escapes it. Inside
        # the span nothing else formats, and what is copied must be what was typed.
        fits = len(rest) <= EDIT_HINT_TEXT and "`" not in rest
        text_part = slack_text.escape(rest) if fits else "&lt;the text without the time&gt;"
        code = slack_text.escape(shorten(time, 64))
        said.append(
            f"Meant it at {quoted(time, 64)}? `/incident edit {number} {code} - {text_part}`"
        )
    # The advice has a section of its own when the echo, escaped, fills one.
    return Reply(text="\n".join(said), blocks=_sections(said))


def already_noted(reference: str, number: int) -> Reply:
    """The same note request delivered again (a replay, a retry): it was recorded once."""
    return simple(
        f"This note is already on *{reference}*'s timeline, as entry `#{number}`; "
        "it was not added again."
    )


def field_set(incident: Incident, *, field_name: str, value: str, replaced: bool) -> Reply:
    note = " (the earlier one is kept in the incident's history)" if replaced else ""
    return simple(f"*{incident.reference}* {field_name} set{note}: {quoted(value)}")


def action_added(incident: Incident, *, text: str, count: int) -> Reply:
    return simple(f"Measure {count} added to *{incident.reference}*: {quoted(text)}")


def closed(incident: Incident) -> Reply:
    return simple(f"*{incident.reference}* is closed. Posting the summary and the postmortem here…")


def closed_unposted(incident: Incident) -> Reply:
    """A close of an incident whose private channel was deleted: only its members saw its
    timeline, and they no longer can, so it is posted in no other channel."""
    reference = incident.reference
    return simple(
        f"*{reference}* is closed. Its channel was private and has been deleted, so its "
        "summary and postmortem are posted nowhere else; they are kept: "
        f"`incident-bot export {reference}` prints the postmortem."
    )


def close_summary(
    incident: Incident, *, window: str, duration: str, entries: int, actions: int
) -> Reply:
    """The short summary posted to the channel when an incident closes."""
    title = quoted(incident.title, 2000)
    lines = [
        f":white_check_mark: *{incident.reference}* resolved: {title}",
        f"*Window:* {slack_text.escape(window)} ({duration})",
    ]
    if incident.impact:
        lines.append(f"*Impact:* {quoted(incident.impact, 600)}")
    if incident.cause:
        lines.append(f"*Root cause:* {quoted(incident.cause, 600)}")
    closer = slack_text.user(incident.closed_by or "")
    context = (
        f"{entries} timeline entr{'y' if entries == 1 else 'ies'} · {actions} "
        f"measure{'' if actions == 1 else 's'} · closed by {closer}"
    )
    return Reply(
        text=f"{incident.reference} resolved: {title}",
        blocks=(*_sections(lines), _context(context)),
        in_channel=True,
    )


def status(
    incident: Incident,
    *,
    entries: Sequence[EntryRow],
    total: int,
    now: datetime,
    roles: dict[str, str] | None = None,
) -> Reply:
    started_at = local_time(incident.started_at, incident.timezone, now=now)
    header = [
        f"*{incident.reference}*: {quoted(incident.title, 1000)}",
        f"Open since {started_at}, opened by {slack_text.user(incident.opened_by)}",
    ]
    blocks: list[Block] = _sections(header)
    fields = [
        ("Severity", incident.severity),
        *((role.capitalize(), name) for role, name in (roles or {}).items()),
        (
            "Detected",
            local_time(incident.detected_at, incident.timezone, now=now)
            if incident.detected_at
            else None,
        ),
        (
            "Mitigated",
            local_time(incident.mitigated_at, incident.timezone, now=now)
            if incident.mitigated_at
            else None,
        ),
        ("Impact", incident.impact),
        ("Root cause", incident.cause),
        ("Resolution", incident.resolution),
        ("Summary", incident.summary),
    ]
    known = [f"*{name}:* {quoted(value, 500)}" for name, value in fields if value]
    # Escaping can make each text five times longer (`&` is `&amp;`): a section holds what
    # fits, so that one long field cannot push the next ones past the section's end.
    if known:
        blocks.extend(_sections(known))
    if entries:
        lines = [_entry_line(e, incident.timezone, now, 200) for e in entries]
        shown = _latest_that_fit(lines, SECTION_LIMIT - 150)
        # Counted after the cut: the latest entries escaped may fill the section before all
        # of them are in.
        hidden = total - len(shown)
        if hidden:
            word = "entry" if hidden == 1 else "entries"
            shown.insert(0, f"_{hidden} earlier {word} not shown: `/incident timeline` lists all_")
        blocks.append(_section("*Timeline*\n" + "\n".join(shown)))
    else:
        blocks.append(_section("*Timeline*\nNothing noted yet: `/incident note <text>`"))
    word = "entry" if total == 1 else "entries"
    return Reply(text=f"{incident.reference}: {total} timeline {word} so far", blocks=blocks)


def _latest_that_fit(lines: list[str], limit: int) -> list[str]:
    """The last of `lines` that fit in `limit` characters, joined by line breaks; at least
    one (a line is cut to a section's size where it is shown)."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if kept and size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return kept[::-1]


def could_not_record() -> Reply:
    return simple(
        ":warning: I could not record that: the database did not answer. Nothing was saved; "
        "please try again in a moment."
    )


def too_late() -> Reply:
    return simple(
        ":warning: I could not record that: it reached me too late to answer in time. Nothing "
        "was saved; please try again."
    )


# Bolt says this (as text, not a Reply) when it cannot authorize a request: the workspace's
# token is gone, or Slack refused to check it just now (auth.test rate limited, down).
NOT_AUTHORIZED = (
    ":warning: Slack did not confirm that I am installed in this workspace, so I did nothing. "
    "Please try again in a minute; if this keeps happening, reinstall the app here."
)


def could_not_confirm() -> Reply:
    return simple(
        ":warning: I could not confirm that this was recorded: the database stopped answering "
        "while saving it. Check `/incident status` before trying again, so it is not there twice."
    )


def help_text(rows: Sequence[tuple[str, str]], *, problem: str | None = None) -> Reply:
    """Usage for every subcommand; `rows` are (usage, description) pairs from the command table."""
    lines = [f"`/incident {usage}`  {description}" for usage, description in rows]
    body = "*Incident commands*\n" + "\n".join(lines)
    blocks: list[Block] = []
    fallback = body
    if problem:
        shown = slack_text.message(problem)
        blocks.append(_section(f":warning: {shown}"))
        fallback = f"{shown}\n{body}"
    # In as many sections as it needs: the levels and roles listed are the settings' own.
    blocks.extend(_sections(["*Incident commands*", *lines]))
    blocks.append(
        _context(
            "`<when>` is optional: a time such as `1:06 AM`, `2026-11-20 01:06`, `now` or "
            "`10 min ago`, read in your Slack time zone, followed by ` - ` (`detected` and "
            "`mitigated` take it alone, no ` - `). Without it, the entry is stamped now."
        )
    )
    return Reply(text=fallback, blocks=blocks)


def _entry_line(entry: EntryRow, zone: str, now: datetime, limit: int = 300) -> str:
    author = f"{slack_text.typed(entry.author_name)}: " if entry.author_name else ""
    link = f" <{entry.permalink}|(message)>" if entry.permalink else ""
    when = local_time(entry.occurred_at, zone, now=now)
    return f"`#{entry.number}` {when} - {author}{quoted(entry.text, limit)}{link}"


def timeline_list(
    incident: Incident, *, entries: Sequence[EntryRow], now: datetime, start: int = 0
) -> Reply:
    """Every live entry with its number, from `entries[start]` on, in as many sections as
    Slack allows; a timeline too long for them ends with the command that shows the rest."""
    if not entries:
        return simple(
            f"*{incident.reference}* has no timeline entries yet: `/incident note <text>`"
        )
    lines = [_entry_line(entry, incident.timezone, now, 200) for entry in entries[start:]]
    shown = _chunk_lines(lines, most=TIMELINE_SECTIONS, limit=SECTION_LIMIT - 50)
    following = start + sum(len(part) for part in shown)  # an entry's text may hold newlines
    word = "entry" if len(entries) == 1 else "entries"
    title = f"*{incident.reference} timeline* ({len(entries)} {word})"
    if start:
        title += f", from `#{entries[start].number}` on (earlier ones: `/incident timeline`)"
    blocks: list[Block] = [_section(title)]
    blocks.extend(_section("\n".join(part)) for part in shown)
    if following < len(entries):
        rest, next_number = len(entries) - following, entries[following].number
        blocks.append(_context(f"{rest} more: `/incident timeline {next_number}`"))
    blocks.append(_context("`/incident edit <n> [<when> -] <text>` · `/incident delete <n>`"))
    return Reply(text=f"{incident.reference}: {len(entries)} timeline {word}", blocks=blocks)


def entry_edited(
    incident: Incident, *, entry: TimelineEntry, now: datetime, read_in: ReadIn | None = None
) -> Reply:
    when = time_as_read(entry.occurred_at, incident.timezone, read_in=read_in, now=now)
    return simple(
        f"Entry `#{entry.number}` of *{incident.reference}* is now {when} - {quoted(entry.text)}"
        "\n_The previous version is kept in its history._"
    )


def entry_deleted(
    incident: Incident, *, entry: TimelineEntry, undone: Sequence[Undone] = ()
) -> Reply:
    """`undone`: the severity or role holders the deletion put back. The channel was told of
    the change the entry recorded, so it is told that the change is undone."""
    said = (
        f"Entry `#{entry.number}` ({quoted(entry.text, 200)}) is off *{incident.reference}*'s "
        "timeline. The record of it, and who removed it, is kept."
    )
    if not undone:
        return simple(said)
    reference, deleted = incident.reference, f"(entry #{entry.number} deleted)"
    lines = []
    for change in undone:
        if change.severity and incident.severity:
            level = slack_text.escape(incident.severity)
            lines.append(f"{reference} is {level} again {deleted}")
        elif change.severity:
            lines.append(f"{reference} has no severity now {deleted}")
        elif change.role and change.holder is not None:
            role, holder = slack_text.escape(change.role), slack_text.user(change.holder.user_id)
            lines.append(f"{holder} is the {role} of {reference} again {deleted}")
        elif change.role:
            lines.append(f"{reference} has no {slack_text.escape(change.role)} now {deleted}")
    text = "\n".join(lines)
    return Reply(
        text=text,
        blocks=(_section(f":leftwards_arrow_with_hook: {text}\n{said}"),),
        in_channel=True,
    )


def captured(*, reference: str, number: int, created: bool) -> Reply:
    if created:
        return simple(f"Added to *{reference}*'s timeline as `#{number}`.")
    return simple(f"That message is already on *{reference}*'s timeline (`#{number}`).")


def moment_marked(
    incident: Incident,
    *,
    moment: str,
    at: datetime,
    now: datetime,
    read_in: ReadIn | None = None,
    earlier: TimelineEntry | None = None,
) -> Reply:
    """`earlier` is the mark this one replaced: two responders may both mark the moment,
    and the second moves it, which they must know."""
    when = time_as_read(at, incident.timezone, read_in=read_in, now=now)
    said = f"*{incident.reference}*: impact {moment} at {when}."
    if earlier is not None:
        was = local_time(earlier.occurred_at, incident.timezone, now=now)
        said += (
            f"\n{slack_text.user(earlier.author_id)} had marked it at {was}; that mark is "
            "off the timeline, replaced by this one."
        )
    return simple(said)


def severity_set(incident: Incident, *, level: str, previous: str | None, by: str) -> Reply:
    change = f"from {slack_text.escape(previous)} " if previous else ""
    message = (
        f":rotating_light: *{incident.reference}* severity changed {change}to "
        f"*{slack_text.escape(level)}* by {slack_text.user(by)}"
    )
    return Reply(
        text=f"{incident.reference} severity: {level}", blocks=(_section(message),), in_channel=True
    )


def role_assigned(incident: Incident, *, role: str, user_id: str, by: str) -> Reply:
    message = (
        f":bust_in_silhouette: {slack_text.user(user_id)} is now the {slack_text.escape(role)} "
        f"of *{incident.reference}* (set by {slack_text.user(by)})"
    )
    return Reply(
        text=f"{incident.reference}: new {role}", blocks=(_section(message),), in_channel=True
    )


def role_taken_away(incident: Incident, *, role: str, user_id: str, by: str) -> Reply:
    message = (
        f":bust_in_silhouette: {slack_text.user(user_id)} is no longer the "
        f"{slack_text.escape(role)} of *{incident.reference}*; nobody holds the role "
        f"(set by {slack_text.user(by)})"
    )
    return Reply(
        text=f"{incident.reference}: no {role}", blocks=(_section(message),), in_channel=True
    )


def reopened(incident: Incident, *, reason: str, by: str) -> Reply:
    message = (
        f":arrows_counterclockwise: *{incident.reference}* reopened by {slack_text.user(by)}: "
        f"{quoted(reason, 1000)}"
    )
    return Reply(
        text=f"{incident.reference} reopened", blocks=(_section(message),), in_channel=True
    )


def incident_list(found: Sequence[Incident], *, now: datetime) -> Reply:
    if not found:
        return simple("No incidents are open in this workspace.")
    lines = [
        f"*{i.reference}* {_where(i)} "
        f"{'[' + slack_text.escape(i.severity) + '] ' if i.severity else ''}"
        f"{quoted(i.title, 150)} · since {local_time(i.started_at, i.timezone, now=now)}"
        for i in found
    ]
    chunks = _chunk_lines(lines, most=LIST_SECTIONS)
    hidden = len(lines) - sum(len(chunk) for chunk in chunks)
    blocks = [_section(f"*Open incidents ({len(found)})*")]
    blocks += [_section("\n".join(chunk)) for chunk in chunks]
    if hidden:
        blocks.append(_section(f"…and {hidden} older, not shown."))
    return Reply(
        text=f"{len(found)} open incident{'' if len(found) == 1 else 's'}", blocks=tuple(blocks)
    )


def _where(incident: Incident) -> str:
    """The incident's channel in a list: a link, or how to close it once Slack deleted it
    (a link to a deleted channel shows only as a private one would)."""
    if incident.channel_deleted is None:
        return slack_text.channel(incident.channel_id)
    return f"(its channel was deleted: `/incident close {incident.reference}` from here)"


def _sections(lines: Sequence[str]) -> list[Block]:
    """`lines` in as many sections as they need: a line escaping made longer than a section
    holds is cut at its end, and the lines after it start the next one."""
    return [_section("\n".join(part)) for part in _chunk_lines(lines, limit=SECTION_LIMIT)]


def _chunk_lines(
    lines: Sequence[str], *, most: int | None = None, limit: int = SECTION_LIMIT - 20
) -> list[list[str]]:
    """`lines` in order, as many as fit in `most` (or any number of) sections of at most
    `limit` characters each."""
    chunks: list[list[str]] = [[]]
    size = 0
    for line in lines:
        if chunks[-1] and size + len(line) + 1 > limit:
            if len(chunks) == most:
                break
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line) + 1
    return chunks


def closed_elsewhere(reference: str) -> Reply:
    message = (
        f"*{reference}* in this channel is closed, so nothing was changed. "
        "Reopen it with `/incident reopen <reason>`, or start a new one with "
        "`/incident start <title>`."
    )
    return Reply(text=f"{reference} is closed.", blocks=(_section(message),))


def nothing_to_reopen() -> Reply:
    message = (
        "There is no incident to reopen in this channel: none was ever run here, so nothing "
        "was recorded.\nStart one with `/incident start <title>`; a closed incident is "
        "reopened in its own channel."
    )
    return Reply(
        text="There is no incident to reopen in this channel.", blocks=(_section(message),)
    )
