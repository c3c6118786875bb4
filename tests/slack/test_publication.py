"""A closed incident's postmortem is pending until it has reached Slack (bot/slack/publish.py)."""

from __future__ import annotations

from sqlalchemy import select

from bot import incidents
from bot.models import Incident, Publication
from tests.conftest import ALICE, CHANNEL, Bot

OTHER_CHANNEL = "C0OTHER001"


def close_without_publishing(bot: Bot, *, channel: str = CHANNEL) -> int:
    """Close the channel's open incident through the use case and commit, as a worker does
    before it acknowledges: no follow-up runs (as if the worker died right after)."""
    with bot.services.sessions() as session:
        incident = session.scalars(
            select(Incident).where(Incident.channel_id == CHANNEL, Incident.status == "open")
        ).one()
        incidents.close_incident(
            session,
            incident=incident,
            closed_at=bot.clock(),
            user_id=ALICE,
            text="fixed",
            now=bot.clock(),
            publish_to=incidents.PublishTo(channel_id=channel),
        )
        session.commit()
        return incident.id


def publication(bot: Bot, incident_id: int) -> Publication:
    with bot.services.sessions() as session:
        found = session.get(Publication, incident_id)
        assert found is not None
        session.expunge(found)
        return found


def test_a_close_records_its_publication_pending_and_a_reopen_withdraws_it(bot: Bot) -> None:
    bot.command("start Checkout is failing")
    incident_id = close_without_publishing(bot, channel=OTHER_CHANNEL)

    pending = publication(bot, incident_id)
    assert pending.pending and pending.channel_id == OTHER_CHANNEL
    assert pending.claim is not None  # the closing worker's follow-up holds it
    assert pending.claimed_until == bot.clock() + incidents.PUBLICATION_LEASE
    assert pending.attempts == 1 and not pending.summary_posted

    assert "reopened" in bot.command("reopen not fixed after all").text.lower()
    withdrawn = publication(bot, incident_id)
    assert not withdrawn.pending and withdrawn.claim is None

    bot.clock.advance(minutes=10)
    close_without_publishing(bot)
    again = publication(bot, incident_id)
    assert again.pending and again.channel_id == CHANNEL
    assert again.claim not in (None, pending.claim)
    assert again.claimed_until == bot.clock() + incidents.PUBLICATION_LEASE
