"""Arbitrary text into every subcommand, through the real app: an answer every time, text kept."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import select

from bot import bidi, postmortem
from bot.incidents import has_visible_text
from bot.models import Action, Incident, TimelineEntry
from bot.timeparse import SEPARATOR, looks_like_time
from tests.conftest import Bot

TEXT_SUBCOMMANDS = ["note", "impact", "cause", "resolution", "summary", "action", "close", "start"]
typed_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=300,
)


def _plain(text: str) -> bool:
    """Text that is not meant to carry a leading `<when> - `."""
    head, separator, _ = text.strip().partition(SEPARATOR)
    return not (separator and looks_like_time(head)) and not looks_like_time(text.strip())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(subcommand=st.sampled_from(TEXT_SUBCOMMANDS), text=typed_text)
def test_any_text_to_any_subcommand_is_answered_and_comes_back_unchanged(
    bot: Bot, subcommand: str, text: str
) -> None:
    channel = f"C{uuid.uuid4().hex[:10].upper()}"
    if subcommand != "start":
        assert bot.command("start Property test", channel=channel).status == 200

    reply = bot.command(f"{subcommand} {text}", channel=channel)

    assert reply.status == 200
    assert reply.text  # always a clear answer
    typed = text.strip()
    stored = _stored_text(bot, subcommand, channel)
    if not has_visible_text(typed):  # blank to the eye: refused as empty, nothing stored
        assert stored is None
        return
    if not _plain(typed) or len(typed) > 4000:
        return
    assert stored == typed
    if subcommand != "close":
        assert bot.command("close", channel=channel).status == 200
    bot.wait()
    with bot.services.sessions() as session:
        incident = session.scalars(select(Incident).where(Incident.channel_id == channel)).one()
        context = postmortem.build_context(session, incident=incident, now=bot.clock.now)
    page = postmortem.render(bot.services.templates, context, postmortem.Format.HTML)
    for line in bidi.contained(typed).splitlines():
        assert str(escape(line.strip())) in page


def _stored_text(bot: Bot, subcommand: str, channel: str) -> str | None:
    with bot.services.sessions() as session:
        incident = session.scalars(select(Incident).where(Incident.channel_id == channel)).first()
        if incident is None:
            return None
        if subcommand == "start":
            return incident.title
        if subcommand in ("note", "close"):
            return session.scalars(
                select(TimelineEntry.text).where(TimelineEntry.incident_id == incident.id)
            ).first()
        if subcommand == "action":
            return session.scalars(
                select(Action.text).where(Action.incident_id == incident.id)
            ).first()
        value: str | None = getattr(incident, subcommand)
        return value
