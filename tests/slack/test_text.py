"""Slack's text markup: decoding what a slash command brings, escaping what the bot posts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import bidi
from bot.slack import text as slack_text

ZWSP = "\u200b"


@pytest.mark.parametrize(
    ("arrived", "typed"),
    [
        ("ping <@U0ALICE001>", "ping @U0ALICE001"),
        ("ping <@U0ALICE001|ann>", "ping @ann"),
        ("ping <@W0ALICE001|ann>", "ping @ann"),
        ("see <#C0GENERAL1|general>", "see #general"),
        ("see <#C0GENERAL1>", "see #C0GENERAL1"),
        ("<!channel> checkout is down", "@channel checkout is down"),
        ("<!channel|@channel> checkout is down", "@channel checkout is down"),
        ("<!here> look", "@here look"),
        ("<!here|here> look", "@here look"),
        ("<!everyone> look", "@everyone look"),
        ("paging <!subteam^S0ONCALL1|@oncall>", "paging @oncall"),
        ("paging <!subteam^S0ONCALL1|oncall>", "paging @oncall"),
        # A group Slack sent without its handle: a word that names no group, never "@subteam".
        ("paging <!subteam^S0ONCALL1>", "paging @group"),
        ("dashboard <https://x.example/d|label>", "dashboard label (https://x.example/d)"),
        ("dashboard <https://x.example/d>", "dashboard https://x.example/d"),
        ("dashboard <https://x.example/d|https://x.example/d>", "dashboard https://x.example/d"),
        # Slack links what looks like a domain or an address; the person typed only that.
        ("see <http://status.example.com|status.example.com>", "see status.example.com"),
        ("see <https://status.example.com|status.example.com>", "see status.example.com"),
        ("mail <mailto:ops@example.com|ops@example.com>", "mail ops@example.com"),
        ("<!date^1392734382^{date}|Feb 18> deploy", "Feb 18 deploy"),
        ("<!date^1700000000^{date_short}^https://x.example|Nov 14> deploy", "Nov 14 deploy"),
        # Slack asks for the fallback text; one sent without it is the moment, not "@date".
        ("<!date^1700000000^{date_short}> deploy", "2023-11-14 22:13 UTC deploy"),
        ("a &amp; b", "a & b"),
        ("1 &lt; 2 &gt; 0", "1 < 2 > 0"),
        ("&lt;script&gt;alert(1)&lt;/script&gt;", "<script>alert(1)</script>"),
        # A person who typed the characters "<!channel>" (not a mention): Slack escapes them.
        ("&lt;!channel&gt;", "<!channel>"),
        # A person who typed "&lt;!channel&gt;" itself: Slack escapes the ampersands too.
        ("&amp;lt;!channel&amp;gt;", "&lt;!channel&gt;"),
        ("&amp;amp;", "&amp;"),
        ("no markup at all", "no markup at all"),
        ("", ""),
    ],
)
def test_decode_gives_what_the_person_typed(arrived: str, typed: str) -> None:
    assert slack_text.decode(arrived) == typed


def test_decode_handles_several_pieces_of_markup_in_one_text() -> None:
    arrived = "<!here> <@U1|ann> &amp; <@U2|bob>: <https://x.example|runbook> &lt;3"
    assert slack_text.decode(arrived) == "@here @ann & @bob: runbook (https://x.example) <3"


def test_decode_keeps_names_looked_up_as_slack_gave_them() -> None:
    """Names from users.info and conversations.info are not escaped: only the text is."""
    arrived = "&lt;b&gt; <@U0ANN00001> in <#C0WARROOM1> &amp;amp;"
    names = slack_text.Names(people={"U0ANN00001": "a &lt; b"}, channels={"C0WARROOM1": "r&amp;d"})
    decoded = slack_text.decode(arrived, names=names)
    assert decoded == "<b> @a &lt; b in #r&amp;d &amp;"


@pytest.mark.parametrize(
    "stored",
    [
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<!subteam^S0ONCALL1|@oncall>",
        "<@U0ALICE001>",
        "@channel",
        "@here",
        "@everyone",
        "@Channel look",
        "@HERE!",
        "hey @here, look",
        "mail me@everyone.example",
        "&lt;!channel&gt;",
        "<<!channel>>",
        "<!channel",
    ],
)
def test_escape_never_leaves_a_pinging_form(stored: str) -> None:
    escaped = slack_text.escape(stored)
    assert_cannot_ping(escaped)


def assert_cannot_ping(escaped: str) -> None:
    assert "<" not in escaped and ">" not in escaped, escaped
    assert re.search(r"@(channel|here|everyone)\b", escaped, re.IGNORECASE) is None, escaped


@pytest.mark.parametrize(
    ("stored", "escaped"),
    [
        ("@channel", f"@{ZWSP}channel"),
        ("@here now", f"@{ZWSP}here now"),
        ("@Everyone", f"@{ZWSP}Everyone"),
        ("<!here>", "&lt;!here&gt;"),
        ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
        ("&lt;", "&amp;lt;"),
        ("@channelling is a word", "@channelling is a word"),
        ("@hereford", "@hereford"),
        ("plain text", "plain text"),
    ],
)
def test_escape_exactly(stored: str, escaped: str) -> None:
    assert slack_text.escape(stored) == escaped


PIECES = st.sampled_from(
    ["<", ">", "&", "!", "@", "channel", "here", "everyone", "Here", "<!", "@\u200b", "amp;"]
    + ["lt;", "gt;", "|", "^", "subteam", " ", "\n", "x", "\u202e", "\u202c", "\u2067", "\u2069"]
)
TEXT = st.one_of(st.text(), st.lists(PIECES | st.text(max_size=3)).map("".join))


@given(TEXT)
def test_escape_never_pings_whatever_the_text(stored: str) -> None:
    assert_cannot_ping(slack_text.escape(stored))


@given(TEXT)
def test_slack_shows_an_escaped_text_as_it_was_stored(stored: str) -> None:
    # Slack unescapes &amp; &lt; &gt; for display; the zero-width spaces are invisible; the
    # direction controls are those of the stored text, closed where it ends.
    shown = slack_text.decode(slack_text.escape(stored))
    assert shown.replace(ZWSP, "") == bidi.contained(stored).replace(ZWSP, "")


@given(TEXT)
def test_decode_of_plain_escaped_text_is_the_text(typed: str) -> None:
    # What Slack sends for text with no mentions or links: only the three characters escaped.
    arrived = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert slack_text.decode(arrived) == typed


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [("U0ALICE001", "<@U0ALICE001>"), ("W0ALICE001", "<@W0ALICE001>")],
)
def test_user_mentions_a_real_user_id(user_id: str, expected: str) -> None:
    assert slack_text.user(user_id) == expected


@pytest.mark.parametrize("user_id", ["!channel", "here", "U1>x<!channel", "u0lowercase", "@here"])
def test_user_escapes_anything_else(user_id: str) -> None:
    assert_cannot_ping(slack_text.user(user_id))
    assert not slack_text.user(user_id).startswith("<@")


@pytest.mark.parametrize(
    ("channel_id", "expected"),
    [
        ("C0GENERAL1", "<#C0GENERAL1>"),
        ("G0PRIVATE1", "<#G0PRIVATE1>"),
        ("D0DIRECT01", "<#D0DIRECT01>"),
    ],
)
def test_channel_links_a_real_channel_id(channel_id: str, expected: str) -> None:
    assert slack_text.channel(channel_id) == expected


@pytest.mark.parametrize("channel_id", ["!channel", "C1>x<!here", "general"])
def test_channel_escapes_anything_else(channel_id: str) -> None:
    assert_cannot_ping(slack_text.channel(channel_id))
    assert not slack_text.channel(channel_id).startswith("<#")


WHOLE_MARKUP = re.compile(r"&(?:amp|lt|gt);|<[^<>]*>")


@given(
    st.lists(
        st.sampled_from(["<@U0ALICE001>", "<#C0GENERAL1>", "<https://x.example/a|(message)>"])
        | TEXT.map(slack_text.escape)
    ).map(" ".join),
    st.integers(min_value=1, max_value=80),
)
def test_a_cut_splits_no_markup_and_closes_what_it_keeps_open(markdown: str, limit: int) -> None:
    cut = slack_text.cut(markdown, limit)

    assert len(cut) <= limit
    assert not {"&", "<", ">"} & set(WHOLE_MARKUP.sub("", cut)), cut
    assert bidi.contained(cut) == cut
    if len(markdown) <= limit:
        assert cut == markdown
    else:
        assert cut.endswith("…") or cut.rstrip(bidi.POP_EMBEDDING + bidi.POP_ISOLATE)[-1] == "…"


@pytest.mark.parametrize(
    ("markdown", "limit", "cut"),
    [
        ("a &amp; b", 6, "a …"),
        ("opened by <@U0ALICE001>", 20, "opened by …"),
        ("see <https://x.example/a|(message)> now", 30, "see …"),
        ("x\u202eabcdef", 6, "x\u202eab…\u202c"),
    ],
)
def test_a_cut_backs_off_to_the_start_of_a_split_piece(markdown: str, limit: int, cut: str) -> None:
    assert slack_text.cut(markdown, limit) == cut


@given(TEXT | st.text(alphabet="*_~`> \nab"))
def test_typed_text_shows_as_stored_and_never_pings(stored: str) -> None:
    shown = slack_text.typed(stored)
    assert_cannot_ping(shown)
    # Only zero-width spaces and backticks' look-alike (U+02CB) stand between it and the text.
    restored = slack_text.decode(shown).replace(ZWSP, "").replace("\u02cb", "`")
    assert restored == bidi.contained(stored).replace(ZWSP, "").replace("\u02cb", "`")
    assert "`" not in shown
