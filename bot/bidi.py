"""Unicode direction controls in typed text, kept from reaching past the text that holds them.

An embedding or override (U+202A, U+202B, U+202D, U+202E) lasts until a U+202C POP
DIRECTIONAL FORMATTING, an isolate (U+2066 to U+2068) until a U+2069 POP DIRECTIONAL ISOLATE,
and either until the end of the line. Left open in a title or a note, one reorders the rest
of the line it is shown on: our words, the next field, a link. Text is stored as typed; what
shows it closes what it opened (UAX #9, sections 3.3.2 and 6.3).
"""

from __future__ import annotations

import re

_EMBEDDINGS = frozenset("\u202a\u202b\u202d\u202e")
_ISOLATES = frozenset("\u2066\u2067\u2068")
POP_EMBEDDING = "\u202c"
POP_ISOLATE = "\u2069"
_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# The line endings every output keeps (Markdown, HTML via <br>, Slack); each line is closed
# on its own, so it stays closed wherever an output splits or joins lines.
_LINE_END = re.compile(r"(\r\n|\r|\n)")
# Typed text quoted in a message of ours is held between these two noncharacters (Unicode
# keeps them for a program's own use), so that what shows the message can tell the person's
# words from ours: in Slack, a `*` or a backtick typed must not format our text around it.
_TYPED_OPEN, _TYPED_CLOSE = "\ufdd0", "\ufdd1"
_TYPED = re.compile(f"{_TYPED_OPEN}([^{_TYPED_OPEN}{_TYPED_CLOSE}]*){_TYPED_CLOSE}")


def contained(text: str) -> str:
    """`text` with, on each line, what it opens closed at its end and any pop of a
    direction it did not open left out (such a pop would end the direction around it).

    Arabic or Hebrew typed as it is needs no controls and comes back unchanged, as do
    controls that are already balanced.
    """
    if not _CONTROLS.search(text):
        return text
    parts = _LINE_END.split(text)
    parts[::2] = [_contained_line(line) for line in parts[::2]]
    return "".join(parts)


def quoted(text: str) -> str:
    """Typed text quoted in the middle of a sentence of ours: “text”, its direction closed,
    and marked as typed for `typed_parts` (`unmarked` takes the marks out)."""
    return f"“{marked(text)}”"


def marked(text: str) -> str:
    """Typed text in a sentence of ours without quotes (a person's name): its direction
    closed, and marked as typed as `quoted` marks it."""
    return f"{_TYPED_OPEN}{contained(unmarked(text))}{_TYPED_CLOSE}"


def unmarked(message: str) -> str:
    """`message` without the marks `quoted` puts around typed text."""
    return message.replace(_TYPED_OPEN, "").replace(_TYPED_CLOSE, "")


def typed_parts(message: str) -> list[tuple[str, bool]]:
    """`message` in order as (part, typed) pairs: our words, and the text `quoted` marked."""
    parts: list[tuple[str, bool]] = []
    for number, part in enumerate(_TYPED.split(message)):
        if part:
            parts.append((unmarked(part), number % 2 == 1))
    return parts


class QuotingError(Exception):
    """An error whose message may quote typed text (`quoted`): `str()` is the message
    without the marks (logs, the CLI), and `message` keeps them, for what shows it to the
    person (replies.refusal) to keep the typed text from formatting."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return unmarked(self.message)


def _contained_line(line: str) -> str:
    closers: list[str] = []  # the pop that ends each direction still open, innermost last
    kept: list[str] = []
    for char in line:
        if char in _EMBEDDINGS:
            closers.append(POP_EMBEDDING)
        elif char in _ISOLATES:
            closers.append(POP_ISOLATE)
        elif char == POP_EMBEDDING:
            # It ends the innermost embedding; inside an isolate of its own it ends nothing.
            if not closers or closers[-1] != POP_EMBEDDING:
                continue
            closers.pop()
        elif char == POP_ISOLATE:
            if POP_ISOLATE not in closers:
                continue
            while closers.pop() != POP_ISOLATE:  # it ends the embeddings inside it too
                pass
        kept.append(char)
    return "".join(kept) + "".join(reversed(closers))
