"""Slack's text markup: what arrives (`&lt;`, `<@U1|ann>`) and what may safely go back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot import bidi

# <@U123>, <@U123|ann>, <#C123|general>, <!here>, <!subteam^S1|@oncall>, <https://x|label>
_MARKUP = re.compile(r"<([^<>]*)>")
_BROADCAST = re.compile(r"@(channel|here|everyone)\b", re.IGNORECASE)
_ZERO_WIDTH_SPACE = "\u200b"
# A mention without its name: <@U0123ABCD> or <#C0123ABCD>, or with an empty one (<#C0123ABCD|>)
# in a command's text.
_UNNAMED = re.compile(r"<([@#])([UWCG][A-Z0-9]+)\|?>")
_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]+")
# What Slack reads as one piece of markup: an entity, or a link or mention (<@U1>,
# <#C1|general>, <https://x|label>). Cut inside one, its pieces would show as typed.
_PIECE = re.compile(r"&(?:amp|lt|gt);|<[^<>]*>")
# Slack's mrkdwn has no escape character. `*bold*`, `_italic_` and `~strike~` open and close
# only at a word's edge, so a marker between two letters or digits (`db_primary_1`) is plain;
# any other gets a zero-width space on each side. Then it can neither open nor close
# formatting, whether Slack takes that space for a space or for part of a word.
_MARKER = re.compile(r"(?<![^\W_])[*_~]|[*_~](?![^\W_])")
# A backtick opens code (and ``` a block that runs to the end of the message) even inside a
# word, so no space is sure to stop it: typed text shows U+02CB MODIFIER LETTER GRAVE ACCENT.
_BACKTICK = str.maketrans("`", "\u02cb")
# `>` (sent as `&gt;`) at the start of a line quotes it, and `>>>` all that follows.
_QUOTE = re.compile(r"^([^\S\n]*)&gt;", re.MULTILINE)


@dataclass(frozen=True)
class Names:
    """Names Slack gave for ids a text mentions without them, by id (no `@` or `#`)."""

    people: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Unnamed:
    """The ids a text mentions without their names, in order, once each."""

    people: list[str]
    channels: list[str]


def decode(text: str, *, names: Names | None = None) -> str:
    """Turn Slack's escaped command text into what the person typed.

    Mentions become their visible form (`@ann`, `#general`, `@here`), links their URL or
    label, and the three escaped characters (`&amp;`, `&lt;`, `&gt;`) themselves. A message's
    text names no one (`<@U123>`, where a command's has `<@U123|ann>`), nor some channels
    (`<#C123>`): `names` gives those Slack shows (`unnamed` lists the ids to look up); the
    others keep their ids.
    """
    named = names or Names()
    # Only what Slack escaped is unescaped: the text around the markup and the markup's own
    # targets and labels. A name looked up (users.info, conversations.info) is not escaped,
    # so a display name "a &lt; b" stays as it is.
    pieces: list[str] = []
    end = 0
    for match in _MARKUP.finditer(text):
        pieces.append(_unescape(text[end : match.start()]))
        pieces.append(_visible_form(match, named))
        end = match.end()
    pieces.append(_unescape(text[end:]))
    return "".join(pieces)


def unnamed(text: str) -> Unnamed:
    """The people and channels `text` mentions without their names, to look up."""
    people: dict[str, None] = {}
    channels: dict[str, None] = {}
    if "<" in text:  # the usual note mentions no one: no more than this scan
        for kind, found in _UNNAMED.findall(text):
            if kind == "@" and _USER_ID.fullmatch(found):
                people[found] = None
            elif kind == "#" and _CHANNEL_ID.fullmatch(found):
                channels[found] = None
    return Unnamed(people=list(people), channels=list(channels))


def _visible_form(match: re.Match[str], names: Names) -> str:
    target, _, label = (_unescape(part) for part in match.group(1).partition("|"))
    if target.startswith("@"):
        name = label or names.people.get(target[1:])
        return f"@{name.removeprefix('@')}" if name else target
    if target.startswith("#"):
        name = label or names.channels.get(target[1:])
        return f"#{name.removeprefix('#')}" if name else target
    if target.startswith("!"):
        keyword, *details = target[1:].split("^")
        if keyword in ("channel", "here", "everyone"):
            return f"@{keyword}"
        if keyword == "subteam":
            # A user group's handle, when Slack gave it; else a neutral word that names no
            # group (its handle would need usergroups:read).
            return f"@{label.removeprefix('@')}" if label else "@group"
        if label:
            return label
        if keyword == "date":
            return _date(details)
        return f"@{keyword}"
    if label and label not in _autolinked_forms(target):
        return f"{label} ({target})"
    return label or target


def _date(details: list[str]) -> str:
    """`<!date^1700000000^{date_short}>` sent without its fallback text: the moment in UTC."""
    try:
        moment = datetime.fromtimestamp(int(details[0]), UTC)
    except (IndexError, ValueError, OverflowError, OSError):
        return "(a date)"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _autolinked_forms(target: str) -> set[str]:
    # Slack links what looks like an address or a domain as <http://x.example|x.example>
    # or <mailto:a@x.example|a@x.example>: the label is then exactly what was typed.
    forms = {target}
    for scheme in ("http://", "https://", "mailto:"):
        if target.startswith(scheme):
            forms.add(target.removeprefix(scheme))
    return forms


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Make stored text safe to post: no markup, `@channel` and friends cannot ping, and
    a direction control it opens cannot reorder what follows it."""
    escaped = bidi.contained(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub(lambda m: f"@{_ZERO_WIDTH_SPACE}{m.group(1)}", escaped)


def typed(text: str) -> str:
    """Stored text to show among the bot's own mrkdwn: escaped as `escape` does, and unable
    to format itself or what is around it (bold, italics, strikes, code, quotes)."""
    inert = _MARKER.sub(
        lambda m: f"{_ZERO_WIDTH_SPACE}{m.group()}{_ZERO_WIDTH_SPACE}",
        escape(text).translate(_BACKTICK),
    )
    return _QUOTE.sub(rf"\1{_ZERO_WIDTH_SPACE}&gt;", inert)


def message(text: str) -> str:
    """A message of ours that may quote typed text (`bidi.quoted`), for mrkdwn: our words
    escaped, so that our code spans and bold still show, and each quoted text as `typed`."""
    return "".join(
        typed(part) if is_typed else escape(part) for part, is_typed in bidi.typed_parts(text)
    )


def cut(markdown: str, limit: int) -> str:
    """`markdown` in at most `limit` characters. A longer one is cut where no entity, link
    or mention is split, and ends with `…` and the closes of the directions it opened."""
    if len(markdown) <= limit:
        return markdown
    end = limit - 1
    while True:
        for piece in _PIECE.finditer(markdown):
            if piece.start() >= end:
                break
            if piece.end() > end:
                end = piece.start()
                break
        fitted = bidi.contained(markdown[:end] + "…")
        if len(fitted) <= limit:
            return fitted
        end -= len(fitted) - limit


def user(user_id: str) -> str:
    """A mention of one person, which Slack shows as their name."""
    return f"<@{user_id}>" if re.fullmatch(r"[UW][A-Z0-9]+", user_id) else escape(user_id)


def channel(channel_id: str) -> str:
    return f"<#{channel_id}>" if re.fullmatch(r"[CGD][A-Z0-9]+", channel_id) else escape(channel_id)
