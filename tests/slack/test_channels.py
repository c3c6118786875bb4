"""An incident as its Slack channel changes: a new id, archived, unarchived, deleted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.demo import signed_event
from bot.models import Incident
from tests.conftest import ALICE, BOB, SECRET, TEAM, Bot, Reply
from tests.slack.test_capture import PIN_TS, entries, reaction

PRIVATE = "G0PRIV0001"
SHARED = "C0SHARED01"  # the same channel once shared with Slack Connect


def channel_event(bot: Bot, event: dict[str, Any], *, team: str = TEAM) -> Reply:
    body, headers = signed_event(SECRET, event, team_id=team)
    return bot.dispatch(body, headers)


def id_changed(bot: Bot, old: str, new: str, *, team: str = TEAM) -> Reply:
    event = {
        "type": "channel_id_changed",
        "old_channel_id": old,
        "new_channel_id": new,
        "event_ts": f"{bot.clock.now.timestamp():.6f}",
    }
    return channel_event(bot, event, team=team)


def channels_of(bot: Bot) -> list[tuple[str, str]]:
    with bot.services.sessions() as session:
        return [
            (incident.reference, incident.channel_id)
            for incident in session.scalars(select(Incident).order_by(Incident.id))
        ]


def test_an_incident_follows_its_channel_to_its_new_id(bot: Bot) -> None:
    # Sharing a private channel with Slack Connect gives it a new id for good; Slack says so
    # once, and from then on every command and event from the channel carries the new one.
    bot.command("start First", channel=PRIVATE)
    bot.command("close", channel=PRIVATE)
    bot.command("start Second", channel=PRIVATE)
    ts = bot.fake.post(PRIVATE, "rolled back", user=ALICE, ts=PIN_TS)
    reaction(bot, ts, channel=PRIVATE)
    bot.command("start Elsewhere", channel=PRIVATE, team="T0OTHER001")
    bot.wait()

    assert id_changed(bot, PRIVATE, SHARED).status == 200

    assert channels_of(bot) == [("INC-1", SHARED), ("INC-2", SHARED), ("INC-1", PRIVATE)]
    reply = bot.command("note still rolling back", channel=SHARED)
    assert "INC-2" in reply.text
    # The pinned message is the same message under the channel's new id: unpinning it there
    # takes it off the timeline.
    bot.fake.messages[(SHARED, ts)] = bot.fake.messages[(PRIVATE, ts)]
    reaction(bot, ts, channel=SHARED, user=BOB, added=False)
    bot.wait()
    assert [e.text for e in entries(bot)] == ["still rolling back"]
