"""Direction controls in typed text: closed where the text ends, on each of its lines."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import bidi

LRE, RLE, PDF, LRO, RLO = "\u202a", "\u202b", "\u202c", "\u202d", "\u202e"
LRI, RLI, FSI, PDI = "\u2066", "\u2067", "\u2068", "\u2069"


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("plain text", "plain text"),
        ("الخادم متوقف", "الخادم متوقف"),  # right-to-left as typed: no controls
        (f"{RLO}evil", f"{RLO}evil{PDF}"),
        (f"{LRE}a{RLE}b", f"{LRE}a{RLE}b{PDF}{PDF}"),
        (f"{RLI}a{RLO}b", f"{RLI}a{RLO}b{PDF}{PDI}"),
        (f"{FSI}a{LRI}b{PDI}c", f"{FSI}a{LRI}b{PDI}c{PDI}"),
        (f"{RLE}שלום{PDF} and {RLI}مرحبا{PDI}", f"{RLE}שלום{PDF} and {RLI}مرحبا{PDI}"),
        # A pop of nothing this text opened would end the direction around it.
        (f"a{PDF}b{PDI}c", "abc"),
        (f"{RLO}a{PDF}{PDF}b", f"{RLO}a{PDF}b"),
        (f"{RLI}a{PDF}b{PDI}", f"{RLI}ab{PDI}"),  # a PDF cannot end what is outside an isolate
        (f"{RLI}a{RLO}b{PDI}c", f"{RLI}a{RLO}b{PDI}c"),  # a PDI ends the embeddings inside it
        # Each line is closed on its own: a line ending ends every direction.
        (f"{RLO}one\r\ntwo{PDF}\n{RLI}three", f"{RLO}one{PDF}\r\ntwo\n{RLI}three{PDI}"),
    ],
)
def test_contained(typed: str, shown: str) -> None:
    assert bidi.contained(typed) == shown


CONTROLS = [LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI]
TYPED = st.lists(st.sampled_from([*CONTROLS, "a", "ש", " ", "\n", "\r"]) | st.text(max_size=2)).map(
    "".join
)


def _open_at_end(line: str) -> list[str]:
    """What is still open at the end of a line, as UAX #9 (X1 to X8) matches the controls."""
    stack: list[str] = []
    for char in line:
        if char in (LRE, RLE, LRO, RLO, LRI, RLI, FSI):
            stack.append(char)
        elif char == PDF and stack and stack[-1] not in (LRI, RLI, FSI):
            stack.pop()
        elif char == PDI and any(c in (LRI, RLI, FSI) for c in stack):
            while stack.pop() not in (LRI, RLI, FSI):
                pass
    return stack


@given(TYPED)
def test_no_line_of_it_leaves_a_direction_open(typed: str) -> None:
    for line in re.split(r"\r\n|\r|\n", bidi.contained(typed)):
        assert _open_at_end(line) == []


@given(TYPED)
def test_it_only_adds_closes_at_line_ends_and_leaves_out_pops(typed: str) -> None:
    shown = bidi.contained(typed)
    assert bidi.contained(shown) == shown  # what is closed stays as it is
    visible = re.sub("[\u202a-\u202e\u2066-\u2069]", "", typed)
    assert re.sub("[\u202a-\u202e\u2066-\u2069]", "", shown) == visible
    openers = re.sub(f"[^{LRE}{RLE}{LRO}{RLO}{LRI}{RLI}{FSI}]", "", typed)
    assert re.sub(f"[^{LRE}{RLE}{LRO}{RLO}{LRI}{RLI}{FSI}]", "", shown) == openers
